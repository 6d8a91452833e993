"""The dry run (mlrpl_jax/core/dry_run.py): a tiny config runs its steps, hooks and reports; every
paper config plans the dataset's class count and the paper shapes without running its model."""

import importlib.util
import json
import math
import pathlib
import re
import subprocess
import sys

import pytest
from tiny_config import tiny_digit_config

from mlrpl_jax.core import dry_run

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
PAPER_CLASSES = {"coco": 80, "voc": 20, "vg": 200}
PAPER_CONFIGS = sorted(p for p in CONFIGS.glob("*_*.py") if p.stem.split("_")[-1] in PAPER_CLASSES)
# Methods whose every loss term runs from another epoch than 5 (the HCPLab methods' start on the
# papers' schedule): the loss-only baselines from epoch 0, large-loss rejection once its rate is
# > 0, the EMA teacher's pseudo labels after its warm-up.
FIRST_FULL_EPOCH = {
    "baseline": 0,
    "assume_negative": 0,
    "weak_assume_negative": 0,
    "partial_asl": 0,
    "assume_negative_asl": 0,
    "selective_loss": 0,
    "ll_r": 1,
    "ll_ct": 1,
    "ema_teacher": 7,
}  # its pseudo labels start later: 20 of 60 epochs, scaled


def load_config(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_dry_run_of_a_tiny_config_runs_hooks_and_steps_and_writes_json(tmp_path):
    config = tiny_digit_config("dsrb", batch_size=8, epochs=20)
    config.model.pretrained = "/nowhere/resnet18.npz"  # never read by a dry run
    result = dry_run.run(config, str(tmp_path), steps=2)
    written = json.loads((tmp_path / dry_run.RESULT_FILE).read_text())
    assert written == result
    assert result["num_classes"] == 10 and result["epoch"] == 5  # dsrb blends from epoch 5
    assert result["train_images_shape"] == [8, 32, 32, 3]
    assert len(result["step_s_all"]) == 2 and result["step_s_median"] > 0
    assert result["compile_s"] > 0 and result["predict_step_s"] > 0
    assert result["epoch_start_hook_s"] > 0  # prototypes from one synthetic pass
    assert result["peak_memory_bytes"] > 0 and math.isfinite(result["loss"])
    assert result["train_step_flops_per_device"] > 0  # XLA cost analysis
    assert not result["last_step_skipped"]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_plans_the_dataset_classes_at_paper_shapes(path):
    config = load_config(path)
    plan = dry_run.make_plan(config)
    batch = 32 if config.method in ("hst", "satl") else 8
    assert plan.num_classes == PAPER_CLASSES[path.stem.split("_")[-1]]
    assert plan.train_images_shape == (batch, 448, 448, 3) == plan.eval_images_shape
    assert plan.config.model.depth == 101 and plan.config.model.pretrained == ""
    assert plan.epoch == FIRST_FULL_EPOCH.get(config.method, 5)


@pytest.mark.parametrize(
    "label_drop, labels_per_category", [("one_positive", 0), ("per_category", 4)]
)
def test_paper_config_plans_with_the_configured_label_drop(label_drop, labels_per_category):
    config = load_config(CONFIGS / "baseline_coco.py")
    config.known_ratio = 1.0
    config.data.label_drop, config.data.labels_per_category = label_drop, labels_per_category
    plan = dry_run.make_plan(config)
    partial = plan.data.info.train_partial_labels  # (batch, 80)
    assert plan.summary()["label_drop"] == label_drop
    if label_drop == "one_positive":  # plus the one guaranteed known positive of each class
        assert not (partial < 0).any()
    else:  # 2 positives and 2 negatives per class at most, and the guaranteed positive
        assert (partial < 0).any() and (abs(partial).sum(axis=0) <= 4 + 1).all()


def test_main_dry_run_needs_no_weights_or_embeddings_file(tmp_path):
    """`python -m mlrpl_jax.main --dry_run_steps=1` on a paper config without any weights or
    embeddings file (shrunk to a tiny network on the command line) runs and writes its JSON;
    the same command without the flag is refused by the start-of-run file check
    (tests/test_run_inputs.py). A subprocess: importing mlrpl_jax.main here would define the
    absl flags that mlrpl_jax.sweep defines too (tests/test_sweep.py)."""
    tiny = [
        "--config.data.image_size=32",
        "--config.model.depth=18",
        "--config.model.width=8",
        "--config.model.extra_pool=False",
        "--config.model.feature_dim=16",
        "--config.model.attention_dim=8",
        "--config.model.output_dim=16",
        "--config.embeddings.dim=16",
        "--config.batch_size=8",
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlrpl_jax.main",
            "--config=configs/baseline_coco.py",
            f"--workdir={tmp_path}",
            "--dry_run_steps=1",
            *tiny,
        ],
        cwd=CONFIGS.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Quiet by default (mlrpl_jax/cli.py): no absl INFO line ("I1207 12:00:00.0 ...").
    assert not re.search(r"^I\d{4} ", result.stderr, re.M), result.stderr[-3000:]
    written = json.loads((tmp_path / dry_run.RESULT_FILE).read_text())
    assert written["num_classes"] == 80 and written["train_images_shape"] == [8, 32, 32, 3]
    assert written["dataset"] == "coco2014" and math.isfinite(written["loss"])
