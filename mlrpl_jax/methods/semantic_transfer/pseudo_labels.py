"""Pseudo labels of the semantic-transfer methods: SST's intra-/cross-image transfer with a
positive-feature bank (docs/methods/sst.md §6.2, §6.3) and HST's soft scores, binary pseudo labels and
prototype loss (§7.2, §7.4).

Labels are partial: +1 known positive, -1 known negative, 0 unknown. Threshold comparisons
are done in float32 (§6.4, §10.4).
"""

from typing import Literal

import jax
import jax.numpy as jnp

from mlrpl_jax.contrastive import cosine_from_dot_products
from mlrpl_jax.losses import clip_with_boundary_gradient
from mlrpl_jax.pairs import num_pairs, pairs_to_symmetric

PositiveBank = dict[str, jax.Array]


def mean_cooccurrence_with_known_positives(pair_logits: jax.Array, targets: jax.Array) -> jax.Array:
    """p̄_{b,i} = Σ_j M_{b,ij} [t_{b,j} = 1] / max(1, Σ_j [t_{b,j} = 1]) (docs/methods/sst.md §6.2): (B, P), (B, C) -> (B, C).

    M_b is the symmetric matrix of σ(u_b) with unit diagonal.
    """
    pair_logits = jnp.asarray(pair_logits)
    targets = jnp.asarray(targets)
    num_classes = targets.shape[-1]
    if pair_logits.shape != (*targets.shape[:-1], num_pairs(num_classes)):
        raise ValueError(
            f"pair_logits must be (B, {num_pairs(num_classes)}) for targets (B, {num_classes}); got "
            f"{pair_logits.shape} and {targets.shape}."
        )
    cooccurrence = pairs_to_symmetric(
        jax.nn.sigmoid(pair_logits), num_classes, diagonal=1.0
    )  # M (B, C, C)
    known_positive = (targets == 1).astype(cooccurrence.dtype)  # (B, C)
    count = jnp.maximum(jnp.sum(known_positive, axis=-1, keepdims=True), 1.0)  # (B, 1)
    return jnp.einsum("bij,bj->bi", cooccurrence, known_positive) / count


def _add_pseudo_positives(targets: jax.Array, pseudo_positive: jax.Array) -> jax.Array:
    """t + [t = 0] ŷ without gradient: only unknown entries can become +1."""
    targets = jnp.asarray(targets)
    pseudo = (targets == 0) & pseudo_positive
    return jax.lax.stop_gradient(targets + pseudo.astype(targets.dtype))


def _sst_threshold(scores: jax.Array, margin: float | jax.Array) -> jax.Array:
    """ŷ = [score >= m] if m < 1, else none (the reference's two-pass thresholding, §6.2)."""
    margin = jnp.asarray(margin, jnp.float32)
    return (scores.astype(jnp.float32) >= margin) & (margin < 1.0)


def sst_intra_pseudo_labels(
    pair_logits: jax.Array, targets: jax.Array, margin: float | jax.Array
) -> jax.Array:
    """t^intra = t + [t = 0] [p̄ >= m] (none when m >= 1), stop-gradient (docs/methods/sst.md §6.2): (B, C)."""
    scores = mean_cooccurrence_with_known_positives(pair_logits, targets)
    return _add_pseudo_positives(targets, _sst_threshold(scores, margin))


def mean_cosine_to_class_rows(
    semantic: jax.Array, rows: jax.Array, *, eps: float = 1e-9
) -> jax.Array:
    """(1/N) Σ_n cos_eps(s_{b,c}, R_{c,n}): semantic (B, C, D), rows (C, N, D) -> (B, C).

    Zero rows count as similarity 0 and still count in N (docs/methods/sst.md §6.3, §7.2).
    """
    semantic = jnp.asarray(semantic)
    rows = jnp.asarray(rows)
    if rows.ndim != 3 or rows.shape[0] != semantic.shape[1] or rows.shape[2] != semantic.shape[2]:
        raise ValueError(
            f"class rows must be (C, N, D) = ({semantic.shape[1]}, N, {semantic.shape[2]}) for semantic "
            f"features {semantic.shape}; got {rows.shape}."
        )
    dots = jnp.einsum("bcd,cnd->bcn", semantic, rows)  # (B, C, N)
    squared_norms = jnp.sum(semantic * semantic, axis=-1)[..., None]  # (B, C, 1)
    row_squared_norms = jnp.sum(rows * rows, axis=-1)  # (C, N)
    return jnp.mean(cosine_from_dot_products(dots, squared_norms, row_squared_norms, eps), axis=-1)


def sst_inter_pseudo_labels(
    semantic: jax.Array, targets: jax.Array, bank_rows: jax.Array, margin: float | jax.Array
) -> jax.Array:
    """t^inter = t + [t = 0] [q̄ >= m] (none when m >= 1), q̄ = mean cosine to the class's N bank
    rows incl. empty ones; stop-gradient (docs/methods/sst.md §6.3): (B, C, D), (B, C), (C, N, D) -> (B, C).
    """
    scores = mean_cosine_to_class_rows(jax.lax.stop_gradient(semantic), bank_rows)
    return _add_pseudo_positives(targets, _sst_threshold(scores, margin))


def init_positive_bank(num_classes: int, size: int, dim: int) -> PositiveBank:
    """Empty SST bank (docs/methods/sst.md §6.3): a ring buffer of ``size`` zero rows per class.

    'rows' (C, N, D) float32; 'next_slot' (C,) int32 = slot the next newest row is written to.
    """
    return {
        "rows": jnp.zeros((num_classes, size, dim), jnp.float32),
        "next_slot": jnp.zeros((num_classes,), jnp.int32),
    }


def positive_bank_update(
    bank: PositiveBank, semantic: jax.Array, targets: jax.Array
) -> PositiveBank:
    """Makes the batch's known positives of each class its newest rows (docs/methods/sst.md §6.3).

    Equals the reference's per-class prepend-and-truncate: the first positive in batch order is
    the newest row; with more than N positives only the first N of the batch are kept. Features
    are stored without gradient. semantic (B, C, D), targets (B, C).
    """
    rows, next_slot = bank["rows"], bank["next_slot"]
    size = rows.shape[1]
    if semantic.shape[1:] != (rows.shape[0], rows.shape[2]) or targets.shape != semantic.shape[:2]:
        raise ValueError(
            f"bank rows {rows.shape} need semantic features (B, {rows.shape[0]}, {rows.shape[2]}) and "
            f"targets (B, {rows.shape[0]}); got {semantic.shape} and {targets.shape}."
        )
    positive = (targets == 1).astype(jnp.int32)  # (B, C)
    earlier_positives = (
        jnp.cumsum(positive, axis=0) - positive
    )  # (B, C): positives before b in batch order
    written = jnp.minimum(jnp.sum(positive, axis=0), size)  # (C,)
    # Written oldest to newest: the kept positive with e earlier positives is the (written-1-e)-th write.
    write_order = written[None, :] - 1 - earlier_positives  # (B, C)
    slot = (next_slot[None, :] + write_order) % size
    kept = (positive == 1) & (earlier_positives < size)
    slot = jnp.where(kept, slot, size)  # out of range: dropped by the scatter
    class_index = jnp.broadcast_to(jnp.arange(rows.shape[0], dtype=jnp.int32)[None, :], slot.shape)
    new_rows = rows.at[class_index, slot].set(
        jax.lax.stop_gradient(semantic).astype(rows.dtype), mode="drop"
    )
    return {"rows": new_rows, "next_slot": (next_slot + written) % size}


def hst_intra_scores(
    pair_logits: jax.Array, targets: jax.Array, margin: float | jax.Array
) -> jax.Array:
    """r^intra = clip(p̄ - m_intra, 0, 1) for every entry, clamp gradient on [0, 1] (docs/methods/hst.md §7.2): (B, C)."""
    scores = mean_cooccurrence_with_known_positives(pair_logits, targets)
    return clip_with_boundary_gradient(scores - margin, 0.0, 1.0)


def hst_inter_scores(
    semantic: jax.Array, prototypes: jax.Array, margin: float | jax.Array
) -> jax.Array:
    """r^inter = clip(δ - m_inter, 0, 1), δ = mean cosine to the class's K prototypes (constants) (§7.2).

    semantic (B, C, D), prototypes (C, K, D) -> (B, C).
    """
    similarity = mean_cosine_to_class_rows(semantic, jax.lax.stop_gradient(prototypes))
    return clip_with_boundary_gradient(similarity - margin, 0.0, 1.0)


def hst_binary_pseudo_labels(scores: jax.Array, targets: jax.Array) -> jax.Array:
    """t̃ = t + [t = 0] [sg(r) > 0] (strict), stop-gradient (docs/methods/hst.md §7.2): (B, C)."""
    return _add_pseudo_positives(targets, jax.lax.stop_gradient(scores) > 0)


def prototype_loss(
    semantic: jax.Array,
    targets: jax.Array,
    prototypes: jax.Array,
    *,
    sign: Literal["reference", "paper"] = "reference",
) -> jax.Array:
    """HST prototype loss over all B·C entries (docs/methods/hst.md §7.4, §12.3).

    'reference': mean(1 + t δ) (pushes known positives away from their prototypes);
    'paper': mean(1 - t δ) (1 - δ on positives, 1 + δ on negatives). Unknowns add 1.
    """
    if sign not in ("reference", "paper"):
        raise ValueError(f"prototype_loss sign must be 'reference' or 'paper', got {sign!r}.")
    similarity = mean_cosine_to_class_rows(semantic, jax.lax.stop_gradient(prototypes))  # δ (B, C)
    direction = 1.0 if sign == "reference" else -1.0
    return jnp.mean(1.0 + direction * jnp.asarray(targets, similarity.dtype) * similarity)
