"""Timing a stream of host batches: how fast the input pipeline delivers images.

Used by the host acceptance check (core/host_acceptance.py) and benchmarks/input_pipeline.py
(docs/dry_run.md, "Input pipeline at paper scale").
"""

from __future__ import annotations

import time
from collections.abc import Iterable


def timed_pass(batches: Iterable[dict], limit: int) -> tuple[float, float, int, float]:
    """(seconds to the first batch, images/s after it, images, this process's CPU ms per image
    after it) over up to `limit` batches; the first batch (pipeline start-up) is not timed."""
    start = time.perf_counter()
    first, first_cpu, images = None, None, 0
    for count, batch in enumerate(batches, start=1):
        if first is None:
            first, first_cpu = time.perf_counter(), time.process_time()
        else:
            images += len(batch["image"])
        if count == limit:
            break
    elapsed, cpu = time.perf_counter() - first, time.process_time() - first_cpu
    nan = float("nan")
    return (first - start, images / elapsed if elapsed > 0 else nan, images,
            1000 * cpu / images if images else nan)
