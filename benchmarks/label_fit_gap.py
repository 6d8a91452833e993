"""How a finished run scores the labels it trained on, the hidden ones, and the test set.

    python benchmarks/label_fit_gap.py --workdir=workdirs/digit_benchmark/satl_digits/p0.1_s0

Restores the run's latest checkpoint (its config is read from the checkpoint), scores every
training and test image in inference mode (no augmentation) and prints one JSON line: per
group of label entries (the known training labels, the hidden training labels — the unknown
entries, judged against the complete labels the run never saw — and the test labels) the mean
sigmoid score of positives and negatives and the mAP over that group's entries only. A model
that scores its known labels far better than its hidden ones has fitted the known labels
themselves; statistics taken from known labels (SATL's thresholds, SARB's prototypes) then
describe the hidden labels badly.

For SATL runs it adds the precision of the run's own thresholds on each group and, as a check
of the threshold rule itself, the precision on the hidden labels of thresholds computed by the
same rule from the test labels (labels the model never fitted).
"""

from __future__ import annotations

import json

import finished_run
import jax
import numpy as np
from absl import app, flags

from mlrpl_jax.core import parallel, train
from mlrpl_jax.core.metrics import evaluate_scores
from mlrpl_jax.data.pipeline import PartialLabelData
from mlrpl_jax.methods.thresholds import histogram_thresholds


def sigmoid_scores(
    state, data: PartialLabelData, predict, mesh, split: str, batch_size: int
) -> np.ndarray:
    """Sigmoid scores (N, C) of every image of `split` in reference order."""
    scores = []
    for batch in data.eval_batches(batch_size, split=split):
        logits = predict(state, parallel.to_global({"image": batch["image"]}, mesh)["image"])
        scores.append(
            np.asarray(jax.nn.sigmoid(parallel.gather_to_host(logits)))[batch["mask"] > 0]
        )
    return np.concatenate(scores)


def group_summary(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean score of the positive / negative entries and the mAP over the non-zero entries of `labels`."""
    return {
        "mean_positive_score": float(scores[labels == 1].mean()),
        "mean_negative_score": float(scores[labels == -1].mean()),
        "positives": int(np.sum(labels == 1)),
        "mAP": evaluate_scores(scores, labels, ignore_zero_targets=True)["mAP"],
    }


def precision_at(scores: np.ndarray, labels: np.ndarray, tau_pos: np.ndarray) -> dict[str, float]:
    """Precision and count of the entries of `labels` != 0 scoring at least τ+ of their class."""
    selected = (labels != 0) & (scores >= tau_pos[None, :])
    precision = float(np.mean(labels[selected] == 1)) if selected.any() else float("nan")
    return {"precision_at_tau_pos": precision, "selected": int(selected.sum())}


def label_fit_gap(workdir: str, batch_size: int = 50) -> dict:
    """The summary described in the module docstring, for the latest checkpoint in `workdir`."""
    run = finished_run.restore(workdir)
    config, data, method, state, mesh = run.config, run.data, run.method, run.state, run.mesh
    step = run.step
    predict = train.jit_predict(method, mesh)

    info = data.info
    train_scores = sigmoid_scores(state, data, predict, mesh, "train", batch_size)
    test_scores = sigmoid_scores(state, data, predict, mesh, "test", batch_size)
    known = info.train_partial_labels != 0
    groups = {
        "known": (train_scores, np.where(known, info.train_complete_labels, 0)),
        "hidden": (train_scores, np.where(known, 0, info.train_complete_labels)),
        "test": (test_scores, info.test_labels),
    }
    result = {
        "workdir": workdir,
        "step": int(step),
        "method": config.method,
        "known_ratio": config.known_ratio,
        "seed": config.seed,
    }
    result.update({name: group_summary(*group) for name, group in groups.items()})

    if config.method == "satl":
        stats = jax.device_get(state.method_state)["satl"]
        tau_pos, _ = jax.device_get(
            method.thresholds(stats["positive_histogram"], stats["negative_histogram"])
        )
        for name, group in groups.items():
            result[name].update(precision_at(*group, tau_pos))
        test_histograms = histogram_thresholds.score_histograms(
            test_scores, info.test_labels, config.satl.num_bins
        )
        tau_test, _ = jax.device_get(method.thresholds(*test_histograms))
        result["hidden_with_test_calibrated_thresholds"] = {
            **precision_at(*groups["hidden"], tau_test),
            "classes_with_tau_pos": int(np.sum(np.isfinite(tau_test))),
        }
    return result


def main(argv: list[str]) -> None:
    del argv
    print(json.dumps(label_fit_gap(flags.FLAGS.workdir, flags.FLAGS.batch_size)))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("workdir", None, "Workdir of a finished (or checkpointed) run.")
    flags.mark_flag_as_required("workdir")
    flags.DEFINE_integer("batch_size", 50, "Images per inference batch.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
