"""Atomic, asynchronous checkpoints of the full train state with orbax.

A checkpoint holds the TrainState (parameters, BN statistics, optimiser state, method state,
step, RNG) and a JSON record (epoch, position in the epoch's batch order, best mAP so far,
the run's identity). The data iterator position is the step itself: the order of epoch e is
a function of (seed, e) only, so restoring the step restores the iterator exactly.
orbax writes into a temporary directory and renames it when complete (on gs://, which has no
rename, it writes a commit marker last instead), so a half-written checkpoint is never picked
up. We keep the latest `keep_last` and the best `keep_best` (by test mAP) checkpoints.
`directory` may be local or on gs:// (core/storage.py; orbax writes the arrays with tensorstore
and the rest through etils.epath).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from orbax.checkpoint._src.metadata import array_metadata_store
from orbax.checkpoint.checkpoint_managers import preservation_policy

from mlrpl_jax.core import fault_injection, storage

BEST_METRIC = "mAP"


# orbax warns at every save without metrics when a best checkpoint is tracked; epochs without
# evaluation are saved so on purpose (BestN keeps only the evaluated ones), so it says nothing.
_SAVE_WITHOUT_METRICS = "Requested `tracked_metric`; did not provide metrics."


class _DropSaveWithoutMetricsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _SAVE_WITHOUT_METRICS


absl_logging.get_absl_logger().addFilter(_DropSaveWithoutMetricsWarning())

# orbax writes a replicated array "replica-parallel" by default: one slice per device, each cut
# by an eager device op (a program compiled per shape the first time). For small arrays that is
# all overhead: the tests' tiny ResNet on 8 devices (395 arrays, a few kB each) took 2.2 s per
# save in ~2,400 slice ops (17 s for the first save, compiling them) against 0.5-0.9 s written
# whole from one replica. Per-replica slices under MIN_REPLICA_SLICE_BYTES are written whole
# from one replica (orbax's behaviour without replica-parallel); larger ones stay parallel.
# The default jax.Array handler is replaced with the same one (its metadata store) and this
# threshold; the files written and restored are the same zarr arrays either way.
MIN_REPLICA_SLICE_BYTES = 1 << 20
_absl_level = absl_logging.get_absl_logger().level
absl_logging.get_absl_logger().setLevel(logging.ERROR)  # orbax warns that it overrides
try:
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(
            array_metadata_store=array_metadata_store.Store(),
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        ),
        override=True,
    )
finally:
    absl_logging.get_absl_logger().setLevel(_absl_level)


class CheckpointMismatchError(ValueError):
    """The checkpoint in the workdir belongs to a different run configuration."""


class Checkpointer:
    def __init__(
        self, directory: str | os.PathLike, *, keep_last: int, keep_best: int, async_save: bool
    ):
        def best_metric(metrics: dict[str, float]) -> float:
            return metrics[BEST_METRIC]

        policies = [preservation_policy.LatestN(n=keep_last)]
        if keep_best > 0:
            policies.append(
                preservation_policy.BestN(
                    get_metric_fn=best_metric,
                    reverse=False,
                    n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            best_fn=best_metric,
            best_mode="max",
            preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(storage.absolute(directory), options=options)

    @property
    def directory(self) -> str:
        return str(self._manager.directory)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(
        self, step: int, state: Any, record: dict[str, Any], metrics: dict[str, float] | None = None
    ) -> None:
        """Starts saving `state` at `step` (returns before the write completes when async)."""
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)
            ),
            metrics=metrics,
            force=True,
        )
        fault_injection.signal_if_requested("save", step)

    def restore(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restores the state at `step` with the structure, shapes and shardings of `target`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError) as error:
            raise CheckpointMismatchError(
                f"checkpoint at step {step} in {self._manager.directory} does not match this "
                f"run's state (different method, dataset or model size?): {error}. Use a new "
                "--workdir or the config the checkpoint was written with."
            ) from error
        return restored.state, restored.record

    def read_record(self, step: int) -> dict[str, Any]:
        return self._manager.restore(
            step, args=ocp.args.Composite(record=ocp.args.JsonRestore())
        ).record

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()
