"""Category-wise fine-tuning (CFT) of a finished run: re-fits each class's classifier on the known
training labels and writes the test metrics before and after (docs/methods/cft.md).

    python -m mlrpl_jax.tools.category_finetune --workdir=workdirs/demo

Reads the run's latest checkpoint (never writes to it) and writes <workdir>/cft/results.json
(--output_dir to choose), with the full test-set metrics of mlrpl_jax.core.metrics for the
checkpoint ('before') and the re-fitted classifier ('after') and each class's holdout AP, and
<output_dir>/classifier.npz (the re-fitted kernel (C, D) and bias (C,)).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax
import jax
import numpy as np
from absl import app, flags
from etils import epath

from mlrpl_jax import category_finetune as cft
from mlrpl_jax import cli
from mlrpl_jax.config import config_from_record
from mlrpl_jax.core import checkpointing, parallel, storage, train

DEFAULT_HOLDOUT_FRACTION = 0.2
# The classifier inputs of every training image stay in host memory during the fit.
DEFAULT_MAX_FEATURE_GIB = 32.0


class NoCheckpointError(FileNotFoundError):
    """The workdir holds no checkpoint of a finished run."""


def finished_run(workdir: str) -> tuple[checkpointing.Checkpointer, int, Any]:
    """(checkpointer, latest step, config) of the finished run in `workdir`, or
    NoCheckpointError saying what is missing."""
    directory = epath.Path(workdir) / "checkpoints"
    if not directory.exists():
        raise NoCheckpointError(
            f"no checkpoint in {workdir!r} (no {directory}): CFT re-fits a "
            "trained run; train it first with python -m mlrpl_jax.main"
        )
    checkpointer = checkpointing.Checkpointer(directory, keep_last=1, keep_best=0, async_save=False)
    step = checkpointer.latest_step()
    if step is None:
        checkpointer.close()
        raise NoCheckpointError(
            f"{directory} holds no complete checkpoint; train the run first "
            "with python -m mlrpl_jax.main"
        )
    record = checkpointer.read_record(step)
    config = config_from_record(json.loads(record["config"]))
    if record["epoch"] < config.epochs or record["step_in_epoch"]:
        checkpointer.close()
        raise NoCheckpointError(
            f"the run in {workdir!r} stopped at epoch {record['epoch']} (step {step}) of "
            f"{config.epochs}; finish it by running its training command again, then CFT"
        )
    return checkpointer, step, config


def classifier_inputs_of_split(
    method, state, data, config, mesh, split: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The inference-mode classifier inputs o (N, C, D) of every image of `split`, unaugmented,
    and the classifier's module path."""
    paths: list[tuple[str, ...]] = []

    def forward(state, images):
        _, inputs, path = cft.classifier_inputs(
            lambda: method.predict(state.variables(), state.method_state, images)
        )
        paths.append(path)
        return inputs

    jitted = jax.jit(
        forward,
        in_shardings=(parallel.replicated(mesh), parallel.batch_sharded(mesh)),
        out_shardings=parallel.batch_sharded(mesh),
    )
    batch_size = config.eval.batch_size or config.batch_size
    chunks = [
        parallel.gather_to_host(
            jitted(state, parallel.to_global({"image": b["image"]}, mesh)["image"])
        )
        for b in data.eval_batches(
            batch_size,
            split=split,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    ]
    num_rows = data.info.num_train if split == "train" else data.info.num_test
    return np.concatenate(chunks)[:num_rows].astype(np.float32), paths[0]


def with_classifier(
    params: Any, path: tuple[str, ...], kernel: np.ndarray, bias: np.ndarray
) -> Any:
    """`params` with the classifier at module `path` replaced."""
    flat = flax.traverse_util.flatten_dict(params)
    for name, value in (("kernel", kernel), ("bias", bias)):
        key = path + (name,)
        if key not in flat:
            raise KeyError(f"no trainable parameter {'/'.join(key)} in the checkpoint")
        flat[key] = jax.numpy.asarray(value, flat[key].dtype)
    return flax.traverse_util.unflatten_dict(flat)


def category_finetune(
    workdir: str,
    *,
    output_dir: str = "",
    data_dir: str = "",
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    options: cft.FitOptions = cft.FitOptions(),
    max_feature_gib: float = DEFAULT_MAX_FEATURE_GIB,
) -> dict[str, Any]:
    """CFT of the finished run in `workdir`; writes and returns the results (module docstring)."""
    checkpointer, step, config = finished_run(workdir)
    try:
        output = epath.Path(output_dir or epath.Path(workdir) / "cft")
        if data_dir:
            config.data.data_dir = data_dir
        mesh = parallel.create_mesh()
        data = train.open_data(config)
        held = cft.holdout_rows(data.info.num_train, holdout_fraction, config.seed)  # (N,) bool
        feature_gib = (
            data.info.num_train * data.info.num_classes * config.model.output_dim * 4 / 2**30
        )
        if feature_gib > max_feature_gib:
            raise MemoryError(
                f"CFT keeps the classifier inputs of the {data.info.num_train} "
                f"training images in memory: {feature_gib:.1f} GiB > "
                f"--max_feature_gib={max_feature_gib}; raise it on a host with that "
                "much memory"
            )
        method, _, template = train.build_run(config, data, mesh)
        state, _ = checkpointer.restore(step, template)
    finally:
        checkpointer.close()

    inputs, path = classifier_inputs_of_split(method, state, data, config, mesh, "train")
    labels = data.info.train_partial_labels.astype(np.float32)  # (N, C)
    flat = flax.traverse_util.flatten_dict(jax.device_get(state.params))
    fit = cft.fit_heads(
        flat[path + ("kernel",)],
        flat[path + ("bias",)],
        inputs[~held],
        labels[~held],
        inputs[held],
        labels[held],
        options,
    )
    refitted = state.replace(
        params=parallel.replicate(
            with_classifier(jax.device_get(state.params), path, fit.kernel, fit.bias), mesh
        )
    )

    predict = train.jit_predict(method, mesh)
    results = {
        "checkpoint_step": step,
        "holdout_fraction": holdout_fraction,
        "options": dataclasses.asdict(options),
        "steps_run": fit.steps_run,
        "before": train.evaluate(state, data, predict, config, mesh),
        "after": train.evaluate(refitted, data, predict, config, mesh),
        "classes": class_reports(fit, data.info.spec.class_names),
    }
    if jax.process_index() == 0:
        output.mkdir(parents=True, exist_ok=True)
        with (output / "classifier.npz").open("wb") as f:
            np.savez(f, kernel=fit.kernel, bias=fit.bias)
        storage.write_json(output / "results.json", results)
    return results


def class_reports(fit: cft.FitResult, class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per class: fitted or not, holdout AP before and after (percent; None if unfitted), and
    the step of the kept head (0: the checkpoint's)."""

    def percent(value):
        return None if np.isnan(value) else 100.0 * float(value)

    return [
        {
            "name": name,
            "fitted": bool(fit.fitted[c]),
            "holdout_ap_before": percent(fit.holdout_ap_before[c]),
            "holdout_ap_after": percent(fit.holdout_ap_after[c]),
            "best_step": int(fit.best_step[c]),
        }
        for c, name in enumerate(class_names)
    ]


def define_flags() -> None:
    """The command line's flags (defined only when this module runs as a program)."""
    defaults = cft.FitOptions()
    flags.DEFINE_string("workdir", None, "Workdir of a finished run (python -m mlrpl_jax.main).")
    flags.DEFINE_string(
        "output_dir", "", "Where to write results.json and classifier.npz (default <workdir>/cft)."
    )
    flags.DEFINE_string(
        "data_dir", "", "The prepared dataset's data_dir, if it moved since the run."
    )
    flags.DEFINE_float(
        "holdout_fraction",
        DEFAULT_HOLDOUT_FRACTION,
        "Share of the training "
        "images whose known labels select each class's head instead of fitting it.",
    )
    flags.DEFINE_integer("steps", defaults.steps, "Full-batch Adam steps at most.")
    flags.DEFINE_integer(
        "patience", defaults.patience, "Steps without a better holdout AP before a class stops."
    )
    flags.DEFINE_float("learning_rate", defaults.learning_rate, "Adam's learning rate.")
    flags.DEFINE_float(
        "max_feature_gib",
        DEFAULT_MAX_FEATURE_GIB,
        "Largest host memory for the training images' classifier inputs.",
    )
    flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    cli.quiet_unless_asked()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    options = cft.FitOptions(
        steps=values.steps, patience=values.patience, learning_rate=values.learning_rate
    )
    try:
        results = category_finetune(
            values.workdir,
            output_dir=values.output_dir,
            data_dir=values.data_dir,
            holdout_fraction=values.holdout_fraction,
            options=options,
            max_feature_gib=values.max_feature_gib,
        )
    except (NoCheckpointError, MemoryError, ValueError) as error:
        raise app.UsageError(str(error)) from None
    if jax.process_index() == 0:
        print(
            f"test mAP {results['before']['mAP']:.2f} -> {results['after']['mAP']:.2f} "
            f"(mAP_plain {results['before']['mAP_plain']:.2f} -> "
            f"{results['after']['mAP_plain']:.2f}); results in "
            f"{values.output_dir or epath.Path(values.workdir) / 'cft'}"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
