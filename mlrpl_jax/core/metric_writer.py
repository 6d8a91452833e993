"""Scalar logs: stdout (absl), `metrics.jsonl` and TensorBoard event files in the workdir.

Only process 0 writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax
from absl import logging


class MetricWriter:
    def __init__(self, workdir: str):
        self._enabled = jax.process_index() == 0
        if not self._enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        # Imported here: tensorboardX imports torch whenever it is installed (≈180 MB, 1.3 s),
        # which processes that never log (benchmarks, other hosts) need not pay.
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float], prefix: str = "") -> None:
        if not self._enabled:
            return
        values = {f"{prefix}{k}": float(v) for k, v in scalars.items()}
        logging.info("step %d: %s", step,
                     ", ".join(f"{k}={v:.5g}" for k, v in sorted(values.items())))
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            self._tensorboard.add_scalar(key, value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._enabled:
            self._jsonl.close()
            self._tensorboard.close()
