"""Category-wise fine-tuning (mlrpl_jax/category_finetune.py, mlrpl_jax/tools/category_finetune.py,
docs/methods/cft.md): the holdout AP against scikit-learn, the fit on a linear problem, and the
command on a finished tiny run (results written, checkpoint untouched, errors)."""

import hashlib
import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from tiny_config import tiny_digit_config

from mlrpl_jax import category_finetune as cft
from mlrpl_jax.core import train
from mlrpl_jax.tools import category_finetune as command

# float32 AP: sums of at most N = 400 precisions each within a few eps of the exact value.
AP_ATOL = 400 * float(np.finfo(np.float32).eps)


def linear_problem(seed=0, num_rows=400, num_classes=3, dim=4):
    """Per-class inputs o (N, C, D), partial labels of a noisy linear rule (half unknown, class
    2 without any known positive) and a poor starting head."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((num_rows, num_classes, dim)).astype(np.float32)
    true_kernel = rng.standard_normal((num_classes, dim))
    noise = 0.5 * rng.standard_normal((num_rows, num_classes))
    score = np.einsum("ncd,cd->nc", inputs, true_kernel) + noise
    labels = np.where(score > 0.5, 1.0, -1.0)
    labels[rng.random(labels.shape) < 0.5] = 0.0
    labels[labels[:, 2] > 0, 2] = 0.0
    kernel = (-0.3 * true_kernel + 0.3 * rng.standard_normal(true_kernel.shape)).astype(np.float32)
    return inputs, labels.astype(np.float32), kernel, np.zeros(num_classes, np.float32)


def test_known_label_ap_is_sklearns_ap_on_the_known_entries():
    inputs, labels, kernel, bias = linear_problem()
    logits = np.asarray(cft.per_class_logits(kernel, bias, jnp.asarray(inputs)))
    ours = np.asarray(cft.known_label_ap(jnp.asarray(logits), jnp.asarray(labels)))
    for c in range(2):
        known = labels[:, c] != 0
        expected = average_precision_score(labels[known, c] > 0, logits[known, c])
        assert ours[c] == pytest.approx(expected, abs=AP_ATOL)
    assert np.isnan(ours[2])  # no known positive


def test_fit_keeps_the_best_holdout_head_and_lowers_the_known_label_loss():
    inputs, labels, kernel, bias = linear_problem()
    held = cft.holdout_rows(len(labels), 0.25, seed=0)
    options = cft.FitOptions(steps=400, patience=100, learning_rate=0.05)
    fit = cft.fit_heads(
        kernel, bias, inputs[~held], labels[~held], inputs[held], labels[held], options
    )
    np.testing.assert_array_equal(fit.fitted, [True, True, False])
    # Class 2 cannot be fitted: its head is the original, bit for bit.
    np.testing.assert_array_equal(fit.kernel[2], kernel[2])
    assert fit.bias[2] == bias[2] and fit.best_step[2] == 0 and np.isnan(fit.holdout_ap_after[2])
    # The reported holdout APs are those of the returned and the original heads (sklearn).
    for head, reported in ((fit, fit.holdout_ap_after), (None, fit.holdout_ap_before)):
        k, b = (kernel, bias) if head is None else (head.kernel, head.bias)
        logits = np.einsum("ncd,cd->nc", inputs[held], k) + b
        for c in range(2):
            known = labels[held, c] != 0
            expected = average_precision_score(labels[held][known, c] > 0, logits[known, c])
            assert reported[c] == pytest.approx(expected, abs=AP_ATOL)
    # A poor start on a linear rule: CFT must find far better heads, at a step > 0.
    assert (fit.holdout_ap_after[:2] > fit.holdout_ap_before[:2] + 0.2).all()
    assert (fit.best_step[:2] > 0).all() and fit.steps_run <= options.steps

    def class_loss(k, b, c):
        one_class = np.where(np.arange(3) == c, labels[~held], 0.0)
        return float(cft.per_class_known_loss(k, b, inputs[~held], one_class, options))

    for c in range(2):
        assert class_loss(fit.kernel, fit.bias, c) < class_loss(kernel, bias, c)


def test_holdout_fraction_is_checked():
    with pytest.raises(ValueError, match="holdout fraction must be in"):
        cft.holdout_rows(10, 1.0, seed=0)


def _file_digests(directory):
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(pathlib.Path(directory).rglob("*"))
        if p.is_file()
    }


def test_command_on_a_finished_tiny_run(digit_scenes_dir, tmp_path):
    config = tiny_digit_config("baseline", batch_size=8, epochs=1, data_dir=digit_scenes_dir)
    config.logging.progress_bar = False
    config.checkpoint.update(keep_last=1, async_save=False)
    workdir = tmp_path / "run"
    run_results = train.train_and_evaluate(config, str(workdir))
    checkpoint_files = _file_digests(workdir / "checkpoints")

    options = cft.FitOptions(steps=60, patience=20, learning_rate=1e-2)
    results = command.category_finetune(str(workdir), options=options)
    assert _file_digests(workdir / "checkpoints") == checkpoint_files
    written = json.loads((workdir / "cft" / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    # 'before' is the run's own last evaluation: same checkpoint, same evaluation code.
    assert results["before"]["mAP"] == run_results["last"]["mAP"]
    assert set(results["after"]) == set(results["before"])
    with np.load(workdir / "cft" / "classifier.npz") as arrays:
        assert arrays["kernel"].shape == (10, config.model.output_dim)
    fitted = [c for c in results["classes"] if c["fitted"]]
    assert fitted and all(c["holdout_ap_after"] >= c["holdout_ap_before"] for c in fitted)


def test_command_stops_on_a_workdir_without_checkpoint(tmp_path):
    with pytest.raises(command.NoCheckpointError, match="no checkpoint in"):
        command.category_finetune(str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(command.NoCheckpointError, match="holds no complete checkpoint"):
        command.category_finetune(str(tmp_path))
