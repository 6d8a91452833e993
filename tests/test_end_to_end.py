"""End to end: the real digit-scene builder, grain pipeline, training, evaluation and resume."""

import json
import pathlib
import shutil

import pytest
from tiny_config import tiny_digit_config

from mlrpl_jax.core import train
from mlrpl_jax.data.pipeline import DatasetNotPreparedError

STEPS_PER_EPOCH = 12  # 96 tiny training scenes / batch 8


def tiny_run_config(data_dir: str, epochs: int):
    config = tiny_digit_config("baseline", batch_size=8, epochs=epochs, data_dir=data_dir)
    config.known_ratio = 0.5
    config.logging.every_steps = 5
    config.checkpoint.keep_last = 10
    config.checkpoint.every_steps = 5
    return config


def test_train_evaluate_and_resume_exactly(digit_scenes_dir, tmp_path):
    full = train.train_and_evaluate(tiny_run_config(digit_scenes_dir, 2), str(tmp_path / "full"))
    assert full["last"]["epoch"] == 1
    assert 0.0 < full["last"]["mAP"] <= 100.0
    workdir = tmp_path / "full"
    assert (workdir / "results.json").exists() and (workdir / "tensorboard").is_dir()
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("test/mAP" in entry for entry in logged)
    assert any("train/loss" in entry for entry in logged)

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
