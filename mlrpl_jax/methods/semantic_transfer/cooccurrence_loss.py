"""Pairwise co-occurrence loss of SST and HST: an asymmetric focal loss on the co-occurrence
head's pair logits (docs/methods/losses.md §5.2)."""

import jax
import jax.numpy as jnp

from mlrpl_jax.losses import clip_with_boundary_gradient
from mlrpl_jax.pairs import num_pairs, pair_indices


def pair_positive_targets(targets: jax.Array) -> jax.Array:
    """Y_{b,k} = [t_{b,i} = 1] [t_{b,j} = 1] for k = (i, j) in Π_C (docs/methods/losses.md §5.2): (B, C) -> (B, P).

    Unknown and negative labels both give 0.
    """
    first, second = pair_indices(targets.shape[-1])
    positive = targets == 1
    return (positive[..., first] & positive[..., second]).astype(jnp.float32)


def pair_asymmetric_loss_elementwise(
    pair_logits: jax.Array,
    targets: jax.Array,
    *,
    gamma_neg: float = 2.0,
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> jax.Array:
    """Per-pair asymmetric focal loss (docs/methods/losses.md §5.2): (B, P) logits, (B, C) labels -> (B, P).

    p = σ(u), p⁻ = min(1 - p + clip, 1), l = -[Y log max(p, eps) + (1-Y) log max(p⁻, eps)]
    · (1 - Y p - (1-Y) p⁻)^(γ₊ Y + γ₋ (1-Y)); clamps pass the gradient on the closed interval,
    the focusing weight is not detached.
    """
    pair_logits = jnp.asarray(pair_logits)
    pair_logits = pair_logits.astype(
        jnp.promote_types(pair_logits.dtype, jnp.float32)
    )  # bf16 -> f32
    num_classes = jnp.shape(targets)[-1]
    if pair_logits.shape[-1] != num_pairs(num_classes):
        raise ValueError(
            f"pair_logits must have {num_pairs(num_classes)} pairs for {num_classes} classes in the last "
            f"axis, got shape {pair_logits.shape}."
        )
    pair_target = pair_positive_targets(jnp.asarray(targets)).astype(pair_logits.dtype)  # Y (B, P)
    probability = jax.nn.sigmoid(pair_logits)
    negative_probability = clip_with_boundary_gradient(1.0 - probability + clip, -jnp.inf, 1.0)
    log_likelihood = pair_target * jnp.log(
        clip_with_boundary_gradient(probability, eps, jnp.inf)
    ) + (1.0 - pair_target) * jnp.log(
        clip_with_boundary_gradient(negative_probability, eps, jnp.inf)
    )
    focus_base = 1.0 - (pair_target * probability + (1.0 - pair_target) * negative_probability)
    focus_exponent = gamma_pos * pair_target + gamma_neg * (1.0 - pair_target)
    # A zero exponent gives weight 1 with zero gradient, as PyTorch's pow backward (jnp.power: NaN at base 0).
    focus_base = jnp.where(focus_exponent == 0, 1.0, focus_base)
    return -log_likelihood * jnp.power(focus_base, focus_exponent)


def pair_asymmetric_loss(
    pair_logits: jax.Array,
    targets: jax.Array,
    *,
    gamma_neg: float = 2.0,
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> jax.Array:
    """L_cooc = mean over all B·P entries of the pair asymmetric focal loss (docs/methods/losses.md §5.2)."""
    return jnp.mean(
        pair_asymmetric_loss_elementwise(
            pair_logits, targets, gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps
        )
    )
