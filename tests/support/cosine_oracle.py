"""The PyTorch-1.7 cosine similarity of docs/methods/problem_and_data.md §0 written out directly:
the oracle of the package's Gram-style cosines (contrastive.cosine_from_dot_products)."""

import jax
import jax.numpy as jnp


def cosine_similarity(
    a: jax.Array, b: jax.Array, *, axis: int = -1, eps: float = 1e-9
) -> jax.Array:
    """cos(a, b) = a·b / sqrt(max(|a|² |b|², eps²)) along `axis`: a zero vector gives exactly 0
    and finite gradients. `a` and `b` broadcast against each other; `axis` is reduced."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    dot = jnp.sum(a * b, axis=axis)
    squared_norms = jnp.sum(a * a, axis=axis) * jnp.sum(b * b, axis=axis)
    return dot / jnp.sqrt(jnp.maximum(squared_norms, eps * eps))
