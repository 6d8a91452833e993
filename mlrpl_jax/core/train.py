"""Training and evaluation loop: build everything from the config, train, evaluate, checkpoint.

One jitted train step over the device mesh (state replicated and donated, batch sharded)
and one jitted inference step; the loop knows nothing about any particular method
(methods/base.py). Running the same config again in the same workdir resumes from the
latest checkpoint and continues exactly where the run stopped.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from absl import logging
from etils import epath

from mlrpl_jax import logicmix
from mlrpl_jax.config import validate_config
from mlrpl_jax.core import (
    checkpointing,
    fault_injection,
    feature_cache,
    host_memory,
    metrics,
    model_ema,
    optim,
    parallel,
    run_inputs,
    storage,
)
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.core.metric_writer import MetricWriter
from mlrpl_jax.core.train_state import TrainState, split_params
from mlrpl_jax.data import label_embeddings, label_graph
from mlrpl_jax.data.pipeline import PartialLabelData, resolve_num_workers
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.base import PARTIAL_LABELS, LossAux, Method, StepContext
from mlrpl_jax.models.pretrained import with_pretrained_backbone

TrainStep = Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]

# Side of the images the model is initialised with (or the configured side, if smaller). No
# parameter depends on the spatial size (the backbones pool globally, semantic decoupling
# attends over positions; tests/test_training.py checks it), so a small side gives the same
# variables without running the initialisation's forward at full resolution. With the
# feature cache the model starts at the backbone's map, initialised at its real shape.
INIT_IMAGE_SIZE = 64


def build_method(config: ml_collections.ConfigDict, data: PartialLabelData) -> Method:
    """The configured method, with its label graph (§3.1) and label embeddings (§3.2)."""
    info = data.info
    empty = label_graph.classes_without_known_positive(info.train_partial_labels)
    if len(empty):
        names = [info.spec.class_names[c] for c in empty]
        logging.warning(
            "classes without any known positive at known_ratio=%s: %s; their label-"
            "graph rows are set to 0 (docs/methods/reference_defects.md §12)",
            config.known_ratio,
            names,
        )
    adjacency = label_graph.label_adjacency(info.train_partial_labels)
    embeddings = label_embeddings.build_label_embeddings(
        config.embeddings.kind,
        info.spec.class_names,
        path=config.embeddings.path or None,
        dim=config.embeddings.dim,
        seed=config.seed,
    )
    method = get_method_class(config.method)(config, info, embeddings, adjacency)
    method.check_training_labels()
    return method


def create_train_state(
    method: Method, optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict
) -> TrainState:
    """Fresh state on the host: initialised model, optional ImageNet backbone, optimiser."""
    size = min(config.data.image_size, INIT_IMAGE_SIZE)
    input_shape = (size, size, 3)
    if config.data.feature_cache:
        input_shape = feature_cache.model_input_shape(config)
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = jax.jit(method.init_variables, static_argnums=1)(init_key, (1, *input_shape))
    variables = jax.device_get(variables)
    if config.model.pretrained and not config.data.feature_cache:
        variables = with_pretrained_backbone(
            variables, config.model.pretrained, config.model.depth, config.model.backbone
        )
    params, frozen = split_params(
        variables["params"], config.model.freeze_early_stages, config.model.backbone
    )
    batch_stats = variables.get("batch_stats", {})
    return TrainState(
        step=np.zeros((), np.int32),
        params=params,
        frozen_params=frozen,
        batch_stats=batch_stats,
        opt_state=jax.device_get(optimizer.init(params)),
        method_state=jax.device_get(method.init_method_state()),
        rng=np.asarray(jax.device_get(state_key)),
        ema=model_ema.initial_ema(params, batch_stats, config.ema.decay),
    )


def place_state(state: TrainState, mesh: jax.sharding.Mesh) -> TrainState:
    """The host state replicated over `mesh`, then the heap memory freed by then (the
    initialisation's compiler memory; the host copies, if the caller holds no other reference)
    given back to the operating system (core/host_memory.py)."""
    state = parallel.replicate(state, mesh)
    host_memory.release_freed_heap()
    return state


# The batch key of the hidden complete labels (data/pipeline.py), which no loss may read.
HIDDEN_LABELS = "complete_labels"


def make_train_step(
    method: Method, optimizer: optax.GradientTransformationExtraArgs, steps_per_epoch: int
) -> TrainStep:
    """The (un-jitted) step: forward, loss, gradients, optimiser update, method-state update.

    A step whose loss or gradient norm is not finite keeps the previous parameters, optimiser,
    BN and method state (only the step counter advances) and reports `skipped_update` = 1, so
    non-finite values never reach the state; the loop decides on the host, at logging and
    checkpoint time, whether to stop or go on (config.train.on_nonfinite). An applied step also
    moves the model EMA, when the run keeps one (core/model_ema.py, config.ema.decay). The
    batch's labels are first replaced by the method's training labels (`training_batch`); with
    config.logicmix.probability > 0 the loss then sees the LogicMix batch (mlrpl_jax/logicmix.py).
    """
    ema_decay = method.config.ema.decay
    mix = logicmix.batch_mixer(method.config.logicmix)

    def train_step(state: TrainState, batch: dict[str, jax.Array]):
        epoch = state.step // steps_per_epoch
        ctx = StepContext(
            epoch=epoch,
            step_in_epoch=state.step % steps_per_epoch,
            rng=jax.random.fold_in(state.rng, state.step),
            steps_per_epoch=steps_per_epoch,
        )
        batch, mix_scalars = mix(training_batch(method, state.method_state, batch), ctx.rng)
        loss, aux, grads = loss_gradients_and_diagnostics(method, state, batch, ctx)
        updates, opt_state = optimizer.update(
            grads, state.opt_state, state.params, active=method.active_params(state.params, epoch)
        )
        params = method.project_params(optax.apply_updates(state.params, updates))
        updated = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            batch_stats=aux.batch_stats,
            method_state=aux.method_state,
            ema=model_ema.updated_ema(state.ema, params, aux.batch_stats, ema_decay),
        )
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            updated,
            state.replace(step=state.step + 1),
        )
        scalars = {
            "loss": loss,
            "grad_norm": grad_norm,
            **aux.metrics,
            **mix_scalars,
            "skipped_update": 1.0 - finite.astype(jnp.float32),
        }
        return new_state, scalars

    return train_step


def without_hidden_labels(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {key: value for key, value in batch.items() if key != HIDDEN_LABELS}


def training_batch(
    method: Method, method_state: Any, batch: dict[str, jax.Array]
) -> dict[str, jax.Array]:
    """`batch` with its 'labels' replaced by `method.training_labels` (computed without the
    hidden labels) and its partial labels kept under PARTIAL_LABELS: the batch LogicMix mixes
    and the loss trains on."""
    labels = method.training_labels(without_hidden_labels(batch), method_state)
    return {**batch, PARTIAL_LABELS: batch["labels"], "labels": labels}


def loss_gradients_and_diagnostics(
    method: Method, state: TrainState, batch: dict[str, jax.Array], ctx: StepContext
) -> tuple[jax.Array, LossAux, Any]:
    """The method's loss, aux and gradients with respect to `state.params` on `batch` (a
    `training_batch`, mixed or not).

    The loss sees the batch without its hidden 'complete_labels' (B, C); they go only to the
    method's diagnostics hook, after the gradient, whose scalars join `aux.metrics` and whose
    method state replaces `aux.method_state`. A method whose loss reads the model EMA
    (`Method.model_ema_in_loss`) finds the EMA's variables in `ctx.ema_variables`.
    """
    seen = without_hidden_labels(batch)
    if method.model_ema_in_loss(method.config):
        ctx = ctx.replace(ema_variables=state.ema_variables())

    def loss_fn(params):
        return method.loss(state.variables(params), state.method_state, seen, ctx)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    scalars, method_state = method.diagnostics(
        aux.diagnostic_inputs, aux.method_state, seen, batch[HIDDEN_LABELS], ctx
    )
    aux = aux.replace(
        method_state=method_state, metrics={**aux.metrics, **scalars}, diagnostic_inputs={}
    )
    return loss, aux, grads


def jit_train_step(train_step: TrainStep, mesh: jax.sharding.Mesh) -> TrainStep:
    repl = parallel.replicated(mesh)
    return jax.jit(
        train_step,
        in_shardings=(repl, parallel.batch_sharded(mesh)),
        out_shardings=(repl, repl),
        donate_argnums=(0,),
    )


class CompiledOnFirstCall:
    """A jitted train step compiled ahead for the (state, batch) of its first call, after which
    the heap the compiler freed goes back to the operating system before the step allocates its
    buffers (core/host_memory.py): at the paper configuration the process's peak is ≈0.5 GB lower
    (docs/performance.md). A later call with other shapes raises instead of recompiling."""

    def __init__(self, jitted: TrainStep):
        self._jitted = jitted
        self._compiled: TrainStep | None = None

    def __call__(
        self, state: TrainState, batch: dict[str, jax.Array]
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        if self._compiled is None:
            self._compiled = self._jitted.lower(state, batch).compile()
            host_memory.release_freed_heap()
        return self._compiled(state, batch)


def jit_predict(
    method: Method, mesh: jax.sharding.Mesh
) -> Callable[[TrainState, jax.Array], jax.Array]:
    def predict(state: TrainState, images: jax.Array) -> jax.Array:
        return method.predict(state.evaluated_variables(), state.method_state, images)

    return jax.jit(
        predict,
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
        out_shardings=parallel.batch_sharded(mesh),
    )


def evaluate(
    state: TrainState,
    data: PartialLabelData,
    predict,
    config: ml_collections.ConfigDict,
    mesh: jax.sharding.Mesh,
) -> dict[str, float]:
    """Metrics of docs/methods/evaluation.md §11 over every test image (padding is cut off before scoring)."""
    batch_size = config.eval.batch_size or config.batch_size
    batch_logits = []
    for batch in data.eval_batches(
        batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    ):
        batch_logits.append(
            predict(state, parallel.to_global({"image": batch["image"]}, mesh)["image"])
        )
        fault_injection.signal_if_requested("eval", state.step)
    num_test = data.info.num_test
    if config.eval.drop_last:
        num_test = num_test // batch_size * batch_size
    scores = np.concatenate([parallel.gather_to_host(x) for x in batch_logits])[:num_test]
    return metrics.evaluate_scores(
        scores, data.info.test_labels[:num_test], ignore_zero_targets=config.eval.ignore_zero_labels
    )


def check_workdir(workdir: str) -> None:
    """Creates `workdir` (local or gs://) and writes and deletes a file there, or raises
    PermissionError naming it."""
    try:
        directory = epath.Path(workdir)
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write_probe_{jax.process_index()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"workdir {workdir!r} is not writable "
            f"({error.strerror or error}); choose another --workdir"
        ) from None


def run_identity(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that restores it."""
    sections = sorted(get_method_class(config.method).config_sections(config))
    identity = {
        "method": config.method,
        "method_sections": sections,
        "dataset": config.data.name,
        "num_classes": num_classes,
        "depth": config.model.depth,
        "width": config.model.width,
        "feature_dim": config.model.feature_dim,
    }
    if config.model.backbone != "resnet":  # absent for ResNet, so older checkpoints still resume
        identity["backbone"] = config.model.backbone
    if config.data.feature_cache:  # a head without backbone variables
        identity["feature_cache"] = True
    if config.ema.decay > 0.0:  # absent without an EMA, so older checkpoints still resume
        identity["ema_decay"] = config.ema.decay
    return identity


def open_data(config: ml_collections.ConfigDict) -> PartialLabelData:
    """The prepared dataset of `config` with its partial labels (data/pipeline.py), serving the
    cached backbone maps (computed on first use) with data.feature_cache."""
    data = PartialLabelData(
        dataset=config.data.name,
        data_dir=run_inputs.data_dir(config),
        image_size=config.data.image_size,
        known_ratio=config.known_ratio,
        seed=config.seed,
        num_workers=resolve_num_workers(config.data.num_workers, jax.default_backend()),
        augmentation=config.data.train_augmentation,
        label_drop=config.data.label_drop,
        labels_per_category=config.data.labels_per_category,
    )
    if config.data.feature_cache:
        data.use_feature_maps(
            feature_cache.feature_maps(
                config,
                data.builder_dir,
                lambda split, batch_size: data.eval_batches(batch_size, split=split),
                {"train": data.info.num_train, "test": data.info.num_test},
            )
        )
    return data


def build_run(
    config: ml_collections.ConfigDict, data: PartialLabelData, mesh: jax.sharding.Mesh
) -> tuple[Method, optax.GradientTransformation, TrainState]:
    """The method, optimiser and initial state (replicated over `mesh`) of a run of `config`:
    what a checkpoint of that run restores into."""
    method = build_method(config, data)
    optimizer = optim.build_optimizer(config.optim, data.steps_per_epoch(config.batch_size))
    return method, optimizer, place_state(create_train_state(method, optimizer, config), mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the results."""
    validate_config(config)
    run_inputs.check_run_inputs(config)
    check_workdir(workdir)
    mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    eval_batch_size = config.eval.batch_size or config.batch_size
    parallel.check_batch_size(eval_batch_size, mesh, what="eval.batch_size")
    process_index, process_count = jax.process_index(), jax.process_count()

    data = open_data(config)
    checkpointer = checkpointing.Checkpointer(
        epath.Path(workdir) / "checkpoints",
        keep_last=config.checkpoint.keep_last,
        keep_best=config.checkpoint.keep_best,
        async_save=config.checkpoint.async_save,
    )
    identity = run_identity(config, data.info.num_classes)
    latest = checkpointer.latest_step()
    try:
        # The run identity before anything is built: a checkpoint of another run fails at once
        # with one readable line, not after the model's initialisation with a mismatch of every
        # array.
        if latest is not None:
            written_by = checkpointer.read_record(latest)["run"]
            if written_by != identity:
                raise checkpointing.CheckpointMismatchError(
                    f"the checkpoint in {workdir} was written by run {written_by}, this run is "
                    f"{identity}; use a new --workdir or the original config"
                )
        method, optimizer, state = build_run(config, data, mesh)
    except BaseException:
        checkpointer.close()
        raise
    steps_per_epoch = data.steps_per_epoch(config.batch_size)

    writer = MetricWriter(workdir)
    history: list[dict[str, Any]] = []
    if latest is not None:
        state, record = checkpointer.restore(latest, state)
        history = record["history"]
        logging.info("resumed from step %d (epoch %d)", latest, latest // steps_per_epoch)

    host = HostContext.on_mesh(data, mesh, config.batch_size, log=writer.write)
    train_step = CompiledOnFirstCall(
        jit_train_step(make_train_step(method, optimizer, steps_per_epoch), mesh)
    )
    predict = jit_predict(method, mesh)
    show_progress = config.logging.progress_bar and process_index == 0 and sys.stderr.isatty()

    def record_for(step: int) -> dict[str, Any]:
        return {
            "run": identity,
            "step": step,
            "epoch": step // steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch,
            "history": history,
            "config": config.to_json(),
        }

    preemption = PreemptionNotice()
    try:
        step = int(jax.device_get(state.step))
        for epoch in range(step // steps_per_epoch, config.epochs):
            start_step = step - epoch * steps_per_epoch
            if start_step == 0:
                state = method.on_epoch_start(state, epoch, host)
            window: list[dict[str, jax.Array]] = []
            epoch_start = time.time()
            batches = data.train_batches(
                epoch,
                config.batch_size,
                start_step=start_step,
                process_index=process_index,
                process_count=process_count,
            )
            progress = tqdm.tqdm(
                total=steps_per_epoch,
                initial=start_step,
                disable=not show_progress,
                desc=f"epoch {epoch}",
                leave=False,
            )
            for batch in batches:
                state, scalars = train_step(state, host.to_global(batch))
                window.append(scalars)
                step += 1
                fault_injection.signal_if_requested("step", step)
                progress.update(1)
                if len(window) == config.logging.every_steps or step % steps_per_epoch == 0:
                    _log_train_window(
                        writer, step, window, time.time() - epoch_start, config.train.on_nonfinite
                    )
                    window = []
                if (
                    config.checkpoint.every_steps
                    and step % config.checkpoint.every_steps == 0
                    and step % steps_per_epoch
                ):
                    _check_nonfinite(jax.device_get(window), step, config.train.on_nonfinite)
                    checkpointer.save(step, state, record_for(step))
                if preemption.received and step % steps_per_epoch:
                    _check_nonfinite(jax.device_get(window), step, config.train.on_nonfinite)
                    preemption.checkpoint_and_exit(checkpointer, step, state, record_for(step))
            progress.close()

            last_epoch = epoch == config.epochs - 1
            if (epoch + 1) % config.eval.every_epochs == 0 or last_epoch:
                test_metrics = evaluate(state, data, predict, config, mesh)
                writer.write(
                    step,
                    {k: v for k, v in test_metrics.items() if k != metrics.PER_CLASS_AP},
                    prefix="test/",
                )
                history.append({"epoch": epoch, **test_metrics})
            state = method.on_epoch_end(state, epoch, host)
            evaluated = bool(history) and history[-1]["epoch"] == epoch
            best_metric = {checkpointing.BEST_METRIC: history[-1]["mAP"]} if evaluated else None
            checkpointer.save(step, state, record_for(step), metrics=best_metric)
            if preemption.received:
                preemption.checkpoint_and_exit(checkpointer, step, state, record_for(step))
    finally:
        preemption.restore_handler()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    results = {**summarize(history), "evaluated_weights": model_ema.evaluated_weights(config)}
    if process_index == 0:
        storage.write_json(epath.Path(workdir) / "results.json", results)
    return results


class PreemptionNotice:
    """SIGTERM (how schedulers announce preemption) as a flag the loop checks between steps.

    On the main thread only (Python delivers signals there); `checkpoint_and_exit` writes a
    synchronous checkpoint of the current step and exits with status 143 (128 + SIGTERM).
    """

    def __init__(self):
        self.received = False
        self._previous_handler = None
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        del signum, frame
        self.received = True

    def restore_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def checkpoint_and_exit(
        self,
        checkpointer: checkpointing.Checkpointer,
        step: int,
        state: TrainState,
        record: dict[str, Any],
    ) -> None:
        if checkpointer.latest_step() != step:
            checkpointer.save(step, state, record)
        checkpointer.wait()
        checkpointer.close()
        self.restore_handler()
        logging.warning(
            "SIGTERM received: saved the checkpoint of step %d in %s and stopped; run "
            "the same command again to resume",
            step,
            checkpointer.directory,
        )
        sys.exit(128 + signal.SIGTERM)


def _check_nonfinite(
    values: list[dict[str, np.ndarray]], last_step: int, on_nonfinite: str
) -> list[int]:
    """Steps of the window ending at `last_step` whose update was skipped as non-finite.

    With on_nonfinite='stop', raises FloatingPointError naming the first such step and its
    non-finite terms (the method's loss terms are logged in LossAux.metrics).
    """
    first_step = last_step - len(values) + 1
    skipped = [first_step + k for k, v in enumerate(values) if v["skipped_update"]]
    if skipped and on_nonfinite == "stop":
        bad = values[skipped[0] - first_step]
        headline_first = sorted(bad, key=lambda key: ({"loss": 0, "grad_norm": 1}.get(key, 2), key))
        terms = ", ".join(
            f"{key}={float(bad[key])}"
            for key in headline_first
            if key != "skipped_update" and not np.isfinite(bad[key])
        )
        raise FloatingPointError(
            f"non-finite loss or gradients at training step {skipped[0]}: {terms}. That update "
            "was not applied and no checkpoint holds it. Lower optim.lr or check the inputs; "
            "--config.train.on_nonfinite=skip skips such steps instead of stopping."
        )
    return skipped


def _log_train_window(
    writer: MetricWriter,
    step: int,
    window: list[dict[str, jax.Array]],
    elapsed: float,
    on_nonfinite: str,
) -> None:
    """Logs the means over the applied steps of the window and the number of skipped ones."""
    values = jax.device_get(window)
    skipped = _check_nonfinite(values, step, on_nonfinite)
    if skipped:
        logging.warning(
            "non-finite loss or gradients at steps %s: updates skipped (train.on_nonfinite='skip')",
            skipped,
        )
    applied = [v for v in values if not v["skipped_update"]]
    means = {
        key: float(np.mean([v[key] for v in applied]))
        for key in (applied[0] if applied else {})
        if key != "skipped_update"
    }
    means["skipped_updates"] = float(len(skipped))
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
    labels = f"known_ratio={config.known_ratio}"
    if config.data.label_drop != "elementwise":
        labels = f"label_drop={config.data.label_drop}"
    if config.data.label_drop == "per_category":
        labels += f", labels_per_category={config.data.labels_per_category}"
    header = f"{config.method} on {config.data.name}, {labels}\n{'':6s}{'epoch':>6s}" + "".join(
        f"{k:>10s}" for k in keys
    )
    rows = [header]
    for name in ("last", "best"):
        entry = results[name]
        if entry is not None:
            rows.append(
                f"{name:6s}{entry['epoch']:>6d}" + "".join(f"{entry[k]:>10.2f}" for k in keys)
            )
    return "\n".join(rows)
