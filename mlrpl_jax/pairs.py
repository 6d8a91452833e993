"""Unordered pair indexing Π_n (docs/methods/problem_and_data.md §0): all (i, j) with 0 <= i < j < n, i major.

Π_C indexes the class pairs of the co-occurrence head (§4.6), Π_B the image pairs of the
contrastive loss (§5.3). The position of (i, j) is k(i, j) = i n - i (i + 1) / 2 + (j - i - 1).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

IndexLike = int | np.ndarray | jax.Array


def num_pairs(n: int) -> int:
    """|Π_n| = n (n - 1) / 2."""
    return n * (n - 1) // 2


@functools.cache
def _pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.triu_indices(n, k=1)  # row-major upper triangle = Π_n order
    first, second = first.astype(np.int32), second.astype(np.int32)
    first.setflags(write=False)
    second.setflags(write=False)
    return first, second


def pair_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), two read-only int32 arrays of length |Π_n| listing Π_n in order (i < j, i major).

    NumPy constants, so they index traced arrays under ``jax.jit`` without becoming inputs.
    """
    if n < 0:
        raise ValueError(f"pair_indices needs a non-negative item count, got {n}.")
    return _pair_indices(n)


def pair_position(i: IndexLike, j: IndexLike, n: int) -> IndexLike:
    """Position k(i, j) = i n - i (i + 1) / 2 + (j - i - 1) of the pair (i, j), i < j, in Π_n.

    Pure arithmetic: works for Python ints, NumPy and JAX integer arrays alike.
    """
    return i * n - (i * (i + 1)) // 2 + (j - i - 1)


@functools.cache
def _symmetric_gather_index(n: int) -> np.ndarray:
    """(n, n) int32: position of {a, b} in Π_n off the diagonal, |Π_n| (one past the end) on it."""
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    low, high = np.minimum(rows, cols), np.maximum(rows, cols)
    index = np.where(rows == cols, num_pairs(n), pair_position(low, high, n)).astype(np.int32)
    index.setflags(write=False)
    return index


def pairs_to_symmetric(values: jax.Array, n: int, diagonal: float | jax.Array = 1.0) -> jax.Array:
    """values (..., |Π_n|) in Π_n order -> symmetric (..., n, n) with M_ij = M_ji = values_k(i,j).

    The diagonal is filled with ``diagonal``. Implemented as a gather (its gradient is the
    scatter-add of both triangles back onto the pair values).
    """
    values = jnp.asarray(values)
    if values.shape[-1] != num_pairs(n):
        raise ValueError(
            f"pairs_to_symmetric expects {num_pairs(n)} pair values for n={n} in the last axis, "
            f"got shape {values.shape}."
        )
    diagonal_column = jnp.broadcast_to(jnp.asarray(diagonal, values.dtype), (*values.shape[:-1], 1))
    padded = jnp.concatenate([values, diagonal_column], axis=-1)  # (..., |Π_n| + 1)
    return padded[..., _symmetric_gather_index(n)]  # (..., n, n)
