"""Handing heap memory that XLA's compiler has freed back to the operating system."""

from __future__ import annotations

import ctypes
import functools
from typing import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def release_freed_heap() -> None:
    """malloc_trim(0): return the free pages of the C heap to the operating system.

    Compiling a large program (the model's initialisation at the paper configuration) grows
    the heap by ≈0.5 GB that XLA frees afterwards; glibc keeps it, and the buffers of later
    steps, too large for the heap, are mapped separately and never reuse it, so it would stay
    in the process's resident memory for the whole run (docs/performance.md). No-op without glibc.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
