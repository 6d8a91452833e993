"""Acceptance check of a new accelerator host or pod slice before a training job on it.

    python -m mlrpl_jax.acceptance --config=configs/dsrb_coco.py --workdir=/tmp/accept \
        --config.data.data_dir=$HOME/tensorflow_datasets

Reports, in this order: the devices and their topology; the config's dry run at its shapes
(core/dry_run.py: compile, step time, memory) with the train step's FLOPs per device from
XLA's cost analysis, the FLOP/s they achieve and the MFU against the chip's peak
(core/device_peaks.py); the rate at which this host's input pipeline (the config's, on its
prepared dataset) delivers training images against the rate the step consumes them; and a
one-line verdict. Written to <workdir>/acceptance.json (launch/README.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from mlrpl_jax.core import device_peaks, dry_run, parallel, storage
from mlrpl_jax.core.train import check_workdir, open_data
from mlrpl_jax.data.pipeline import PartialLabelData, resolve_num_workers
from mlrpl_jax.data.throughput import timed_pass

RESULT_FILE = "acceptance.json"


def topology() -> dict[str, Any]:
    """Every device of the cluster: its id, process, kind and, where the platform has them
    (TPUs), its coordinates in the slice and core on the chip; coords_extent is the slice's
    shape."""
    devices = jax.devices()
    listed = []
    for device in devices:
        entry = {"id": device.id, "process_index": device.process_index, "kind": device.device_kind}
        for attribute in ("coords", "core_on_chip"):
            value = getattr(device, attribute, None)
            if value is not None:
                entry[attribute] = list(value) if attribute == "coords" else value
        listed.append(entry)
    result = {
        "platform": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_kinds": sorted({device.device_kind for device in devices}),
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "devices": listed,
    }
    coords = [entry["coords"] for entry in listed if "coords" in entry]
    if coords and len(coords) == len(listed):
        result["coords_extent"] = [int(axis.max() - axis.min() + 1) for axis in np.array(coords).T]
    return result


def flop_rate(dry: dict[str, Any], device_kind: str, dtype: str) -> dict[str, Any]:
    """FLOPs per device of one train step, the FLOP/s they achieve at the median step time and
    the MFU against the chip's peak for `dtype` (None where the kind has no peak)."""
    flops = dry["train_step_flops_per_device"]
    achieved = flops / dry["step_s_median"] if flops else None
    result = {
        "train_step_flops_per_device": flops,
        "achieved_flops_per_s_per_device": achieved,
        "peak": None,
        "peak_flops_per_s_per_device": None,
        "peak_basis": None,
        "mfu": None,
    }
    chip = device_peaks.PEAKS.get(device_kind)
    if chip is not None:
        peak, basis = chip.for_dtype(dtype)
        result.update(
            peak=dataclasses.asdict(chip),
            peak_flops_per_s_per_device=peak,
            peak_basis=basis,
            mfu=achieved / peak if achieved else None,
        )
    return result


def _train_batches(data: PartialLabelData, global_batch_size: int) -> Iterator[dict]:
    """This process's training batches, epoch after epoch."""
    for epoch in itertools.count():
        yield from data.train_batches(
            epoch,
            global_batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )


def input_rate(
    data: PartialLabelData, global_batch_size: int, batches: int, num_workers: int
) -> dict[str, Any]:
    """Training images/s of every process's input pipeline (`num_workers` loader processes) over
    `batches` batches after its first (the pipeline's start-up, reported apart)."""
    if batches < 2:
        raise ValueError(f"input batches must be >= 2 (the first is not timed), got {batches}")
    first_s, rate, images, cpu_ms = timed_pass(_train_batches(data, global_batch_size), batches)
    rates = np.asarray(multihost_utils.process_allgather(np.float64(rate))).reshape(-1)
    return {
        "num_workers": num_workers,
        "batches_timed": batches - 1,
        "images_timed": images,
        "first_batch_s": round(first_s, 3),
        "process_cpu_ms_per_image": round(cpu_ms, 2),
        "images_per_s_per_process": [round(float(r), 1) for r in rates],
        "slowest_process_images_per_s": round(float(rates.min()), 1),
    }


def verdict(report: dict[str, Any]) -> str:
    """One line: FAIL (the step does not train), INPUT-BOUND (a host's pipeline is slower than
    the step consumes) or OK, with the MFU."""
    dry, flops, needed = report["dry_run"], report["flops"], report["input_needed_images_per_s"]
    if not math.isfinite(dry["loss"]) or dry["last_step_skipped"]:
        return (
            f"FAIL: the train step's loss is {dry['loss']} (update skipped: "
            f"{dry['last_step_skipped']})"
        )
    if flops["mfu"] is not None:
        mfu = f"MFU {100 * flops['mfu']:.1f}% of {flops['peak_basis']}"
    else:
        mfu = f"peak unknown for {report['topology']['device_kind']!r}, MFU not computed"
    slowest = report["input"]["slowest_process_images_per_s"]
    rates = f"{slowest:.1f} images/s per process against {needed:.1f} consumed"
    if slowest < needed:
        return (
            f"INPUT-BOUND: the input pipeline gives {rates} (more loader cores or "
            f"config.data.num_workers); {mfu}"
        )
    return f"OK: the input pipeline keeps up ({rates}); {mfu}"


def run(
    config: ml_collections.ConfigDict, workdir: str, steps: int, input_batches: int
) -> dict[str, Any]:
    """The acceptance check of `config` on every device; prints the report and the verdict and
    writes <workdir>/acceptance.json (process 0)."""
    plan = dry_run.make_plan(config)
    check_workdir(workdir)
    data = open_data(plan.config)  # a dataset not prepared stops here, before any compile
    now = datetime.datetime.now(datetime.timezone.utc)
    report = {
        "time_utc": now.isoformat(timespec="seconds"),
        "config": plan.summary(),
        "topology": topology(),
    }
    report["dry_run"] = dry_run.measure(plan, parallel.create_mesh(), steps)
    report["flops"] = flop_rate(
        report["dry_run"], report["topology"]["device_kind"], plan.config.model.dtype
    )
    num_workers = resolve_num_workers(config.data.num_workers, jax.default_backend())
    report["input"] = input_rate(data, plan.config.batch_size, input_batches, num_workers)
    report["input_needed_images_per_s"] = round(
        plan.config.batch_size / jax.process_count() / report["dry_run"]["step_s_median"], 1
    )
    report["verdict"] = verdict(report)
    path = epath.Path(workdir) / RESULT_FILE
    if jax.process_index() == 0:
        storage.write_json(path, report)
        print(format_report(report) + f"\n  written to {path}")
    return report


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def format_report(report: dict[str, Any]) -> str:
    """The report in a few lines, ending with the verdict."""
    topo, flops, inputs = report["topology"], report["flops"], report["input"]
    extent = (
        f", slice {'x'.join(map(str, topo['coords_extent']))}" if "coords_extent" in topo else ""
    )
    return "\n".join(
        [
            f"devices: {topo['device_count']} x {topo['device_kind']} ({topo['platform']}) over "
            f"{topo['process_count']} process(es), {topo['local_device_count']} local{extent}",
            dry_run.format_result(
                {
                    **report["config"],
                    **report["dry_run"],
                    "steps": len(report["dry_run"]["step_s_all"]),
                }
            ),
            f"  train step {_si(flops['train_step_flops_per_device'], 'FLOP')} per device "
            f"(XLA cost analysis), achieved {_si(flops['achieved_flops_per_s_per_device'], 'FLOP/s')}"
            f" per device, peak {_si(flops['peak_flops_per_s_per_device'], 'FLOP/s')}",
            f"input pipeline: {inputs['slowest_process_images_per_s']} training images/s (slowest "
            f"process, {inputs['num_workers']} workers, {inputs['images_timed']} images after the "
            f"first batch); the step consumes {report['input_needed_images_per_s']} per process",
            report["verdict"],
        ]
    )
