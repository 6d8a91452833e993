"""Per-category score distributions, the thresholds derived from them and the ranking loss (SATL).

Pure jnp functions of docs/methods/satl.md §4.2-4.6. This is **our design following the
abstract of arXiv 2507.23263**, not the paper's method (no method text or code of the paper is
public). The distributions are histograms H+, H- (C, K) of the sigmoid scores of known positive
and known negative entries, with K equal bins on [0, 1]; every threshold is a bin edge e_k = k / K.
All arithmetic is float32 whatever the network's dtype (§4.11).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

THRESHOLD_RULES = ("precision", "pos_only")  # from the known labels' histograms H±
_TINY = 1e-12


def bin_edges(num_bins: int) -> jax.Array:
    """Lower edges e_k = k / K of the K bins, float32 (K,)."""
    return jnp.arange(num_bins, dtype=jnp.float32) / num_bins


def bin_centres(num_bins: int) -> jax.Array:
    """Centres v_k = (k + 0.5) / K, float32 (K,)."""
    return (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) / num_bins


def score_bins(scores: jax.Array, num_bins: int) -> jax.Array:
    """Bin index (B, C) int32 of each score: bin k holds [k/K, (k+1)/K), a score of 1 the last."""
    scores = jnp.asarray(scores, jnp.float32)
    return jnp.clip(jnp.floor(scores * num_bins).astype(jnp.int32), 0, num_bins - 1)


def score_histogram(scores: jax.Array, mask: jax.Array, num_bins: int) -> jax.Array:
    """Counts (C, K) of the scores (B, C) in [0, 1] of the entries where `mask` (B, C).

    Under jit with a batch sharded over devices the sums run over the global batch.
    """
    onehot = jax.nn.one_hot(score_bins(scores, num_bins), num_bins, dtype=jnp.float32)  # (B, C, K)
    return jnp.einsum("bc,bck->ck", jnp.asarray(mask, jnp.float32), onehot)


def score_histograms(
    scores: jax.Array, labels: jax.Array, num_bins: int
) -> tuple[jax.Array, jax.Array]:
    """Counts (C, K) of the known-positive and known-negative scores of one batch (§4.3).

    `scores` (B, C) in [0, 1]; `labels` (B, C) in {-1, 0, +1}, unknown (0) entries are ignored.
    """
    return (
        score_histogram(scores, labels == 1, num_bins),
        score_histogram(scores, labels == -1, num_bins),
    )


def decayed_update(histogram: jax.Array, counts: jax.Array, decay: float) -> jax.Array:
    """H <- λ H + counts (§4.3)."""
    return decay * histogram + counts


def tail_counts(histogram: jax.Array) -> jax.Array:
    """T[c, k] = Σ_{k' >= k} H[c, k']: entries scoring at least e_k, (C, K)."""
    return jax.lax.cumsum(histogram, axis=1, reverse=True)


def counts_below(histogram: jax.Array) -> jax.Array:
    """L[c, k] = Σ_{k' < k} H[c, k']: entries scoring below e_k, (C, K); L[c, 0] = 0."""
    zeros = jnp.zeros_like(histogram[:, :1])
    return jnp.concatenate([zeros, jnp.cumsum(histogram, axis=1)[:, :-1]], axis=1)


def tail_precision(positive: jax.Array, negative: jax.Array, min_count: float) -> jax.Array:
    """Precision (C, K) of "positive if s >= e_k" on the known labels, T+ / (T+ + T-), counted
    as 1 where T+ + T- < n_min and made non-decreasing in k by a reverse cumulative minimum."""
    pos_tail, neg_tail = tail_counts(positive), tail_counts(negative)  # (C, K)
    tail = pos_tail + neg_tail
    precision = jnp.where(tail >= min_count, pos_tail / jnp.maximum(tail, _TINY), 1.0)
    return jax.lax.cummin(precision, axis=1, reverse=True)


def positive_precision_thresholds(
    positive: jax.Array, negative: jax.Array, *, min_precision: float, min_count: float
) -> jax.Array:
    """τ+_c (C,) of §4.4: the first edge e_k where `tail_precision` reaches ρ+ with
    T+ + T- >= n_min; +inf if none."""
    edges = bin_edges(positive.shape[1])
    tail = tail_counts(positive) + tail_counts(negative)  # (C, K)
    qualifies = (tail_precision(positive, negative, min_count) >= min_precision) & (
        tail >= min_count
    )
    return jnp.where(jnp.any(qualifies, axis=1), edges[jnp.argmax(qualifies, axis=1)], jnp.inf)


def missed_positive_thresholds(
    positive: jax.Array, *, max_missed_positive_fraction: float, min_count: float
) -> jax.Array:
    """τ-_c (C,) of §4.4 before the cap at τ+: the largest edge with L+ <= ε- n+_c, 0 if
    n+_c < n_min."""
    num_pos = tail_counts(positive)[:, 0]  # (C,)
    within_budget = (
        counts_below(positive) <= max_missed_positive_fraction * num_pos[:, None]
    )  # (C, K)
    last = jnp.max(jnp.where(within_budget, jnp.arange(positive.shape[1]), 0), axis=1)
    return jnp.where(num_pos >= min_count, bin_edges(positive.shape[1])[last], 0.0)


def category_thresholds(
    positive: jax.Array,
    negative: jax.Array,
    *,
    rule: str,
    min_precision: float,
    max_missed_positive_fraction: float,
    min_count: float,
) -> tuple[jax.Array, jax.Array]:
    """(τ+, τ-) float32 (C,) of `rule` in THRESHOLD_RULES; τ- never exceeds τ+.

    * `precision` (§4.4): τ+ from ρ+, τ- from the missed-positive budget ε-;
    * `pos_only`: the same τ+, τ- = 0.
    """
    if rule not in THRESHOLD_RULES:
        raise ValueError(
            f"unknown threshold rule {rule!r}; valid rules: {', '.join(THRESHOLD_RULES)}"
        )
    positive = jnp.asarray(positive, jnp.float32)
    negative = jnp.asarray(negative, jnp.float32)
    tau_pos = positive_precision_thresholds(
        positive, negative, min_precision=min_precision, min_count=min_count
    )
    if rule == "pos_only":
        return tau_pos, jnp.zeros_like(tau_pos)
    tau_neg = missed_positive_thresholds(
        positive, max_missed_positive_fraction=max_missed_positive_fraction, min_count=min_count
    )
    return tau_pos, jnp.minimum(tau_neg, tau_pos)


def threshold_pseudo_labels(
    scores: jax.Array, labels: jax.Array, tau_pos: jax.Array, tau_neg: jax.Array
) -> jax.Array:
    """ŷ (B, C) of §4.5: +1 where unknown and s >= τ+_c, -1 where unknown and s < τ-_c, else 0."""
    unknown = labels == 0
    positive = unknown & (scores >= tau_pos)
    negative = unknown & (scores < tau_neg) & ~positive
    return positive.astype(jnp.float32) - negative.astype(jnp.float32)


def smooth_hinge(x: jax.Array, smoothness: float) -> jax.Array:
    """h(x) = softplus(β x) / β."""
    return jax.nn.softplus(smoothness * x) / smoothness


def distribution_ranking_loss(
    scores: jax.Array,
    labels: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    *,
    margin: float,
    smoothness: float,
) -> jax.Array:
    """Differential ranking loss of §4.6 (distribution-anchored pairwise smooth hinge), scalar.

    R+[i, c] = Σ_k w-[c, k] h(m - (s[i, c] - v_k)) for known positives, R-[j, c] =
    Σ_k w+[c, k] h(m - (v_k - s[j, c])) for known negatives, w± = H± / Σ_k H±; the loss is
    mean R+ over positives of classes with n- > 0 plus mean R- over negatives of classes with
    n+ > 0 (0 for an empty set). The histograms are constants; gradients flow through `scores`.
    """
    scores = jnp.asarray(scores, jnp.float32)  # (B, C)
    positive = jax.lax.stop_gradient(jnp.asarray(positive, jnp.float32))
    negative = jax.lax.stop_gradient(jnp.asarray(negative, jnp.float32))
    num_pos, num_neg = jnp.sum(positive, axis=1), jnp.sum(negative, axis=1)  # (C,)
    w_pos = positive / jnp.maximum(num_pos, _TINY)[:, None]  # (C, K)
    w_neg = negative / jnp.maximum(num_neg, _TINY)[:, None]
    gap = scores[:, :, None] - bin_centres(positive.shape[1])  # (B, C, K): s - v_k
    rank_pos = jnp.sum(w_neg * smooth_hinge(margin - gap, smoothness), axis=-1)  # (B, C)
    rank_neg = jnp.sum(w_pos * smooth_hinge(margin + gap, smoothness), axis=-1)  # (B, C)
    return masked_mean(rank_pos, (labels == 1) & (num_neg > 0)) + masked_mean(
        rank_neg, (labels == -1) & (num_pos > 0)
    )


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` where `mask`; 0 with zero gradient when the mask is empty."""
    count = jnp.sum(mask, dtype=jnp.float32)
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1.0)


def pseudo_label_counts(
    pseudo_labels: jax.Array, labels: jax.Array, complete_labels: jax.Array
) -> dict[str, jax.Array]:
    """Per-class counts (C,) float32 for the precision and recall of pseudo labels (§4.10).

    Diagnostics only: `complete_labels` (B, C) in {-1, +1} are the hidden full labels and must
    never reach a loss. `hidden_*` count the unknown entries whose hidden label is +1 / -1.
    """
    unknown = labels == 0
    hidden_pos, hidden_neg = unknown & (complete_labels == 1), unknown & (complete_labels == -1)
    pseudo_pos, pseudo_neg = pseudo_labels == 1, pseudo_labels == -1

    def per_class(mask: jax.Array) -> jax.Array:
        return jnp.sum(mask, axis=0, dtype=jnp.float32)

    return {
        "pseudo_positives": per_class(pseudo_pos),
        "true_pseudo_positives": per_class(pseudo_pos & hidden_pos),
        "pseudo_negatives": per_class(pseudo_neg),
        "true_pseudo_negatives": per_class(pseudo_neg & hidden_neg),
        "hidden_positives": per_class(hidden_pos),
        "hidden_negatives": per_class(hidden_neg),
    }
