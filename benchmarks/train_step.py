"""Benchmark of the jitted train step (and inference step) on synthetic input.

    python benchmarks/train_step.py --config=configs/baseline_digits.py
    python benchmarks/train_step.py --config=configs/baseline_digits.py --paper   # ResNet-101, 448², B=8, C=80
    python benchmarks/train_step.py --config=configs/baseline_digits.py --devices=1,2,4,8

Prints one JSON line per measured configuration and appends it to
benchmarks/results/train_step.jsonl: compile time, median step time, images/s, inference
step time, peak memory (device allocator peak where the backend reports it, else the
process's peak RSS), device kind and count. Synthetic images and partial labels (known
proportion from the config) stand in for the dataset, so no data needs preparing.

`--devices` measures the same global batch on meshes over the first N devices, one line per
N (default: all devices). On a CPU with simulated devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8) this is only a smoke test of the sharded
step: the simulated devices share the machine's cores, so the step time does not fall with N.
Scaling figures come from runs on accelerators (one GPU or TPU chip per device).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mlrpl_jax import optim, parallel
from mlrpl_jax.config import validate_config
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.synthetic import synthetic_batch, synthetic_data_info
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.train import create_train_state, jit_predict, jit_train_step, make_train_step

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file to benchmark.",
                                          lock_config=True)
_PAPER = flags.DEFINE_bool("paper", False, "Override to the paper configuration: ResNet-101, "
                           "448², batch 8, 80 classes, paper head sizes, frozen stem..stage 3.")
_DEVICES = flags.DEFINE_list("devices", [], "Device counts to measure, e.g. 1,2,4,8: the mesh "
                             "over the first N devices of jax.devices() (default: all).")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 0, "Classes (0: 80 with --paper, else 10).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after the compile step.")
_START_EPOCH = flags.DEFINE_integer("start_epoch", 0, "Epoch the timed steps belong to (e.g. 5 to "
                                    "time SARB/DSRB blending or SST/HST pseudo-label steps).")
_OUTPUT = flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results",
                                                     "train_step.jsonl"), "JSONL file to append to.")

_SYNTHETIC_TRAIN_SIZE = 512


def paper_overrides(config) -> None:
    config.batch_size = 8
    config.data.image_size = 448
    for key, value in dict(depth=101, width=64, extra_pool=True, freeze_early_stages=True,
                           feature_dim=1024, attention_dim=512, output_dim=1024).items():
        config.model[key] = value


def peak_memory_bytes() -> tuple[int, str]:
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device_peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"


def measure(config, method, info, num_devices: int) -> dict:
    """Times the train and inference steps on a mesh over the first `num_devices` devices."""
    mesh = parallel.create_mesh(jax.devices()[:num_devices])
    parallel.check_batch_size(config.batch_size, mesh)
    steps_per_epoch = 1000
    optimizer = optim.build_optimizer(config.optim, steps_per_epoch)
    host_state = create_train_state(method, optimizer, config)
    host_state = host_state.replace(step=np.asarray(_START_EPOCH.value * steps_per_epoch, np.int32))
    state = parallel.replicate(host_state, mesh)

    size, batch_size = config.data.image_size, config.batch_size
    batch = parallel.to_global(synthetic_batch(info, batch_size, size, seed=1), mesh)

    train_step = jit_train_step(make_train_step(method, optimizer, steps_per_epoch), mesh)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(_STEPS.value + 1):
        start = time.perf_counter()
        state, scalars = compiled(state, batch)
        jax.block_until_ready((state, scalars))
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[1:])

    predict = jit_predict(method, mesh)
    jax.block_until_ready(predict(state, batch["image"]))
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        jax.block_until_ready(predict(state, batch["image"]))
    predict_s = (time.perf_counter() - start) / _STEPS.value

    memory, memory_kind = peak_memory_bytes()
    return {
        "benchmark": "train_step", "method": config.method, "paper_config": _PAPER.value,
        "epoch": _START_EPOCH.value,
        "depth": config.model.depth, "width": config.model.width, "image_size": size,
        "batch_size": batch_size, "num_classes": info.num_classes, "dtype": config.model.dtype,
        "devices": num_devices, "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(), "compile_s": round(compile_s, 3),
        "step_s_median": round(step_s, 4), "step_s_all": [round(t, 4) for t in times],
        "images_per_s": round(batch_size / step_s, 2),
        "predict_step_s": round(predict_s, 4), "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind, "loss": float(scalars["loss"]),
    }


def main(argv: list[str]) -> None:
    del argv
    config = _CONFIG.value
    if _PAPER.value:
        paper_overrides(config)
    validate_config(config)
    num_classes = _NUM_CLASSES.value or (80 if _PAPER.value else 10)
    info = synthetic_data_info(num_classes, _SYNTHETIC_TRAIN_SIZE, config.known_ratio)
    method = get_method_class(config.method)(
        config, info, random_embeddings(num_classes, config.embeddings.dim),
        label_adjacency(info.train_partial_labels))
    device_counts = [int(n) for n in _DEVICES.value] or [jax.device_count()]
    if not all(0 < n <= jax.device_count() for n in device_counts):
        raise app.UsageError(f"--devices={_DEVICES.value}: counts must lie in 1..{jax.device_count()}")
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    for num_devices in device_counts:
        line = json.dumps(measure(config, method, info, num_devices))
        print(line)
        with open(_OUTPUT.value, "a", encoding="utf-8") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
