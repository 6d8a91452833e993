"""SATL's pure functions (docs/methods/satl.md §4.2-4.6, our design): histograms against NumPy, thresholds on
synthetic distributions, pseudo labels, and the ranking loss on a hand-computed case."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlrpl_jax.methods.thresholds import histogram_thresholds

K = 10
RULE_OPTIONS = dict(min_precision=0.9, max_missed_positive_fraction=0.05, min_count=20.0)


def numpy_histograms(scores, labels, num_bins):
    bins = np.minimum((scores * num_bins).astype(np.int64), num_bins - 1)  # floor of non-negatives
    positive, negative = (
        np.zeros((scores.shape[1], num_bins)),
        np.zeros((scores.shape[1], num_bins)),
    )
    for (i, c), b in np.ndenumerate(bins):
        if labels[i, c] == 1:
            positive[c, b] += 1
        elif labels[i, c] == -1:
            negative[c, b] += 1
    return positive, negative


def test_histograms_and_their_decay_equal_a_numpy_recomputation():
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
        scores = rng.random((16, 5), dtype=np.float32)
        scores[0, :3] = [0.0, 1.0, 0.5]  # the ends and an edge: bins 0, K-1 and 5
        batches.append((scores, rng.choice([-1.0, 0.0, 1.0], size=(16, 5)).astype(np.float32)))
    decay = math.exp(-1 / 3)
    positive = negative = jnp.zeros((5, K))
    expected_pos, expected_neg = np.zeros((5, K)), np.zeros((5, K))
    for scores, labels in batches:
        counts_pos, counts_neg = jax.jit(histogram_thresholds.score_histograms, static_argnums=2)(
            scores, labels, K
        )
        reference_pos, reference_neg = numpy_histograms(scores, labels, K)
        np.testing.assert_array_equal(counts_pos, reference_pos)
        np.testing.assert_array_equal(counts_neg, reference_neg)
        positive = histogram_thresholds.decayed_update(positive, counts_pos, decay)
        negative = histogram_thresholds.decayed_update(negative, counts_neg, decay)
        expected_pos = decay * expected_pos + reference_pos
        expected_neg = decay * expected_neg + reference_neg
    np.testing.assert_allclose(positive, expected_pos, rtol=1e-6)
    np.testing.assert_allclose(negative, expected_neg, rtol=1e-6)


def synthetic_histograms():
    """H+, H- (5, K): separated, overlapping, empty, too few positives, high-scoring negatives."""
    positive, negative = np.zeros((5, K), np.float32), np.zeros((5, K), np.float32)
    positive[0, 8], negative[0, 1] = 50, 200  # well separated
    positive[1, 5:], negative[1, :7] = 20, 100  # overlapping
    positive[3, 9], negative[3, 0] = 5, 200  # n+ = 5 < n_min
    positive[4, 5], negative[4, 9], negative[4, 0] = 1000, 25, 100  # precision 0 above 0.9
    return positive, negative


def test_precision_rule_on_synthetic_distributions():
    tau_pos, tau_neg = jax.device_get(
        histogram_thresholds.category_thresholds(
            *synthetic_histograms(), rule="precision", **RULE_OPTIONS
        )
    )
    # Separated: precision 1 from e_2 on; L+ <= 2.5 up to e_8, capped at τ+, so both meet at 0.2.
    assert (tau_pos[0], tau_neg[0]) == (np.float32(0.2), np.float32(0.2))
    # Overlapping: precision 100/300, 80/180, then 1 at e_7; 20 of 100 positives lie below e_6.
    assert (tau_pos[1], tau_neg[1]) == (np.float32(0.7), np.float32(0.5))
    # Empty class and a class with too few positives: no pseudo labels at all.
    assert np.all(np.isinf(tau_pos[2:4])) and np.all(tau_neg[2:4] == 0.0)
    # Raw precision 1000/1025 at e_1..e_5, but the tail above e_6 is all negatives: the reverse
    # cumulative minimum (precision may only rise with the threshold) rules out every edge. The
    # positives all lie at or above e_5, so negatives are still made below it.
    assert np.isinf(tau_pos[4]) and tau_neg[4] == np.float32(0.5)


def test_positive_only_rule_on_synthetic_distributions():
    positive, negative = synthetic_histograms()
    pos_only = histogram_thresholds.category_thresholds(
        positive, negative, rule="pos_only", **RULE_OPTIONS
    )
    precision = histogram_thresholds.category_thresholds(
        positive, negative, rule="precision", **RULE_OPTIONS
    )
    np.testing.assert_array_equal(pos_only[0], precision[0])
    np.testing.assert_array_equal(pos_only[1], 0.0)

    with pytest.raises(ValueError, match="unknown threshold rule"):
        histogram_thresholds.category_thresholds(positive, negative, rule="median", **RULE_OPTIONS)


def test_pseudo_labels_only_on_unknown_entries():
    scores = np.array([[0.9, 0.9, 0.1, 0.5, 0.6]], np.float32)
    labels = np.array([[0.0, -1.0, 0.0, 0.0, 0.0]], np.float32)
    tau_pos = np.array([0.8, 0.8, 0.8, 0.8, 0.6], np.float32)  # s = τ+ is positive
    tau_neg = np.array([0.2, 0.2, 0.2, 0.2, np.inf], np.float32)
    tau_pos[3] = np.inf
    pseudo = histogram_thresholds.threshold_pseudo_labels(scores, labels, tau_pos, tau_neg)
    np.testing.assert_array_equal(pseudo, [[1.0, 0.0, -1.0, 0.0, 1.0]])

    complete = np.array([[1.0, -1.0, 1.0, 1.0, 1.0]], np.float32)
    counts = jax.device_get(histogram_thresholds.pseudo_label_counts(pseudo, labels, complete))
    np.testing.assert_array_equal(counts["pseudo_positives"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(counts["true_pseudo_positives"], [1, 0, 0, 0, 1])
    np.testing.assert_array_equal(counts["pseudo_negatives"], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(counts["true_pseudo_negatives"], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(counts["hidden_positives"], [1, 0, 1, 1, 1])
    np.testing.assert_array_equal(counts["hidden_negatives"], [0, 0, 0, 0, 0])


def test_ranking_loss_value_and_gradient_on_a_hand_computed_case():
    # K = 2 (centres 0.25, 0.75), m = 0.5, β = 10. Class 0: H+ = [0, 2], H- = [3, 1] so
    # w+ = [0, 1], w- = [0.75, 0.25]. Class 1 has no negatives, so its positive is not ranked.
    positive = np.array([[0.0, 2.0], [0.0, 4.0]], np.float32)
    negative = np.array([[3.0, 1.0], [0.0, 0.0]], np.float32)
    scores = np.array([[0.6, 0.9], [0.3, 0.2], [0.4, 0.1]], np.float32)
    labels = np.array([[1.0, 1.0], [-1.0, 0.0], [-1.0, -1.0]], np.float32)
    beta, sig = 10.0, lambda x: 1 / (1 + math.exp(-x))

    def h(x):
        return math.log1p(math.exp(beta * x)) / beta

    # R+[0,0] = .75 h(.5 - (.6 - .25)) + .25 h(.5 - (.6 - .75)).
    r_pos = 0.75 * h(0.15) + 0.25 * h(0.65)
    # R-[j,0] = 1 * h(.5 - (.75 - s)) for s = .3, .4; R-[2,1] = h(.5 - (.75 - .1)).
    r_neg = [h(0.05), h(0.15), h(-0.15)]
    expected = r_pos + sum(r_neg) / 3

    def loss(s):
        return histogram_thresholds.distribution_ranking_loss(
            s, labels, positive, negative, margin=0.5, smoothness=beta
        )

    value, grad = jax.value_and_grad(loss)(jnp.asarray(scores))
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    expected_grad = np.zeros_like(scores)
    expected_grad[0, 0] = -(0.75 * sig(beta * 0.15) + 0.25 * sig(beta * 0.65))
    expected_grad[1, 0], expected_grad[2, 0], expected_grad[2, 1] = (
        sig(beta * 0.05) / 3,
        sig(beta * 0.15) / 3,
        sig(beta * -0.15) / 3,
    )
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_ranking_loss_is_zero_without_opposite_distributions():
    scores = jnp.full((2, 3), 0.5)
    labels = jnp.array([[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]])
    empty = jnp.zeros((3, K))
    value, grad = jax.value_and_grad(histogram_thresholds.distribution_ranking_loss)(
        scores, labels, empty, empty, margin=0.5, smoothness=10.0
    )
    assert float(value) == 0.0 and not np.any(grad)
