"""Benchmark of the jitted train step or the inference forward on synthetic input.

    python benchmarks/train_step.py --config=configs/baseline_digits.py
    python benchmarks/train_step.py --config=configs/sst_coco.py --steps=3   # paper shape: ResNet-101, 448², B=8, C=80
    python benchmarks/train_step.py --config=configs/sst_coco.py --mode=eval_forward --config.model.conv_impl=xla
    python benchmarks/train_step.py --config=configs/baseline_digits.py --devices=1,2,4,8
    make benchmark-step   # every method at the paper configuration, conv_impl xla / dot, frozen bf16

Prints one JSON line per measured configuration and appends it to
benchmarks/results/train_step.jsonl. --mode=train_step (default) is the dry run's measurement
(mlrpl_jax/core/dry_run.py: synthetic input, random weights, the method's host hooks once):
compile time, median step time, images/s, one inference step, peak memory (device allocator
peak where the backend reports it, else the process's peak RSS), device kind and count.
--mode=eval_forward times only the inference forward (`steps` calls after one warm-up) on a
state without optimiser moments, so that its peak RSS is the model's and the forward's alone.
The class count is the config's dataset's unless --num_classes.

Every line also carries the reference PyTorch harness's keys, so both land in one table:
impl ('mlrpl_jax'), model (the method), mode, image_size, batch, threads, warmup, steps,
median_s, times_s (seconds per step) and peak_rss_mb (the process's peak RSS, MiB; one process
per line gives each mode its own peak), plus the fields of benchmarks/timing_harness.py:
AMX presence and the load average before and after.

`--devices` measures the same global batch on meshes over the first N devices, one line per
N (default: all devices). On a CPU with simulated devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8) this is only a smoke test of the sharded
step: the simulated devices share the machine's cores, so the step time does not fall with N.
Scaling figures come from runs on accelerators (one GPU or TPU chip per device).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import timing_harness
from absl import app, flags
from ml_collections import config_flags

from mlrpl_jax.core import dry_run, optim, parallel
from mlrpl_jax.core.train import create_train_state, jit_predict, place_state

MODES = ("train_step", "eval_forward")


def measure_eval_forward(
    plan: dry_run.DryRunPlan, mesh: jax.sharding.Mesh, steps: int
) -> dict[str, Any]:
    """Compile, one warm-up call and `steps` timed calls of the jitted inference forward."""
    config = plan.config
    optimizer = optim.build_optimizer(config.optim, dry_run.STEPS_PER_EPOCH)
    # Inference reads no optimiser state; without it the peak RSS is the model's and the
    # forward's, as in the reference harness's eval.
    state = place_state(
        create_train_state(plan.method, optimizer, config).replace(opt_state=()), mesh
    )
    images = plan.eval_images(mesh)
    start = time.perf_counter()
    predict = jit_predict(plan.method, mesh).lower(state, images).compile()
    compile_s = time.perf_counter() - start
    times = timing_harness.timed_calls(lambda: jax.block_until_ready(predict(state, images)), steps)
    return {
        "devices": mesh.devices.size,
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "compile_s": round(compile_s, 3),
        "warmup": 1,
        "times_s": [round(t, 4) for t in times],
    }


def harness_fields(plan: dry_run.DryRunPlan, mode: str, result: dict[str, Any]) -> dict[str, Any]:
    """The reference harness's keys (impl, model, mode, ..., peak_rss_mb) for one measurement."""
    times = result["times_s"] if mode == "eval_forward" else result["step_s_all"]
    shape = plan.train_images_shape if mode == "train_step" else plan.eval_images_shape
    return {
        "impl": "mlrpl_jax",
        "model": plan.config.method,
        "mode": mode,
        "image_size": shape[1],
        "batch": shape[0],
        "threads": timing_harness.cpu_threads(),
        "warmup": result.get("warmup", 0),
        "steps": len(times),
        "median_s": round(statistics.median(times), 4),
        "times_s": times,
        "peak_rss_mb": round(timing_harness.peak_rss_mb(), 1),
    }


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    load_before = timing_harness.load_average()
    plan = dry_run.make_plan(
        args.config, num_classes=args.num_classes or None, epoch=args.start_epoch
    )
    device_counts = [int(n) for n in args.devices] or [jax.device_count()]
    if not all(0 < n <= jax.device_count() for n in device_counts):
        raise app.UsageError(
            f"--devices={args.devices}: counts must lie in 1..{jax.device_count()}"
        )
    model = plan.config.model
    for num_devices in device_counts:
        mesh = parallel.create_mesh(jax.devices()[:num_devices])
        if args.mode == "train_step":
            result = dry_run.measure(plan, mesh, args.steps)
        else:
            result = measure_eval_forward(plan, mesh, args.steps)
        line = {
            "benchmark": "train_step",
            **plan.summary(),
            "conv_impl": model.conv_impl,
            "frozen_dtype": model.frozen_dtype,
            **result,
            **harness_fields(plan, args.mode, result),
            **timing_harness.conditions(load_before),
        }
        print(timing_harness.append_line(args.output, line))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    config_flags.DEFINE_config_file("config", None, "Config file to benchmark.", lock_config=True)
    flags.mark_flags_as_required(["config"])
    flags.DEFINE_enum(
        "mode",
        "train_step",
        MODES,
        "What to time: the train step (with the dry "
        "run's hooks and one inference step) or only the inference forward.",
    )
    flags.DEFINE_list(
        "devices",
        [],
        "Device counts to measure, e.g. 1,2,4,8: the mesh over the "
        "first N devices of jax.devices() (default: all).",
    )
    flags.DEFINE_integer("num_classes", 0, "Classes (0: the config's dataset's).")
    flags.DEFINE_integer("steps", 5, "Timed steps after the compile step.")
    flags.DEFINE_integer(
        "start_epoch",
        None,
        "Epoch the timed steps belong to (default: the "
        "method's first epoch with every loss term on).",
    )
    flags.DEFINE_string(
        "output", timing_harness.results_path("train_step.jsonl"), "JSONL file to append to."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
