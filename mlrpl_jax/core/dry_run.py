"""Dry run: a config's real jitted train and inference steps at its shapes, on synthetic input.

    python -m mlrpl_jax.main --config=configs/dsrb_coco.py --workdir=/tmp/dry --dry_run_steps=2

Validates a config, its memory and its step time on any machine before a cluster job: no
dataset, weights or embeddings are read. The class count comes from the config's dataset
spec (data/datasets.py), the images are Gaussian at config.data.image_size (with
data.feature_cache, Gaussian maps of the backbone's output shape), the partial labels
synthetic at config.known_ratio; the backbone and label embeddings are random (their values do
not change shapes, memory or time). The steps run in the method's first epoch with every loss
term on (Method.first_full_epoch), after its epoch-start host hook (prototypes, ...) has run
once over one synthetic batch; its epoch-end hook runs after the steps. Results are printed
and written to <workdir>/dry_run.json (docs/dry_run.md).
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from mlrpl_jax.config import validate_config
from mlrpl_jax.core import feature_cache, host_memory, optim, parallel, storage
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.core.train import (
    check_workdir,
    create_train_state,
    jit_predict,
    jit_train_step,
    make_train_step,
    place_state,
)
from mlrpl_jax.data.datasets import get_dataset_spec
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.synthetic import SyntheticData, synthetic_data_info
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.base import Method

# Steps per epoch of the step function: only `step // S` and `step % S` depend on it, not the
# step's work (the papers' COCO epoch has ~10,000 steps).
STEPS_PER_EPOCH = 1000
RESULT_FILE = "dry_run.json"


@dataclasses.dataclass(frozen=True)
class DryRunPlan:
    """What a dry run executes: the config as run (random weights), its method and its data."""

    config: ml_collections.ConfigDict
    method: Method
    data: SyntheticData  # one global batch of synthetic rows: the host hooks' pass
    epoch: int

    @property
    def num_classes(self) -> int:
        return self.data.info.num_classes

    @property
    def train_images_shape(self) -> tuple[int, int, int, int]:
        """Of one global training batch of model inputs: images, or cached backbone maps."""
        return (self.config.batch_size, *feature_cache.model_input_shape(self.config))

    @property
    def eval_images_shape(self) -> tuple[int, int, int, int]:
        return (
            self.config.eval.batch_size or self.config.batch_size,
            *feature_cache.model_input_shape(self.config),
        )

    def eval_images(self, mesh: jax.sharding.Mesh) -> jax.Array:
        """One global batch of Gaussian eval images over `mesh`, this process's rows from it."""
        rows = self.eval_images_shape[0] // jax.process_count()
        images = np.random.default_rng(0).standard_normal(
            (rows, *self.eval_images_shape[1:]), dtype=np.float32
        )
        return parallel.to_global({"image": images}, mesh)["image"]

    def summary(self) -> dict[str, Any]:
        model = self.config.model
        return {
            "method": self.config.method,
            "dataset": self.config.data.name,
            "num_classes": self.num_classes,
            "known_ratio": self.config.known_ratio,
            "label_drop": self.config.data.label_drop,
            "epoch": self.epoch,
            "backbone": model.backbone,
            "depth": model.depth,
            "width": model.width,
            "dtype": model.dtype,
            "train_images_shape": list(self.train_images_shape),
            "eval_images_shape": list(self.eval_images_shape),
        }


def make_plan(
    config: ml_collections.ConfigDict, *, num_classes: int | None = None, epoch: int | None = None
) -> DryRunPlan:
    """The dry run of `config` (validated): the dataset's class count unless `num_classes`, the
    method's first full epoch unless `epoch`. Builds the method; runs no model."""
    validate_config(config)
    config = config.copy_and_resolve_references()
    config.model.pretrained = ""
    num_classes = num_classes or get_dataset_spec(config.data.name).num_classes
    info = synthetic_data_info(
        num_classes,
        config.batch_size,
        config.known_ratio,
        seed=config.seed,
        every_class_known=True,
        label_drop=config.data.label_drop,
        labels_per_category=config.data.labels_per_category,
    )
    method = get_method_class(config.method)(
        config,
        info,
        random_embeddings(num_classes, config.embeddings.dim, seed=config.seed),
        label_adjacency(info.train_partial_labels),
    )
    method.check_training_labels()
    epoch = method.first_full_epoch() if epoch is None else epoch
    data = SyntheticData(info, config.data.image_size, feature_cache.model_input_shape(config))
    return DryRunPlan(config=config, method=method, data=data, epoch=epoch)


def peak_memory_bytes() -> tuple[int, str]:
    """(peak bytes, kind): the first device's allocator peak if reported, else the process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device_peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"


def compiled_flops(compiled: jax.stages.Compiled) -> float | None:
    """FLOPs of one call of `compiled` on one device (the partitioned program each device runs),
    from XLA's cost analysis; None where the backend reports none. Loops count once."""
    flops = (compiled.cost_analysis() or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _timed(fn, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args))
    return result, time.perf_counter() - start


@dataclasses.dataclass
class PreparedStep:
    """A plan made ready to step: the replicated state after the epoch-start hook, one global
    batch, the jitted (not yet compiled) train step, the host context and the set-up times (s)."""

    state: Any
    batch: dict[str, jax.Array]
    train_step: Any
    host: HostContext
    init_s: float
    epoch_start_hook_s: float


def prepare(plan: DryRunPlan, mesh: jax.sharding.Mesh) -> PreparedStep:
    """Initial state on `mesh` at the plan's epoch, the method's epoch-start hook, one batch."""
    config, method = plan.config, plan.method
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(plan.eval_images_shape[0], mesh, what="eval.batch_size")
    optimizer = optim.build_optimizer(config.optim, STEPS_PER_EPOCH)
    start_step = np.asarray(plan.epoch * STEPS_PER_EPOCH, np.int32)
    state, init_s = _timed(  # no reference to the host state outlives place_state
        lambda: place_state(
            create_train_state(method, optimizer, config).replace(step=start_step), mesh
        )
    )
    host = HostContext.on_mesh(
        plan.data,
        mesh,
        config.batch_size,
        log=lambda step, scalars: logging.info("step %d: %s", step, scalars),
    )
    to_global = host.to_global
    state, epoch_start_hook_s = _timed(method.on_epoch_start, state, plan.epoch, host)
    batch = to_global(
        next(
            plan.data.train_batches(
                plan.epoch,
                config.batch_size,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )
        )
    )
    train_step = jit_train_step(make_train_step(method, optimizer, STEPS_PER_EPOCH), mesh)
    return PreparedStep(
        state=state,
        batch=batch,
        train_step=train_step,
        host=host,
        init_s=init_s,
        epoch_start_hook_s=epoch_start_hook_s,
    )


def measure(plan: DryRunPlan, mesh: jax.sharding.Mesh, steps: int) -> dict[str, Any]:
    """Runs the plan on `mesh`: epoch-start hook, compile, `steps` train steps, epoch-end hook,
    one inference step; returns the timings (s), images/s, peak memory and the train step's
    FLOPs per device (XLA's cost analysis)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    config, method = plan.config, plan.method
    prepared = prepare(plan, mesh)
    state, batch, host = prepared.state, prepared.batch, prepared.host
    compiled, compile_s = _timed(lambda: prepared.train_step.lower(state, batch).compile())
    host_memory.release_freed_heap()  # as the training loop does (core/train.py CompiledOnFirstCall)
    step_times = []
    for _ in range(steps):
        (state, scalars), seconds = _timed(compiled, state, batch)
        step_times.append(seconds)
    state, epoch_end_hook_s = _timed(method.on_epoch_end, state, plan.epoch, host)

    images = plan.eval_images(mesh)
    predict = jit_predict(method, mesh)
    compiled_predict, predict_compile_s = _timed(lambda: predict.lower(state, images).compile())
    _, predict_s = _timed(compiled_predict, state, images)

    memory, memory_kind = peak_memory_bytes()
    step_s = statistics.median(step_times)
    return {
        "devices": mesh.devices.size,
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "init_s": round(prepared.init_s, 3),
        "epoch_start_hook_s": round(prepared.epoch_start_hook_s, 3),
        "compile_s": round(compile_s, 3),
        "step_s_median": round(step_s, 4),
        "step_s_all": [round(t, 4) for t in step_times],
        "images_per_s": round(config.batch_size / step_s, 2),
        "train_step_flops_per_device": compiled_flops(compiled),
        "epoch_end_hook_s": round(epoch_end_hook_s, 3),
        "predict_compile_s": round(predict_compile_s, 3),
        "predict_step_s": round(predict_s, 4),
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "loss": float(scalars["loss"]),
        "last_step_skipped": bool(scalars["skipped_update"]),
        "load_average": list(os.getloadavg()),
    }


def run(config: ml_collections.ConfigDict, workdir: str, steps: int) -> dict[str, Any]:
    """Dry run of `config` on every device; prints a summary, writes <workdir>/dry_run.json."""
    plan = make_plan(config)
    check_workdir(workdir)
    result = {**plan.summary(), "steps": steps, **measure(plan, parallel.create_mesh(), steps)}
    path = epath.Path(workdir) / RESULT_FILE
    if jax.process_index() == 0:
        storage.write_json(path, result)
        print(format_result(result) + f"\n  written to {path}")
    return result


def format_result(result: dict[str, Any]) -> str:
    """Two lines of the numbers that matter."""
    return (
        f"dry run of {result['method']} on {result['dataset']} ({result['num_classes']} classes), "
        f"images {result['train_images_shape']}, epoch {result['epoch']}, "
        f"{result['devices']} {result['platform']} device(s):\n"
        f"  compile {result['compile_s']:.1f} s, train step {result['step_s_median']:.3f} s "
        f"(median of {result['steps']}; {result['images_per_s']} images/s), inference step "
        f"{result['predict_step_s']:.3f} s, hooks {result['epoch_start_hook_s']:.1f} s + "
        f"{result['epoch_end_hook_s']:.1f} s, peak memory "
        f"{result['peak_memory_bytes'] / 2**30:.2f} GiB ({result['peak_memory_kind']}), "
        f"loss {result['loss']:.4f}"
    )
