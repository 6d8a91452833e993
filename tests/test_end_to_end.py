"""End to end: the real digit-scene builder, grain pipeline, training, evaluation and resume."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from tiny_config import tiny_digit_config

from mlrpl_jax.core import train
from mlrpl_jax.data.partial_labels import one_positive_labels
from mlrpl_jax.data.pipeline import DatasetNotPreparedError

STEPS_PER_EPOCH = 12  # 96 tiny training scenes / batch 8


def tiny_run_config(data_dir: str, epochs: int):
    config = tiny_digit_config("baseline", batch_size=8, epochs=epochs, data_dir=data_dir)
    config.known_ratio = 0.5
    config.logging.every_steps = 5
    config.checkpoint.keep_last = 10
    config.checkpoint.every_steps = 5
    return config


def test_a_run_opens_its_data_with_the_configured_label_drop(digit_scenes_dir):
    config = tiny_run_config(digit_scenes_dir, 1)
    config.known_ratio, config.data.label_drop, config.seed = 1.0, "one_positive", 3
    info = train.open_data(config).info
    np.testing.assert_array_equal(
        info.train_partial_labels, one_positive_labels(info.train_complete_labels, seed=3)
    )


def test_train_evaluate_and_resume_exactly(digit_scenes_dir, tmp_path):
    full = train.train_and_evaluate(tiny_run_config(digit_scenes_dir, 2), str(tmp_path / "full"))
    assert full["last"]["epoch"] == 1
    assert 0.0 < full["last"]["mAP"] <= 100.0
    workdir = tmp_path / "full"
    assert (workdir / "results.json").exists() and (workdir / "tensorboard").is_dir()
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("test/mAP" in entry for entry in logged)
    assert any("train/loss" in entry for entry in logged)
    # the calibration errors and precision at recall (evaluation.md §11.4-11.5) beside them
    assert any(
        {"test/ECE", "test/ACE", "test/MCE", "test/P_at_R90"} <= entry.keys() for entry in logged
    )
    saved = json.loads((workdir / "results.json").read_text())
    assert {"ECE", "ACE", "MCE", "P_at_R50", "P_at_R70", "P_at_R90"} <= saved["last"].keys()

    # Stop after epoch 0, then run again with the full schedule: resumes at the epoch boundary.
    resumed_dir = str(tmp_path / "resumed")
    train.train_and_evaluate(tiny_run_config(digit_scenes_dir, 1), resumed_dir)
    resumed = train.train_and_evaluate(tiny_run_config(digit_scenes_dir, 2), resumed_dir)
    assert resumed == full

    # Lose everything after the mid-epoch checkpoint at step 15 (epoch 1 after 3 of its 12
    # batches): the rerun restores the data position inside the epoch and finishes identically.
    checkpoints = pathlib.Path(resumed_dir) / "checkpoints"
    for step_dir in checkpoints.iterdir():
        if step_dir.name.isdigit() and int(step_dir.name) > 15:
            shutil.rmtree(step_dir)
    assert max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == 15
    mid_epoch = train.train_and_evaluate(tiny_run_config(digit_scenes_dir, 2), resumed_dir)
    assert mid_epoch == full


def test_missing_dataset_names_the_prepare_command(tmp_path):
    config = tiny_run_config(str(tmp_path / "empty"), 1)
    with pytest.raises(DatasetNotPreparedError, match="python -m mlrpl_jax.data.prepare"):
        train.train_and_evaluate(config, str(tmp_path / "work"))


def test_unwritable_workdir_is_reported(digit_scenes_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match="not writable"):
        train.train_and_evaluate(tiny_run_config(digit_scenes_dir, 1), str(blocker / "work"))


def test_batch_not_divisible_by_devices(digit_scenes_dir, tmp_path):
    config = tiny_run_config(digit_scenes_dir, 1)
    config.batch_size = 6
    with pytest.raises(ValueError, match="batch_size=6 must be divisible by the number of devices"):
        train.train_and_evaluate(config, str(tmp_path / "work"))
