"""Representation blending of SARB and DSRB in vector form (docs/methods/sarb.md §8.2, §8.3, §9.1-9.2).

Pure ``jnp`` building blocks with static shapes: instance-level blending with the reversed
batch (ILRB, equal to DSRB's IPRB), choice of the blended classes by masked noise, blending
with a prototype per entry (PLRB, and DSRB's PPRB reduced exactly to vectors), the prototype
tables' per-step lookups and DSRB's peak and other quadrants. Labels are partial labels
t in {-1, 0, +1}; blended targets and features stay differentiable in alpha and beta.
"""

import jax
import jax.numpy as jnp

NUM_QUADRANTS = 4


def batch_partners(x: jax.Array) -> jax.Array:
    """The partner of image b is image b' = B - 1 - b: the batch axis reversed (docs/methods/sarb.md §8.2)."""
    return jnp.flip(x, axis=0)


def label_mixing_matrix(
    label1: jax.Array, label2: jax.Array, alpha: float | jax.Array
) -> jax.Array:
    """Λ = alpha where label1 = 0 and label2 = +1, else 1; same shape as label1 (docs/methods/sarb.md §8.2).

    Differentiable in alpha (gradient 1 on the selected entries).
    """
    label1 = jnp.asarray(label1)
    alpha = jnp.asarray(alpha)
    dtype = jnp.promote_types(label1.dtype, alpha.dtype)
    selected = (label1 == 0) & (jnp.asarray(label2) == 1)
    return jnp.where(selected, alpha.astype(dtype), jnp.ones((), dtype))


def instance_blend_coefficients(targets: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """Λ (B, C) of ILRB: alpha where t_{b,c} = 0 and t_{b',c} = +1 with b' = B - 1 - b, else 1 (§8.2)."""
    return label_mixing_matrix(targets, batch_partners(targets), alpha)


def instance_blend(
    semantic: jax.Array, targets: jax.Array, alpha: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """ILRB (docs/methods/sarb.md §8.2), also DSRB's IPRB (§9.1): blend every image with its reversed partner.

    s1 = Λ s + (1 - Λ) s_{b'} and y1 = Λ t + (1 - Λ) t_{b'}; gradients reach both images'
    features and alpha (through features and targets). Returns (s1 (B, C, D), y1 (B, C)).
    """
    coefficients = instance_blend_coefficients(targets, alpha)  # (B, C)
    weights = coefficients[..., None]  # (B, C, 1)
    blended = weights * semantic + (1.0 - weights) * batch_partners(semantic)  # (B, C, D)
    blended_targets = coefficients * targets + (1.0 - coefficients) * batch_partners(targets)
    return blended, blended_targets


def choose_blend_classes(
    targets: jax.Array, rng: jax.Array, *, top_k: int = 1, unknown_only: bool = False
) -> jax.Array:
    """Mask μ (B, C) of the classes blended with a prototype: top_k of u ⊙ [t = 0], u ~ U[0, 1) iid.

    SARB (§8.3) uses top_k = 1, DSRB (§9.1.3) top_k = `topK`. Ties go to the lowest class index,
    so in the reference's mode a row without unknown classes picks class 0 when top_k = 1
    (§12.3) and rows with fewer than top_k unknowns also pick known classes (D10, §9.4).
    ``unknown_only=True`` (clean) keeps only the picked unknown classes: a row without any
    unknown class blends nothing. float32 entries in {0, 1}.
    """
    num_classes = targets.shape[-1]
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k must be in [1, num_classes={num_classes}], got {top_k}.")
    unknown = (targets == 0).astype(jnp.float32)  # (B, C)
    scores = jax.random.uniform(rng, targets.shape, jnp.float32) * unknown
    if top_k == 1:
        mask = jax.nn.one_hot(jnp.argmax(scores, axis=-1), num_classes, dtype=jnp.float32)
    else:
        _, picked = jax.lax.top_k(scores, top_k)  # (B, top_k), distinct indices
        mask = jnp.sum(jax.nn.one_hot(picked, num_classes, dtype=jnp.float32), axis=-2)
    if unknown_only:
        mask = mask * unknown
    return mask


def prototype_blend(
    semantic: jax.Array,
    targets: jax.Array,
    prototypes_for_entry: jax.Array,
    class_mask: jax.Array,
    beta: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """PLRB (docs/methods/sarb.md §8.3) and DSRB's PPRB in vector form (§9.2).

    s2 = μ (β s + (1 - β) ψ) + (1 - μ) s and y2 = (1 - μ) t + μ (1 - β), with μ = class_mask
    (B, C) and ψ = prototypes_for_entry, (B, C, D) or broadcastable, e.g. SARB's (C, D).
    Prototypes are method state and get no gradient; beta gets it through s2 and y2.
    """
    mask = jnp.asarray(class_mask, dtype=semantic.dtype)  # (B, C)
    beta = jnp.asarray(beta, dtype=semantic.dtype)
    prototypes = jax.lax.stop_gradient(jnp.asarray(prototypes_for_entry, dtype=semantic.dtype))
    weights = mask[..., None]  # (B, C, 1)
    towards_prototype = beta * semantic + (1.0 - beta) * prototypes  # (B, C, D)
    blended = weights * towards_prototype + (1.0 - weights) * semantic
    blended_targets = (1.0 - mask) * targets + mask * (1.0 - beta)
    return blended, blended_targets


def sarb_prototypes_for_step(prototypes: jax.Array, rng: jax.Array) -> jax.Array:
    """Π[:, κ] (C, D) for one κ ~ U{0..K-1} shared by all classes and images (docs/methods/sarb.md §8.3)."""
    index = jax.random.randint(rng, (), 0, prototypes.shape[1])
    return jnp.take(prototypes, index, axis=1)


def peak_quadrants(attention: jax.Array, reduced: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Quadrant q = 2 [row >= h // 2] + [col >= w // 2] of the peak of G = Σ_d Φ (docs/methods/dsrb.md §9.1.1).

    G_{b,h,c} = α_{b,h,c} Σ_d f_{b,h,d} (exact, §4.8.2), so the (B, HW, C, D) map Φ is never
    built. The row is the argmax over rows of the row maxima, the column the argmax over
    columns of the column maxima (first index on ties). attention (B, HW, C) and reduced
    (B, HW, D) are flattened row-major from the (h, w) grid; returns int32 (B, C) in 0..3.
    """
    height, width = grid
    batch, positions, num_classes = attention.shape
    if positions != height * width:
        raise ValueError(
            f"attention has {positions} positions but grid {grid} has {height * width}."
        )
    channel_sums = jnp.sum(reduced, axis=-1)  # (B, HW)
    peak_map = (attention * channel_sums[..., None]).reshape(batch, height, width, num_classes)
    row = jnp.argmax(jnp.max(peak_map, axis=2), axis=1)  # (B, C)
    col = jnp.argmax(jnp.max(peak_map, axis=1), axis=1)  # (B, C)
    return (2 * (row >= height // 2) + (col >= width // 2)).astype(jnp.int32)


def other_quadrants(quadrants: jax.Array, rng: jax.Array) -> jax.Array:
    """q' = (q - r) mod 4 with r ~ U{1, 2, 3} iid per entry: a uniform quadrant other than q (§9.1.2)."""
    offsets = jax.random.randint(rng, quadrants.shape, 1, NUM_QUADRANTS)
    return jnp.mod(quadrants - offsets, NUM_QUADRANTS).astype(jnp.int32)


def dsrb_prototypes_for_entries(quadrant_prototypes: jax.Array, quadrants: jax.Array) -> jax.Array:
    """ψ_{c, q'_{b,c}} (B, C, D) from the table ψ (C, 4, D) by a one-hot gather (docs/methods/dsrb.md §9.2)."""
    selector = jax.nn.one_hot(
        quadrants, NUM_QUADRANTS, dtype=quadrant_prototypes.dtype
    )  # (B, C, 4)
    return jnp.einsum(
        "bcq,cqd->bcd", selector, quadrant_prototypes, precision=jax.lax.Precision.HIGHEST
    )


def clamp_unit_interval(x: jax.Array) -> jax.Array:
    """Projection of α and β onto [0, 1], applied outside autograd after updates (docs/methods/sarb.md §8.1)."""
    return jnp.clip(x, 0.0, 1.0)
