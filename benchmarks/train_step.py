"""Benchmark of the jitted train step (and inference step) on synthetic input.

    python benchmarks/train_step.py --config=configs/baseline_digits.py
    python benchmarks/train_step.py --config=configs/baseline_coco.py   # the paper shape: ResNet-101, 448², B=8, C=80
    python benchmarks/train_step.py --config=configs/baseline_digits.py --devices=1,2,4,8

Prints one JSON line per measured configuration and appends it to
benchmarks/results/train_step.jsonl: compile time, median step time, images/s, inference
step time, peak memory (device allocator peak where the backend reports it, else the
process's peak RSS), device kind and count. The measurement is the dry run's
(mlrpl_jax/core/dry_run.py: synthetic input, random weights, the method's host hooks once), so no
data needs preparing; the class count is the config's dataset's unless --num_classes.

`--devices` measures the same global batch on meshes over the first N devices, one line per
N (default: all devices). On a CPU with simulated devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8) this is only a smoke test of the sharded
step: the simulated devices share the machine's cores, so the step time does not fall with N.
Scaling figures come from runs on accelerators (one GPU or TPU chip per device).
"""

from __future__ import annotations

import json
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from mlrpl_jax.core import dry_run, parallel

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file to benchmark.",
                                          lock_config=True)
_DEVICES = flags.DEFINE_list("devices", [], "Device counts to measure, e.g. 1,2,4,8: the mesh "
                             "over the first N devices of jax.devices() (default: all).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 0, "Classes (0: the config's dataset's).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after the compile step.")
_START_EPOCH = flags.DEFINE_integer("start_epoch", None, "Epoch the timed steps belong to "
                                    "(default: the method's first epoch with every loss term on).")
_OUTPUT = flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results",
                                                     "train_step.jsonl"), "JSONL file to append to.")


def main(argv: list[str]) -> None:
    del argv
    plan = dry_run.make_plan(_CONFIG.value, num_classes=_NUM_CLASSES.value or None,
                             epoch=_START_EPOCH.value)
    device_counts = [int(n) for n in _DEVICES.value] or [jax.device_count()]
    if not all(0 < n <= jax.device_count() for n in device_counts):
        raise app.UsageError(f"--devices={_DEVICES.value}: counts must lie in 1..{jax.device_count()}")
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    for num_devices in device_counts:
        mesh = parallel.create_mesh(jax.devices()[:num_devices])
        line = json.dumps({"benchmark": "train_step", **plan.summary(), "steps": _STEPS.value,
                           **dry_run.measure(plan, mesh, _STEPS.value)})
        print(line)
        with open(_OUTPUT.value, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
