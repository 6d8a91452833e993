"""Training and evaluation loop: build everything from the config, train, evaluate, checkpoint.

One jitted train step over the device mesh (state replicated and donated, batch sharded)
and one jitted inference step; the loop knows nothing about any particular method
(methods/base.py). Running the same config again in the same workdir resumes from the
latest checkpoint and continues exactly where the run stopped.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging

from mlrpl_jax import checkpointing, metrics, optim, parallel
from mlrpl_jax.config import validate_config
from mlrpl_jax.data import label_embeddings, label_graph
from mlrpl_jax.data.pipeline import PartialLabelData
from mlrpl_jax.metric_writer import MetricWriter
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.base import HostContext, Method, StepContext
from mlrpl_jax.models import torch_layout
from mlrpl_jax.train_state import TrainState, split_params

TrainStep = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]


def data_dir(config: ml_collections.ConfigDict) -> str:
    """config.data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return (config.data.data_dir or os.environ.get("TFDS_DATA_DIR")
            or os.path.expanduser("~/tensorflow_datasets"))


def build_method(config: ml_collections.ConfigDict, data: PartialLabelData) -> Method:
    """The configured method, with its label graph (§3.1) and label embeddings (§3.2)."""
    info = data.info
    empty = label_graph.classes_without_known_positive(info.train_partial_labels)
    if len(empty):
        names = [info.spec.class_names[c] for c in empty]
        logging.warning("classes without any known positive at known_ratio=%s: %s; their label-"
                        "graph rows are set to 0 (METHODS.md §12)", config.known_ratio, names)
    adjacency = label_graph.label_adjacency(info.train_partial_labels)
    embeddings = label_embeddings.build_label_embeddings(
        config.embeddings.kind, info.spec.class_names, path=config.embeddings.path or None,
        dim=config.embeddings.dim, seed=config.seed)
    return get_method_class(config.method)(config, info, embeddings, adjacency)


def create_train_state(method: Method, optimizer: optax.GradientTransformation,
                       config: ml_collections.ConfigDict) -> TrainState:
    """Fresh state on the host: initialised model, optional ImageNet backbone, optimiser."""
    size = config.data.image_size
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = jax.jit(method.init_variables, static_argnums=1)(init_key, (1, size, size, 3))
    variables = jax.device_get(variables)
    if config.model.pretrained:
        variables = with_pretrained_backbone(variables, config.model.pretrained, config.model.depth)
    params, frozen = split_params(variables["params"], config.model.freeze_early_stages)
    return TrainState(step=np.zeros((), np.int32), params=params, frozen_params=frozen,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=jax.device_get(optimizer.init(params)),
                      method_state=jax.device_get(method.init_method_state()),
                      rng=np.asarray(jax.device_get(state_key)))


def with_pretrained_backbone(variables: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
    """Replaces the backbone variables by torchvision-layout weights from an .npz file."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"pretrained backbone weights not found at {path!r}. Convert torchvision weights "
            f"once with: python -m mlrpl_jax.tools.import_weights --input=resnet{depth}.pth "
            f"--output={path} --depth={depth}; or set --config.model.pretrained='' to train "
            "from scratch.")
    with np.load(path) as archive:
        backbone = torch_layout.resnet_variables_from_torch(dict(archive), depth)
    result = {collection: dict(tree) for collection, tree in variables.items()}
    for collection in ("params", "batch_stats"):
        result[collection]["backbone"] = backbone[collection]
    return result


def make_train_step(method: Method, optimizer: optax.GradientTransformationExtraArgs,
                    steps_per_epoch: int) -> TrainStep:
    """The (un-jitted) step: forward, loss, gradients, optimiser update, method-state update."""

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        epoch = state.step // steps_per_epoch
        ctx = StepContext(epoch=epoch, step_in_epoch=state.step % steps_per_epoch,
                          rng=jax.random.fold_in(state.rng, state.step),
                          steps_per_epoch=steps_per_epoch)

        def loss_fn(params):
            return method.loss(state.variables(params), state.method_state, batch, ctx)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params,
                                              active=method.active_params(state.params, epoch))
        params = method.project_params(optax.apply_updates(state.params, updates))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  batch_stats=aux.batch_stats, method_state=aux.method_state)
        scalars = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux.metrics}
        return new_state, scalars

    return train_step


def jit_train_step(train_step: TrainStep, mesh: jax.sharding.Mesh) -> TrainStep:
    repl = parallel.replicated(mesh)
    return jax.jit(train_step, in_shardings=(repl, parallel.batch_sharded(mesh)),
                   out_shardings=(repl, repl), donate_argnums=(0,))


def jit_predict(method: Method, mesh: jax.sharding.Mesh) -> Callable[[TrainState, jax.Array], jax.Array]:
    def predict(state: TrainState, images: jax.Array) -> jax.Array:
        return method.predict(state.variables(), state.method_state, images)

    return jax.jit(predict, in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
                   out_shardings=parallel.batch_sharded(mesh))


def evaluate(state: TrainState, data: PartialLabelData, predict, config: ml_collections.ConfigDict,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Metrics of METHODS.md §11 over every test image (padding is cut off before scoring)."""
    batch_size = config.eval.batch_size or config.batch_size
    batch_logits = [predict(state, parallel.to_global({"image": batch["image"]}, mesh)["image"])
                    for batch in data.eval_batches(batch_size, process_index=jax.process_index(),
                                                   process_count=jax.process_count())]
    num_test = data.info.num_test
    if config.eval.drop_last:
        num_test = num_test // batch_size * batch_size
    scores = np.concatenate([parallel.gather_to_host(x) for x in batch_logits])[:num_test]
    return metrics.evaluate_scores(scores, data.info.test_labels[:num_test])


def check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise PermissionError(f"workdir {workdir!r} is not writable ({error.strerror}); "
                              "choose another --workdir") from None


def run_identity(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that restores it."""
    sections = sorted(get_method_class(config.method).config_sections(config))
    return {"method": config.method, "method_sections": sections,
            "dataset": config.data.name, "num_classes": num_classes,
            "depth": config.model.depth, "width": config.model.width,
            "feature_dim": config.model.feature_dim}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the results."""
    validate_config(config)
    check_workdir(workdir)
    mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    eval_batch_size = config.eval.batch_size or config.batch_size
    parallel.check_batch_size(eval_batch_size, mesh, what="eval.batch_size")
    process_index, process_count = jax.process_index(), jax.process_count()

    data = PartialLabelData(dataset=config.data.name, data_dir=data_dir(config),
                            image_size=config.data.image_size, known_ratio=config.known_ratio,
                            seed=config.seed, num_workers=config.data.num_workers)
    method = build_method(config, data)
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    optimizer = optim.build_optimizer(config.optim, steps_per_epoch)
    state = parallel.replicate(create_train_state(method, optimizer, config), mesh)

    writer = MetricWriter(workdir)
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep_last=config.checkpoint.keep_last,
        keep_best=config.checkpoint.keep_best, async_save=config.checkpoint.async_save)
    identity = run_identity(config, data.info.num_classes)
    history: list[dict[str, Any]] = []
    latest = checkpointer.latest_step()
    if latest is not None:
        state, record = checkpointer.restore(latest, state)
        if record["run"] != identity:
            raise checkpointing.CheckpointMismatchError(
                f"the checkpoint in {workdir} was written by run {record['run']}, this run is "
                f"{identity}; use a new --workdir or the original config")
        history = record["history"]
        logging.info("resumed from step %d (epoch %d)", latest, latest // steps_per_epoch)

    to_global = functools.partial(parallel.to_global, mesh=mesh)
    host = HostContext(data=data, global_batch_size=config.batch_size,
                       process_index=process_index, process_count=process_count,
                       to_global=to_global,
                       replicate=functools.partial(parallel.replicate, mesh=mesh),
                       log=writer.write)
    train_step = jit_train_step(make_train_step(method, optimizer, steps_per_epoch), mesh)
    predict = jit_predict(method, mesh)
    show_progress = (config.logging.progress_bar and process_index == 0
                     and sys.stderr.isatty())

    def record_for(step: int) -> dict[str, Any]:
        return {"run": identity, "step": step, "epoch": step // steps_per_epoch,
                "step_in_epoch": step % steps_per_epoch, "history": history,
                "config": config.to_json()}

    step = int(jax.device_get(state.step))
    for epoch in range(step // steps_per_epoch, config.epochs):
        start_step = step - epoch * steps_per_epoch
        if start_step == 0:
            state = method.on_epoch_start(state, epoch, host)
        window: list[dict[str, jax.Array]] = []
        epoch_start = time.time()
        batches = data.train_batches(epoch, config.batch_size, start_step=start_step,
                                     process_index=process_index, process_count=process_count)
        progress = tqdm.tqdm(total=steps_per_epoch, initial=start_step, disable=not show_progress,
                             desc=f"epoch {epoch}", leave=False)
        for batch in batches:
            state, scalars = train_step(state, to_global(batch))
            window.append(scalars)
            step += 1
            progress.update(1)
            if len(window) == config.logging.every_steps or step % steps_per_epoch == 0:
                _log_train_window(writer, step, window, time.time() - epoch_start)
                window = []
            if (config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
                    and step % steps_per_epoch):
                checkpointer.save(step, state, record_for(step))
        progress.close()

        last_epoch = epoch == config.epochs - 1
        if (epoch + 1) % config.eval.every_epochs == 0 or last_epoch:
            test_metrics = evaluate(state, data, predict, config, mesh)
            writer.write(step, test_metrics, prefix="test/")
            history.append({"epoch": epoch, **test_metrics})
        state = method.on_epoch_end(state, epoch, host)
        evaluated = bool(history) and history[-1]["epoch"] == epoch
        checkpointer.save(step, state, record_for(step),
                          metrics={checkpointing.BEST_METRIC: history[-1]["mAP"]} if evaluated else None)

    checkpointer.wait()
    checkpointer.close()
    writer.close()
    results = summarize(history)
    if process_index == 0:
        with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        print(format_results(results, config))
    return results


def _log_train_window(writer: MetricWriter, step: int, window: list[dict[str, jax.Array]],
                      elapsed: float) -> None:
    values = jax.device_get(window)
    means = {key: float(np.mean([v[key] for v in values])) for key in values[0]}
    if not np.isfinite(means["loss"]):
        raise FloatingPointError(f"non-finite training loss at step {step}: {means}")
    means["epoch_time_s"] = elapsed
    writer.write(step, means, prefix="train/")


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Last-epoch and best-epoch (by test mAP, as the reference selects) metrics."""
    if not history:
        return {"last": None, "best": None}
    best = max(history, key=lambda h: h["mAP"])
    return {"last": history[-1], "best": best}


def format_results(results: dict[str, Any], config: ml_collections.ConfigDict) -> str:
    """A small table of the headline metrics (percent)."""
    keys = ("mAP", "mAP_plain", "OF1", "CF1", "OF1_top3", "CF1_top3")
    header = (f"{config.method} on {config.data.name}, known_ratio={config.known_ratio}\n"
              f"{'':6s}{'epoch':>6s}" + "".join(f"{k:>10s}" for k in keys))
    rows = [header]
    for name in ("last", "best"):
        entry = results[name]
        if entry is not None:
            rows.append(f"{name:6s}{entry['epoch']:>6d}"
                        + "".join(f"{entry[k]:>10.2f}" for k in keys))
    return "\n".join(rows)
