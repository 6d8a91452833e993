"""Reliability: exact resume after crashes and preemption, guarded numerics, clear input errors.

The crash test runs `python -m mlrpl_jax.main` in subprocesses and stops them at exact points
with MLRPL_FAULT_AT (mlrpl_jax/core/fault_injection.py); docs/failure_modes.md lists every case.
"""

import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from fixtures_blending import tiny_config
from test_end_to_end import tiny_run_config
from test_notebooks import FAST_COMPILE_XLA_FLAGS
from test_paper_datasets import VOC_TEST, VOC_TRAINVAL, ids_of, read_split, write_voc_tree

from mlrpl_jax.config import ConfigError, validate_config, with_method_sections
from mlrpl_jax.core import checkpointing, train
from mlrpl_jax.core.fault_injection import FAULT_ENV_VAR
from mlrpl_jax.data import builder_common, datasets
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.pipeline import PartialLabelData
from mlrpl_jax.data.synthetic import synthetic_data_info
from mlrpl_jax.methods.baseline import PartialBCEBaseline
from mlrpl_jax.methods.blending.dsrb import DSRB
from mlrpl_jax.methods.blending.sarb import SARB
from mlrpl_jax.methods.semantic_transfer.hst import HeterogeneousSemanticTransfer

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def sarb_run_config(data_dir: str):
    """Two tiny SARB epochs of 12 steps, checkpoints every 5 steps and after each epoch; the
    prototype hook runs at the start of epoch 1 (step 12)."""
    config = tiny_run_config(data_dir, epochs=2)
    config.method = "sarb"
    config = with_method_sections(config)
    config.sarb.update(mixup_epoch=1, recompute_interval=1, num_prototypes=2)
    return config


def write_config_file(config, path: pathlib.Path) -> pathlib.Path:
    """`config` as a config file for `--config=<path>`."""
    path.write_text(
        "import json\nimport ml_collections\n\n\ndef get_config():\n"
        f"    return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n"
    )
    return path


def run_main(
    config_file: pathlib.Path, workdir: pathlib.Path, fault: str = ""
) -> subprocess.CompletedProcess:
    """`python -m mlrpl_jax.main` on 8 simulated devices with the notebooks' cheaper XLA code
    generation (a fifth of the suite's compile time for the model's initialisation); every run
    compared here uses the same flags, and all share the suite's compilation cache, so only the
    first compiles."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {FAST_COMPILE_XLA_FLAGS}",
        FAULT_ENV_VAR: fault,
    }
    return subprocess.run(
        [sys.executable, "-m", "mlrpl_jax.main", f"--config={config_file}", f"--workdir={workdir}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def finished_steps(workdir: pathlib.Path) -> list[int]:
    """Steps of the checkpoints orbax finished (renamed from '<step>.orbax-checkpoint-tmp...')."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def latest_step(workdir: pathlib.Path) -> int | None:
    checkpointer = checkpointing.Checkpointer(
        str(workdir / "checkpoints"), keep_last=10, keep_best=0, async_save=False
    )
    step = checkpointer.latest_step()
    checkpointer.close()
    return step


def stored_state(workdir: pathlib.Path, step: int):
    """The TrainState tree of a checkpoint as NumPy arrays, read without a target structure."""
    return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")


@pytest.fixture(scope="module")
def reference_run(digit_scenes_dir, tmp_path_factory):
    """An uninterrupted run of the SARB config by run_main; (config, config file, workdir,
    results)."""
    config = sarb_run_config(digit_scenes_dir)
    root = tmp_path_factory.mktemp("reference")
    config_file = write_config_file(config, root / "sarb_tiny.py")
    finished = run_main(config_file, root / "work")
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = json.loads((root / "work" / "results.json").read_text())
    return config, config_file, root / "work", results


def test_killed_and_preempted_run_finishes_as_if_uninterrupted(reference_run, tmp_path):
    _, config_file, reference_dir, reference_results = reference_run
    workdir = tmp_path / "work"

    def kill_at(fault: str, possible_latest: tuple[int, ...]) -> None:
        """Runs until MLRPL_FAULT_AT=fault kills it; the latest checkpoint is a finished one.

        Whether an asynchronous save that was under way at the kill finished depends on timing,
        hence the possible latest steps.
        """
        killed = run_main(config_file, workdir, fault)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        latest = latest_step(workdir)
        assert latest == finished_steps(workdir)[-1] and latest in possible_latest

    # SIGKILL right after the asynchronous save of step 10 started.
    kill_at("save:10", (5, 10))
    # A half-written checkpoint of a later step (as a crash mid-write leaves it) is never used.
    half_written = workdir / "checkpoints" / "11.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(workdir / "checkpoints" / "5", half_written)
    shutil.rmtree(half_written / "state")
    assert latest_step(workdir) in (5, 10)
    # SIGKILL during the evaluation after epoch 0 (its checkpoint at step 12 comes after it).
    kill_at("eval:12", (5, 10))
    # SIGKILL during the prototype pass of epoch 1 (SARB's on_epoch_start hook).
    kill_at("hook:12", (10, 12))
    # SIGKILL while step 17 runs.
    kill_at("step:17", (12, 15))
    # SIGTERM (preemption) at step 22: a synchronous checkpoint of step 22, then exit 143.
    preempted = run_main(config_file, workdir, "step:22:TERM")
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.stderr[-3000:]
    assert "SIGTERM received: saved the checkpoint of step 22" in preempted.stderr
    assert latest_step(workdir) == 22

    finished = run_main(config_file, workdir)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text()) == reference_results
    final, expected = stored_state(workdir, 24), stored_state(reference_dir, 24)
    assert jax.tree.structure(final) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(got, want)
    assert int(final["method_state"]["prototype_epoch"]) == 1
    assert not (workdir / "checkpoints" / "11").exists()


@pytest.mark.parametrize("change", ["method", "model_size", "dataset"])
def test_checkpoint_of_another_run_is_refused(reference_run, tmp_path, change):
    config, _, reference_dir, _ = reference_run
    workdir = tmp_path / "work"
    shutil.copytree(reference_dir / "checkpoints", workdir / "checkpoints")
    config = config.copy_and_resolve_references()
    if change == "method":
        config.method = "dsrb"
        config = with_method_sections(config)
        del config["sarb"]
    elif change == "model_size":
        config.model.feature_dim = 32
    else:  # the same shapes under another dataset name: only the run identity tells them apart
        record_file = workdir / "checkpoints" / "24" / "record" / "metadata"
        record = json.loads(record_file.read_text())
        record["run"]["dataset"] = "voc2007"
        record_file.write_text(json.dumps(record))
    with pytest.raises(checkpointing.CheckpointMismatchError, match="new --workdir"):
        train.train_and_evaluate(config, str(workdir))


class NaNAtStep7(PartialBCEBaseline):
    """The baseline with a NaN loss term in training step 7 (state.step 6)."""

    def loss(self, variables, method_state, batch, ctx):
        loss, aux = super().loss(variables, method_state, batch, ctx)
        injected = jnp.where(ctx.epoch * ctx.steps_per_epoch + ctx.step_in_epoch == 6, jnp.nan, 0.0)
        return loss + injected, aux.replace(metrics={**aux.metrics, "injected_term": injected})


def nan_run(digit_scenes_dir, workdir, on_nonfinite, monkeypatch):
    monkeypatch.setattr(train, "get_method_class", lambda name: NaNAtStep7)
    config = tiny_run_config(digit_scenes_dir, epochs=1)
    config.checkpoint.async_save = False
    config.train.on_nonfinite = on_nonfinite
    return train.train_and_evaluate(config, str(workdir))


def all_finite(tree) -> bool:
    return all(
        np.all(np.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if np.issubdtype(np.asarray(leaf).dtype, np.floating)
    )


def test_nonfinite_loss_stops_with_step_and_term(digit_scenes_dir, tmp_path, monkeypatch):
    with pytest.raises(
        FloatingPointError, match=r"at training step 7: loss=nan, injected_term=nan\."
    ):
        nan_run(digit_scenes_dir, tmp_path, "stop", monkeypatch)
    assert finished_steps(tmp_path) == [5]  # the checkpoint due at step 10 was not written
    assert all_finite(stored_state(tmp_path, 5))


def test_nonfinite_loss_skips_the_update(digit_scenes_dir, tmp_path, monkeypatch):
    results = nan_run(digit_scenes_dir, tmp_path, "skip", monkeypatch)
    assert 0.0 < results["last"]["mAP"] <= 100.0
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = {
        entry["step"]: entry["train/skipped_updates"]
        for entry in logged
        if "train/skipped_updates" in entry
    }
    assert skipped == {5: 0.0, 10: 1.0, 12: 0.0}
    assert all(all_finite(stored_state(tmp_path, step)) for step in finished_steps(tmp_path))


@pytest.mark.parametrize("method_class", [SARB, DSRB, HeterogeneousSemanticTransfer])
def test_class_without_known_positive_is_refused_before_training(method_class):
    info = synthetic_data_info(num_classes=6, num_examples=32, known_ratio=0.5)
    partial = info.train_partial_labels.copy()
    partial[:, 4] = np.where(partial[:, 4] == 1, 0, partial[:, 4])
    info = dataclasses.replace(info, train_partial_labels=partial)
    config = tiny_config(method_class)
    method = method_class(config, info, random_embeddings(6, 12), label_adjacency(partial))
    with pytest.raises(
        ValueError,
        match=r"no known positive training label for class 'class_4' "
        r"\(index 4\) at known_ratio=0.5.*larger known_ratio",
    ):
        method.check_training_labels()


def truncate_first_trainval_image(raw: pathlib.Path) -> pathlib.Path:
    image = raw / "VOCdevkit" / "VOC2007" / "JPEGImages" / f"{VOC_TRAINVAL[0][0]}.jpg"
    image.write_bytes(image.read_bytes()[:20])
    return image


def test_corrupt_raw_image_fails_with_its_path_or_is_skipped(tmp_path):
    write_voc_tree(tmp_path / "raw", {"trainval": VOC_TRAINVAL, "test": VOC_TEST})
    image = truncate_first_trainval_image(tmp_path / "raw")
    with pytest.raises(builder_common.CorruptImageError, match=f"{image}.*--corrupt_images=skip"):
        datasets.prepare_dataset("voc2007", str(tmp_path / "data"), str(tmp_path / "raw"))
    datasets.prepare_dataset(
        "voc2007", str(tmp_path / "skipped"), str(tmp_path / "raw"), corrupt_images="skip"
    )
    train_split = read_split(tmp_path / "skipped", "voc2007/default", "trainval")
    assert ids_of(train_split) == [image_id for image_id, _ in VOC_TRAINVAL[1:]]
    assert [int(r["index"]) for r in train_split] == [0, 1]


def test_undecodable_record_names_its_image_id(tmp_path, monkeypatch):
    write_voc_tree(tmp_path / "raw", {"trainval": VOC_TRAINVAL, "test": VOC_TEST})
    truncate_first_trainval_image(tmp_path / "raw")
    monkeypatch.setattr(
        builder_common.PaperDatasetBuilder, "read_image", lambda self, path: path.read_bytes()
    )  # a builder that did not check
    datasets.prepare_dataset("voc2007", str(tmp_path / "data"), str(tmp_path / "raw"))
    data = PartialLabelData(
        dataset="voc2007", data_dir=str(tmp_path / "data"), image_size=8, known_ratio=1.0, seed=0
    )
    with pytest.raises(
        builder_common.CorruptImageError,
        match=f"image_id '{VOC_TRAINVAL[0][0]}', index 0.*prepare it again",
    ):
        list(data.train_batches(0, 3))


def test_label_index_out_of_range_names_the_image():
    with pytest.raises(
        ValueError, match=r"\[250, -1\] of image '12.jpg' are out of range: valid .* 0..199"
    ):
        builder_common.labels_from_positives([3, 250, -1], 200, "12.jpg")


def test_restoring_a_checkpoint_never_unpickles(tmp_path, monkeypatch):
    state = {"params": {"w": np.arange(6, dtype=np.float32)}, "step": np.full((), 3, np.int32)}
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    saver.save(3, state, {"note": "no pickle"})
    saver.close()

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    numpy_load = np.load

    def load_without_pickle(*args, allow_pickle=False, **kwargs):
        assert not allow_pickle, "np.load with allow_pickle=True"
        return numpy_load(*args, **kwargs)

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", load_without_pickle)
    restorer = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    restored, record = restorer.restore(3, state)
    restorer.close()
    np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
    assert record == {"note": "no pickle"}


def test_on_nonfinite_accepts_only_stop_or_skip():
    config = tiny_run_config("", epochs=1)
    config.train.on_nonfinite = "ignore"
    with pytest.raises(
        ConfigError, match="train.on_nonfinite must be 'stop' or 'skip', got 'ignore'"
    ):
        validate_config(config)
