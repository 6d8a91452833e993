"""Partial-label losses of the field's simple baselines as pure functions
(docs/methods/partial_losses.md).

Every function takes logits z (B, C) and partial labels t in {-1, 0, +1} (B, C): +1 a known
positive, -1 a known negative, 0 unknown (docs/methods/problem_and_data.md §0). With p = σ(z)
the two per-entry terms are the asymmetric loss's (Ridnik et al. 2021):

    l+(z) = -(1 - p)^γ+ log p,            l-(z) = -p_m^γ- log(1 - p_m),  p_m = max(p - m, 0),

whose focusing weights (1 - p)^γ+ and p_m^γ- carry no gradient (as in ASL's and mlcpl's code);
γ+ = γ- = m = 0 gives binary cross-entropy. The functions differ in how the unknown entries
enter, and every mean is over the entries that take part, counted in the whole batch. All are
``jnp`` only, static in shape and safe under ``jax.jit``; none sees the hidden labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def asymmetric_terms(
    logits: jax.Array, *, gamma_pos: float = 0.0, gamma_neg: float = 0.0, clip: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """(l+, l-) of every entry, each (B, C): the loss if the entry were positive / negative."""
    logits = jnp.asarray(logits, jnp.float32)
    probability = jax.nn.sigmoid(logits)
    positive = -jax.nn.log_sigmoid(logits)
    if gamma_pos:
        positive = positive * jax.lax.stop_gradient(1.0 - probability) ** gamma_pos
    if clip:
        # 1 - p_m = min(1 - p + m, 1) = min(σ(-z) + m, 1)
        not_shifted = jnp.minimum(jax.nn.sigmoid(-logits) + clip, 1.0)
        negative = -jnp.log(not_shifted)
        shifted_probability = 1.0 - not_shifted
    else:
        negative = -jax.nn.log_sigmoid(-logits)
        shifted_probability = probability
    if gamma_neg:
        negative = negative * jax.lax.stop_gradient(shifted_probability) ** gamma_neg
    return positive, negative


def _mean_over(losses: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(w l) / |{w > 0}|; 0 with zero gradient when no entry takes part."""
    count = jnp.sum(weights > 0, dtype=jnp.int32)
    return jnp.sum(weights * losses) / jnp.maximum(count, 1).astype(losses.dtype)


def _check_shapes(logits: jax.Array, labels: jax.Array) -> None:
    if jnp.shape(logits) != jnp.shape(labels) or jnp.ndim(logits) != 2:
        raise ValueError(
            f"logits and partial labels must both be (B, C), got {jnp.shape(logits)} "
            f"and {jnp.shape(labels)}"
        )


def weak_assume_negative_bce(
    logits: jax.Array, labels: jax.Array, *, unknown_weight: float | jax.Array
) -> jax.Array:
    """Weak assume-negative BCE (Cole et al. 2021 "WAN"): unknowns are negatives of weight γ.

        L = 1/(BC) Σ_{b,c} ( [t=1] l+ + [t=-1] l- + γ [t=0] l- )

    The mean runs over all B·C entries, so γ = 1 is the assume-negative loss and γ = 0 the
    known-label sum divided by every entry. Cole et al. use γ = 1/(C - 1).
    """
    _check_shapes(logits, labels)
    positive, negative = asymmetric_terms(logits)
    weights = jnp.where(labels == 0, jnp.asarray(unknown_weight, jnp.float32), 1.0)
    return jnp.mean(jnp.where(labels > 0, positive, weights * negative))


def assume_negative_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Assume-negative BCE: every unknown is a negative. L = 1/(BC) Σ ([t=1] l+ + [t<1] l-)."""
    return weak_assume_negative_bce(logits, labels, unknown_weight=1.0)


def partial_asymmetric_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    assume_negative: bool,
) -> jax.Array:
    """Asymmetric loss on the known labels (partial ASL) or with unknowns as negatives.

        L = Σ ([t=1] l+ + [t=-1] l- + a [t=0] l-) / |{t≠0} ∪ a{t=0}|,  a = assume_negative,

    i.e. the mean over the known entries (a = 0) or over all entries (a = 1).
    """
    _check_shapes(logits, labels)
    positive, negative = asymmetric_terms(
        logits, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip
    )
    used = jnp.ones_like(negative) if assume_negative else (labels != 0).astype(jnp.float32)
    return _mean_over(jnp.where(labels > 0, positive, negative), used)


def soft_partial_asymmetric_loss(
    logits: jax.Array, targets: jax.Array, *, gamma_pos: float, gamma_neg: float, clip: float
) -> jax.Array:
    """Partial ASL of soft targets y in [-1, 1], such as SARB's blended ones (ours).

    An entry y != 0 is positive with probability q = y (y > 0) or q = 1 + y (y < 0), and

        L = Σ_{y≠0} (q l+ + (1 - q) l-) / |{y ≠ 0}|.

    At y = ±1 this is `partial_asymmetric_loss`; with γ+ = γ- = m = 0 it is the partial BCE of
    soft targets (docs/methods/losses.md §5.1). The targets receive gradient (dL/dq ∝ l+ - l-).
    """
    _check_shapes(logits, targets)
    positive, negative = asymmetric_terms(
        logits, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip
    )
    targets = jnp.asarray(targets, jnp.float32)
    selected = targets != 0
    probability = jnp.where(targets > 0, targets, 1.0 + targets)
    mixed = probability * positive + (1.0 - probability) * negative
    return _mean_over(jnp.where(selected, mixed, 0.0), selected.astype(jnp.float32))


def known_label_class_prior(partial_labels: np.ndarray) -> np.ndarray:
    """π̂_c = #known positives of c / #known labels of c, (C,), from (N, C) partial labels.

    Under the element-wise uniform drop of the HCPLab protocol the known entries of a class are
    a uniform sample of its entries, so π̂_c is an unbiased estimate of its positive rate. A class
    without any known label has no estimate: ValueError naming it.
    """
    partial_labels = np.asarray(partial_labels)
    known = np.sum(partial_labels != 0, axis=0)  # (C,)
    missing = np.flatnonzero(known == 0)
    if missing.size:
        raise ValueError(
            f"classes {missing.tolist()} have no known training label, so their "
            "prior (the positive rate among known labels) is undefined; use a "
            "larger known_ratio"
        )
    return (np.sum(partial_labels > 0, axis=0) / known).astype(np.float32)


def _largest_first_rank(scores: jax.Array) -> jax.Array:
    """Rank of every entry of `scores` (B, C) in decreasing order over the whole batch, (B, C)."""
    order = jnp.argsort(-scores.reshape(-1))
    return (
        jnp.zeros(order.shape, jnp.int32)
        .at[order]
        .set(jnp.arange(order.size, dtype=jnp.int32))
        .reshape(scores.shape)
    )


def selective_asymmetric_loss(
    logits: jax.Array,
    labels: jax.Array,
    class_prior: jax.Array,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    prior_threshold: float,
    likelihood_topk: int,
) -> jax.Array:
    """Class-aware selective loss (Ben-Baruch et al. 2022, CSL) with asymmetric terms.

    An unknown entry (b, c) is ignored if its class is frequent, π_c > prior_threshold, or if it
    is among the K = likelihood_topk · B unknowns of the batch with the largest predicted p (the
    likely missed positives); every other unknown is a negative:

        L = Σ ([t=1] l+ + [t=-1] l- + s [t=0] l-) / |{t≠0} ∪ {s=1}|,
        s_bc = [π_c <= threshold] [rank_b'c'(p over the batch's unknowns)(b, c) >= K].

    The selection carries no gradient. `class_prior` (C,) is e.g. known_label_class_prior.
    """
    _check_shapes(logits, labels)
    positive, negative = asymmetric_terms(
        logits, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip
    )
    unknown = labels == 0
    likelihood = jnp.where(unknown, jax.nn.sigmoid(jax.lax.stop_gradient(logits)), -jnp.inf)
    likely_positive = _largest_first_rank(likelihood) < likelihood_topk * logits.shape[0]
    rare = jnp.asarray(class_prior)[None, :] <= prior_threshold  # (1, C)
    used = ~unknown | (rare & ~likely_positive)
    return _mean_over(jnp.where(labels > 0, positive, negative), used.astype(jnp.float32))


def large_loss_rejection_rate(epoch: jax.Array, delta_rel: float) -> jax.Array:
    """Share of the unknowns whose loss is modified in `epoch` (0-based): min(epoch Δ_rel/100, 1).

    Kim et al. 2022 raise it by Δ_rel percent per epoch from 0 in the first epoch.
    """
    return jnp.minimum(jnp.asarray(epoch, jnp.float32) * (delta_rel / 100.0), 1.0)


def large_loss_modified(
    logits: jax.Array, labels: jax.Array, rejection_rate: jax.Array, *, correct: bool
) -> jax.Array:
    """Large-loss rejection (LL-R) or temporary correction (LL-Ct), Kim et al. 2022.

    Unknowns are negatives (assume negative); of the batch's n_u unknown entries, the
    k = round(r n_u) with the largest l- are modified: LL-R drops them (λ = 0), LL-Ct counts
    them as positives for this step. With M the modified set,

        L = 1/(BC) Σ_{b,c} ( [t=1] l+ + [t≠1, (b,c)∉M] l- + correct [(b,c)∈M] l+ ).

    The choice of M carries no gradient.
    """
    _check_shapes(logits, labels)
    positive, negative = asymmetric_terms(logits)
    unknown = labels == 0
    unknown_loss = jnp.where(unknown, jax.lax.stop_gradient(negative), -jnp.inf)
    num_modified = jnp.round(rejection_rate * jnp.sum(unknown, dtype=jnp.float32))
    modified = unknown & (_largest_first_rank(unknown_loss) < num_modified)
    replacement = positive if correct else jnp.zeros_like(negative)
    return jnp.mean(jnp.where(labels > 0, positive, jnp.where(modified, replacement, negative)))
