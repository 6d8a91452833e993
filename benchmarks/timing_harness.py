"""What the speed scripts of benchmarks/ share: timing a call after warm-up, the conditions a
measurement was made in, and appending its JSON line to a results file.

The scripts import it as a sibling module (`python benchmarks/<script>.py` puts benchmarks/ on
the path; pytest's `pythonpath` does for tests). It imports no JAX or torch: a JAX call passed to
`timed_calls` waits for its own result (jax.block_until_ready).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import time
from typing import Any, Callable

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def results_path(file_name: str) -> str:
    """benchmarks/results/<file_name>, the default --output of a script."""
    return os.path.join(RESULTS_DIR, file_name)


def timed_calls(fn: Callable[[], Any], calls: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `calls` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def cpu_threads() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages (the first fields of /proc/loadavg)."""
    return list(os.getloadavg())


@functools.cache
def cpu_has_amx() -> bool:
    """Whether the CPU has AMX matrix units (amx_* in /proc/cpuinfo's flags); they change
    XLA's CPU matrix products and convolutions severalfold, so every line records it."""
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return "amx" in f.read()


def conditions(load_average_before: list[float]) -> dict[str, Any]:
    """The fields every JSON line carries: AMX presence and the load average before the
    measurement (`load_average()` taken then) and now."""
    return {
        "cpu_amx": cpu_has_amx(),
        "load_average_before": load_average_before,
        "load_average_after": load_average(),
    }


def append_line(path: str, line: dict[str, Any]) -> str:
    """Appends `line` to the JSON-lines file `path` (its folder made if missing); returns the
    line's JSON text."""
    text = json.dumps(line)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text + "\n")
    return text
