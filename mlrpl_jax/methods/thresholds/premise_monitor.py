"""SATL's premise, measured: do known and hidden entries of a class score alike?

SATL sets thresholds for the unknown entries from the scores of the known ones, on the premise
that within a class the two are distributed alike (docs/methods/satl.md §2 point 2). Where the
network memorises its known labels the premise fails. Per class and epoch this module compares
the score distributions of the known positives with those of the hidden positives (unknown
entries whose hidden complete label is +1), and of the known negatives with the hidden
negatives, by the two-sample Kolmogorov-Smirnov statistic.

Diagnostics only: the hidden labels reach these functions through `Method.diagnostics` and
never a loss. The scores are accumulated in fixed histograms (C, K) inside the jitted step, so
the statistic is the KS statistic of the binned scores: it is at most the exact one, and the
exact one exceeds it by at most the largest share of either sample in one bin
(`binned_ks_statistic`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mlrpl_jax.methods.thresholds import histogram_thresholds

# (known group, hidden group) compared for each sign
COMPARISONS = {
    "positive": ("known_positive", "hidden_positive"),
    "negative": ("known_negative", "hidden_negative"),
}
GROUPS = tuple(group for pair in COMPARISONS.values() for group in pair)


def premise_histograms(
    scores: jax.Array,
    trained_labels: jax.Array,
    labels: jax.Array,
    complete_labels: jax.Array,
    num_bins: int,
) -> dict[str, jax.Array]:
    """Counts (C, K) of one batch's scores for each group of GROUPS.

    `scores` (B, C) in [0, 1]; `trained_labels` (B, C) in {-1, 0, +1}, the known labels the loss
    trained on; `labels` (B, C), the batch's partial labels, whose unknown (0) entries are the
    hidden ones; `complete_labels` (B, C) in {-1, +1}, the hidden full labels.
    """
    hidden = jnp.where(labels == 0, complete_labels, 0)  # (B, C)
    known_positive, known_negative = histogram_thresholds.score_histograms(
        scores, trained_labels, num_bins
    )
    hidden_positive, hidden_negative = histogram_thresholds.score_histograms(
        scores, hidden, num_bins
    )
    return {
        "known_positive": known_positive,
        "hidden_positive": hidden_positive,
        "known_negative": known_negative,
        "hidden_negative": hidden_negative,
    }


def binned_ks_statistic(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two-sample KS statistic (C,) of the samples whose histograms (C, K) are given; NaN where
    either is empty.

    D_K = max_k |F1(e_k) - F2(e_k)| over the bin edges, F the empirical CDFs. Inside bin k each
    CDF rises by that sample's share m_k of the bin, so D_K <= D <= D_K + max_k max(m1_k, m2_k)
    for the exact statistic D, and D_K = D when every score lies at its bin's centre.
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    count_first, count_second = first.sum(axis=1), second.sum(axis=1)  # (C,)
    defined = (count_first > 0) & (count_second > 0)
    cdf_first = np.cumsum(first, axis=1) / np.maximum(count_first, 1.0)[:, None]  # (C, K)
    cdf_second = np.cumsum(second, axis=1) / np.maximum(count_second, 1.0)[:, None]
    statistic = np.max(np.abs(cdf_first - cdf_second), axis=1)
    return np.where(defined, statistic, np.nan)


def epoch_premise_scalars(
    histograms: dict[str, np.ndarray], class_names: tuple[str, ...]
) -> dict[str, float]:
    """Scalars logged per epoch: `satl/premise_ks_{positive,negative}/<class>` where both
    samples are non-empty, and their mean and maximum over those classes."""
    scalars: dict[str, float] = {}
    for sign, (known, hidden) in COMPARISONS.items():
        statistic = binned_ks_statistic(histograms[known], histograms[hidden])
        for name, value in zip(class_names, statistic):
            if np.isfinite(value):
                scalars[f"satl/premise_ks_{sign}/{name}"] = float(value)
        if np.any(np.isfinite(statistic)):
            scalars[f"satl/premise_ks_{sign}_mean"] = float(np.nanmean(statistic))
            scalars[f"satl/premise_ks_{sign}_max"] = float(np.nanmax(statistic))
    return scalars
