"""Loss building blocks shared by every method: partial BCE, cosine similarity, a clip with
PyTorch's boundary gradient and the epoch-0 warm-up factor (docs/methods/problem_and_data.md §0, §5.1, §5.4, §10.4).

All functions are pure ``jnp``, keep static shapes and are safe under ``jax.jit``.
"""

import jax
import jax.numpy as jnp


def _partial_label_masks(
    targets: jax.Array, margin: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Masks (targets > margin, targets < -margin), compared in the targets' dtype."""
    margin = jnp.asarray(margin, dtype=targets.dtype)
    return targets > margin, targets < -margin


def partial_bce_elementwise(
    logits: jax.Array, targets: jax.Array, *, margin: float | jax.Array = 0.0
) -> jax.Array:
    """Per-entry partial BCE (docs/methods/losses.md §5.1); same shape as ``logits``, 0 where unselected.

    bce(x, y) = (1 - y) x + sp(-x) on y > margin and bce(-x, -y) = (1 + y)(-x) + sp(x) on
    y < -margin, with sp = softplus (stable for any x). Soft targets are allowed and receive
    gradient (d/dy = -x on positives, -x on negatives).
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {logits.shape} and "
            f"{targets.shape}; pass one target per logit."
        )
    positive, negative = _partial_label_masks(targets, margin)
    positive_loss = (1.0 - targets) * logits + jax.nn.softplus(-logits)
    negative_loss = -(1.0 + targets) * logits + jax.nn.softplus(logits)
    zero = jnp.zeros_like(positive_loss)
    return jnp.where(positive, positive_loss, jnp.where(negative, negative_loss, zero))


def partial_bce(
    logits: jax.Array,
    targets: jax.Array,
    *,
    margin: float | jax.Array = 0.0,
    where: jax.Array | None = None,
) -> jax.Array:
    """Mean partial BCE over the selected entries of the whole batch (docs/methods/losses.md §5.1).

    BCE = sum_{P ∪ N} l / |P ∪ N| with P = {y > margin}, N = {y < -margin}; 0 with zero
    gradient when nothing is selected. ``where`` (bool or 0/1, broadcastable to the logits,
    e.g. (B, 1) for padded examples) additionally drops entries from both sums.
    """
    elementwise = partial_bce_elementwise(logits, targets, margin=margin)  # (B, C)
    positive, negative = _partial_label_masks(jnp.asarray(targets), margin)
    selected = positive | negative
    if where is not None:
        where = jnp.asarray(where)
        try:
            selected = selected & jnp.broadcast_to(where.astype(bool), selected.shape)
        except ValueError as error:
            raise ValueError(
                f"where of shape {where.shape} does not broadcast to the logits' shape "
                f"{selected.shape}; use e.g. shape (B, 1) for a per-example mask."
            ) from error
    total = jnp.sum(jnp.where(selected, elementwise, jnp.zeros_like(elementwise)))
    count = jnp.sum(selected, dtype=jnp.int32)
    return total / jnp.maximum(count, 1).astype(elementwise.dtype)


@jax.custom_jvp
def clip_with_boundary_gradient(
    x: jax.Array, lo: float | jax.Array, hi: float | jax.Array
) -> jax.Array:
    """clip(x, lo, hi) whose derivative in x is [lo <= x <= hi] (docs/methods/hst.md §7.2, §10.4).

    PyTorch's clamp passes the gradient on the closed interval, unlike ``jnp.clip`` (1/2 at a
    boundary) and ``lax.clamp`` (0). The bounds may be arrays broadcasting with ``x`` and may
    be traced; they receive gradient [x < lo] and [x > hi] respectively.
    """
    return jnp.minimum(jnp.maximum(x, lo), hi)


@clip_with_boundary_gradient.defjvp
def _clip_with_boundary_gradient_jvp(
    primals: tuple[jax.Array, jax.Array, jax.Array],
    tangents: tuple[jax.Array, jax.Array, jax.Array],
) -> tuple[jax.Array, jax.Array]:
    x, lo, hi = primals
    dx, dlo, dhi = tangents
    out = clip_with_boundary_gradient(x, lo, hi)
    inside = (x >= lo) & (x <= hi)
    zero = jnp.zeros((), out.dtype)
    d_out = (
        jnp.where(inside, dx, zero) + jnp.where(x < lo, dlo, zero) + jnp.where(x > hi, dhi, zero)
    )
    return out, jnp.broadcast_to(d_out, out.shape).astype(out.dtype)


def warmup_factor(
    epoch: int | jax.Array, step_in_epoch: int | jax.Array, steps_per_epoch: int | jax.Array
) -> jax.Array:
    """Float32 weight of the warmed-up auxiliary losses: i / n_it in epoch 0, else 1 (§5.4)."""
    ramp = jnp.asarray(step_in_epoch, jnp.float32) / jnp.asarray(steps_per_epoch, jnp.float32)
    return jnp.where(jnp.asarray(epoch) == 0, ramp, jnp.float32(1.0))
