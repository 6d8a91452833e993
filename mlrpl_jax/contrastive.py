"""Cross-image contrastive loss on category-specific features (docs/methods/losses.md §5.3).

Shared by SST, HST, SARB and DSRB. Pure ``jnp`` with static shapes; the sub-sampling is a rank
selection driven by one i.i.d. priority per entry, so it jits and its randomness can be
injected in tests.
"""

import jax
import jax.numpy as jnp

from mlrpl_jax.pairs import num_pairs, pair_indices


def cosine_from_dot_products(
    dots: jax.Array, squared_norms_a: jax.Array, squared_norms_b: jax.Array, eps: float = 1e-9
) -> jax.Array:
    """cos = a·b / sqrt(max(|a|² |b|², eps²)) from precomputed a·b and squared norms (docs/methods/problem_and_data.md §0).

    The PyTorch-1.7 convention, for Gram-style batches where the broadcast (…, D) products
    would be large (tests/support/cosine_oracle.py writes it out directly).
    """
    return dots / jnp.sqrt(jnp.maximum(squared_norms_a * squared_norms_b, eps * eps))


def image_pair_cosines(features: jax.Array, *, eps: float = 1e-9) -> jax.Array:
    """d_{k,c} = cos_eps(s_{m,c}, s_{n,c}) for image pairs k = (m, n) in Π_B: (B, C, D) -> (|Π_B|, C)."""
    dots = jnp.einsum("mcd,ncd->mnc", features, features)  # (B, B, C)
    squared_norms = jnp.einsum("bcd,bcd->bc", features, features)  # (B, C)
    first, second = pair_indices(features.shape[0])
    return cosine_from_dot_products(
        dots[first, second], squared_norms[first], squared_norms[second], eps
    )  # (|Π_B|, C)


def contrastive_categories(targets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Boolean (|Π_B|, C) masks PP (both +1), PN (one +1, other -1), NN (both -1) (docs/methods/losses.md §5.3)."""
    first, second = pair_indices(targets.shape[0])
    positive, negative = targets == 1, targets == -1  # (B, C)
    both_positive = positive[first] & positive[second]
    mixed = (positive[first] & negative[second]) | (negative[first] & positive[second])
    both_negative = negative[first] & negative[second]
    return both_positive, mixed, both_negative


def _ranks_among(mask: jax.Array, scores: jax.Array) -> jax.Array:
    """Rank (0-based, ascending score, ties by position) of every masked entry among the masked ones.

    Unmasked entries get ranks >= the number of masked entries. Shapes: any, same for both.
    """
    flat_scores = jnp.where(mask, scores, jnp.inf).ravel()
    order = jnp.argsort(flat_scores, stable=True)
    ranks = jnp.zeros(order.shape, jnp.int32).at[order].set(jnp.arange(order.size, dtype=jnp.int32))
    return ranks.reshape(mask.shape)


def _subsample_weights(
    mask: jax.Array, terms: jax.Array, priorities: jax.Array, num_both_positive: jax.Array
) -> jax.Array:
    """Multiplicity (0, 1 or 2) of each entry of one category (PN or NN) in the kept multiset.

    K > 0: [rank by priority < 2K] + [rank by descending term < K] among the masked entries;
    K = 0: every masked entry once.
    """
    in_random_subset = mask & (_ranks_among(mask, priorities) < 2 * num_both_positive)
    in_hardest = mask & (_ranks_among(mask, -terms) < num_both_positive)
    multiplicity = in_random_subset.astype(jnp.int32) + in_hardest.astype(jnp.int32)
    return jnp.where(num_both_positive > 0, multiplicity, mask.astype(jnp.int32))


def contrastive_terms_and_weights(
    features: jax.Array, targets: jax.Array, priorities: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Terms (1 - d on PP, 1 + d elsewhere) and kept multiplicities, both (|Π_B|, C) (docs/methods/losses.md §5.3).

    ``priorities`` (|Π_B|, C): the random subset of PN (and of NN) is the min(|PN|, 2K) valid
    entries with the smallest priorities, so i.i.d. uniform priorities give a uniformly random
    subset. Weights are integers stored as float32 and carry no gradient.
    """
    features = jnp.asarray(features)
    targets = jnp.asarray(targets)
    num_image_pairs = num_pairs(features.shape[0])
    if targets.shape != features.shape[:2] or jnp.shape(priorities) != (
        num_image_pairs,
        features.shape[1],
    ):
        raise ValueError(
            f"contrastive loss expects features (B, C, D), targets (B, C) and priorities (B(B-1)/2, C); "
            f"got {features.shape}, {targets.shape} and {jnp.shape(priorities)}."
        )
    cosines = image_pair_cosines(features)  # (|Π_B|, C)
    both_positive, mixed, both_negative = contrastive_categories(targets)
    terms = jnp.where(both_positive, 1.0 - cosines, 1.0 + cosines)
    fixed_terms = jax.lax.stop_gradient(terms)
    num_both_positive = jnp.sum(both_positive, dtype=jnp.int32)  # K
    weights = (
        both_positive.astype(jnp.int32)
        + _subsample_weights(mixed, fixed_terms, priorities, num_both_positive)
        + _subsample_weights(both_negative, fixed_terms, priorities, num_both_positive)
    )
    return terms, weights.astype(terms.dtype)


def contrastive_loss_with_priorities(
    features: jax.Array, targets: jax.Array, priorities: jax.Array
) -> jax.Array:
    """L_con with the random subset fixed by ``priorities`` (|Π_B|, C) (docs/methods/losses.md §5.3).

    Weighted mean of the terms over the kept multiset; 0 with zero gradient when it is empty.
    """
    features = features.astype(jnp.promote_types(features.dtype, jnp.float32))  # bf16 -> f32
    terms, weights = contrastive_terms_and_weights(features, targets, priorities)
    return jnp.sum(weights * terms) / jnp.maximum(jnp.sum(weights), 1.0)


def contrastive_loss(features: jax.Array, targets: jax.Array, rng: jax.Array) -> jax.Array:
    """Cross-image contrastive loss (docs/methods/losses.md §5.3): features (B, C, D), labels (B, C) -> scalar.

    PP terms 1 - d, PN and NN terms 1 + d; if K = |PP| > 0, PN and NN are each sub-sampled to a
    uniformly random min(n, 2K) subset plus the min(n, K) hardest (overlaps counted twice).
    """
    priorities = jax.random.uniform(rng, (num_pairs(features.shape[0]), features.shape[1]))
    return contrastive_loss_with_priorities(features, targets, priorities)
