"""Scalar logs: stdout (absl), `metrics.jsonl` and TensorBoard event files in the workdir.

Only process 0 writes; other processes get a writer that does nothing. The workdir may be
local or on gs:// (core/storage.py): both files go through etils.epath, and on gs:// each is
uploaded whole at every flush (tensorboardX's own gs:// writer is replaced by that one, so one
client and one set of credentials serve the whole run).
"""

from __future__ import annotations

import time
from typing import Mapping

import jax
from absl import logging
from etils import epath

from mlrpl_jax.core import storage


class MetricWriter:
    def __init__(self, workdir: str):
        self._enabled = jax.process_index() == 0
        if not self._enabled:
            return
        workdir_path = epath.Path(workdir)
        self._jsonl = storage.JsonLinesLog(workdir_path / "metrics.jsonl")
        # Imported here: tensorboardX imports torch whenever it is installed (≈180 MB, 1.3 s),
        # which processes that never log (benchmarks, other hosts) need not pay.
        from tensorboardX import SummaryWriter, record_writer

        record_writer.register_writer_factory("gs", _WholeObjectEventFiles())
        self._tensorboard = SummaryWriter(str(workdir_path / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        if not self._enabled:
            return
        values = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
        logging.info(
            "step %d: %s", step, ", ".join(f"{k}={v:.5g}" for k, v in sorted(values.items()))
        )
        self._jsonl.append({"step": step, "time": time.time(), **values})
        for key, value in values.items():
            self._tensorboard.add_scalar(key, value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tensorboard.close()


class _WholeObjectEventFiles:
    """tensorboardX's writer factory interface for gs:// event files, through etils.epath."""

    def open(self, path: str) -> storage.WholeObjectWriter:
        return storage.WholeObjectWriter(epath.Path(path))

    def directory_check(self, path: str) -> None:
        del path  # object stores have no directories to create
