"""A finished (or checkpointed) run restored from its workdir, for the scripts that read one.

The run's config comes from its latest checkpoint's record, so a script needs only the workdir.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from mlrpl_jax.config import config_from_record
from mlrpl_jax.core import checkpointing, parallel, train
from mlrpl_jax.core.train_state import TrainState
from mlrpl_jax.data.pipeline import PartialLabelData
from mlrpl_jax.methods.base import Method


@dataclasses.dataclass
class FinishedRun:
    """The run's config, data, method and state at checkpoint `step` (its `record`)."""

    config: ml_collections.ConfigDict
    data: PartialLabelData
    method: Method
    state: TrainState
    mesh: jax.sharding.Mesh
    step: int
    record: dict[str, Any]


def restore(
    run_dir: str,
    check: Callable[[ml_collections.ConfigDict], None] | None = None,
    step: int | None = None,
) -> FinishedRun:
    """Checkpoint `step` (default: the latest) of the run in `run_dir` with its config, data and
    method; `check` sees the config first and raises if the script cannot read such a run
    (before anything is built)."""
    checkpointer = checkpointing.Checkpointer(
        os.path.join(run_dir, "checkpoints"), keep_last=1, keep_best=0, async_save=False
    )
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(
                f"no checkpoint in {run_dir}/checkpoints; pass the workdir of a run"
            )
        record = checkpointer.read_record(step)
        config = config_from_record(json.loads(record["config"]))
        if check is not None:
            try:
                check(config)
            except ValueError as error:
                raise ValueError(f"{run_dir}: {error}") from error
        mesh = parallel.create_mesh()
        data = train.open_data(config)
        method, _, state = train.build_run(config, data, mesh)
        state, _ = checkpointer.restore(step, state)
    finally:
        checkpointer.close()
    return FinishedRun(config, data, method, state, mesh, step, record)
