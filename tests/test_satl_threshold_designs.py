"""SATL's threshold designs beyond §4.4 (docs/methods/satl.md, "Threshold rules"): class-prior
matching, asymmetric thresholds and precision-weighted pseudo labels, on hand-computed
histograms with K = 4 bins (edges 0, 0.25, 0.5, 0.75). Every expected threshold is a bin edge,
so they are compared exactly; the weighted BCE to float32 round-off of a few terms."""

import math

import jax
import numpy as np
import pytest

from mlrpl_jax.methods.thresholds import histogram_thresholds
from mlrpl_jax.methods.thresholds.satl import weighted_pseudo_bce

MIN_COUNT = 5.0


def prior_case():
    """(H+, H-, H^u) (5, 4): known priors 0.2, 0.5, 0, 0.2 and a class with 3 known entries."""
    positive = np.array(
        [[0, 0, 1, 1], [0, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 2], [0, 0, 0, 1]], np.float32
    )
    negative = np.array(
        [[4, 2, 1, 1], [3, 1, 1, 0], [5, 3, 1, 1], [8, 0, 0, 0], [1, 1, 0, 0]], np.float32
    )
    unknown = np.array(
        [[4, 3, 2, 1], [4, 3, 2, 1], [4, 3, 2, 1], [10, 0, 0, 0], [4, 3, 2, 1]], np.float32
    )  # unknown tails of classes 0-2 and 4: 10, 6, 3, 1
    return positive, negative, unknown


@pytest.mark.parametrize(
    "prior_fraction,expected",
    [
        # target ρ π̂ n^u = 2 (class 0) and 5 (class 1): the first tails at most that hold 1 and 3.
        (1.0, [0.75, 0.5]),
        # targets 1 and 2.5: tail 1 for both.
        (0.5, [0.75, 0.75]),
    ],
)
def test_prior_matching_marks_the_top_of_the_unknown_scores(prior_fraction, expected):
    positive, negative, unknown = prior_case()
    tau_pos = jax.device_get(
        histogram_thresholds.prior_matching_thresholds(
            positive, negative, unknown, prior_fraction=prior_fraction, min_count=MIN_COUNT
        )
    )
    np.testing.assert_array_equal(tau_pos[:2], np.float32(expected))
    # Prior 0: no positives; class 3: every unknown score in bin 0, so the top fraction cannot be
    # told apart (the qualifying tail is empty); class 4: 3 < n_min known entries.
    assert np.all(np.isinf(tau_pos[2:]))


def test_prior_rule_keeps_the_default_negatives_below_its_positive_threshold():
    positive, negative, unknown = prior_case()
    positive[1] = [0, 0, 0, 5]  # n+ = 5 >= n_min: all 5 known positives lie at or above e_3
    tau_pos, tau_neg = jax.device_get(
        histogram_thresholds.category_thresholds(
            positive,
            negative,
            rule="prior",
            min_precision=0.9,
            max_missed_positive_fraction=0.05,
            min_count=MIN_COUNT,
            unknown=unknown,
            prior_fraction=1.0,
        )
    )
    prior_pos = histogram_thresholds.prior_matching_thresholds(
        positive, negative, unknown, prior_fraction=1.0, min_count=MIN_COUNT
    )
    np.testing.assert_array_equal(tau_pos, prior_pos)
    # The missed-positive budget alone would give e_3 for class 1; τ+ = 0.5 caps it.
    assert tau_neg[1] == np.float32(0.5)
    np.testing.assert_array_equal(tau_neg[[0, 2, 3, 4]], 0.0)  # n+ < n_min


def test_rules_that_need_unknown_scores_say_so():
    positive, negative, _ = prior_case()
    with pytest.raises(ValueError, match="unknown entries' scores"):
        histogram_thresholds.category_thresholds(
            positive,
            negative,
            rule="prior",
            min_precision=0.9,
            max_missed_positive_fraction=0.05,
            min_count=MIN_COUNT,
        )


def asymmetric_case():
    """(H+, H-) (2, 4). Class 0: heads (entries below e_1..e_4) 10, 16, 20, 30 of which
    negative 10, 15, 18, 20: precisions 1, 0.9375, 0.9, 0.667. Class 1: heads 2, 4, 7, 20 of
    which negative 2, 4, 6, 10: too few below e_2, then 6/7 = 0.857 and 0.5."""
    positive = np.array([[0, 1, 1, 8], [0, 0, 1, 9]], np.float32)
    negative = np.array([[10, 5, 3, 2], [2, 2, 2, 4]], np.float32)
    return positive, negative


@pytest.mark.parametrize(
    "min_negative_precision,expected",
    [
        (0.9, [0.75, 0.0]),  # class 0 up to the head of 20; class 1 never reaches 0.9 with n >= 5
        (0.95, [0.25, 0.0]),
        (0.85, [0.75, 0.75]),  # class 1: 0.857 below e_3
    ],
)
def test_negative_precision_thresholds(min_negative_precision, expected):
    tau_neg = jax.device_get(
        histogram_thresholds.negative_precision_thresholds(
            *asymmetric_case(), min_negative_precision=min_negative_precision, min_count=MIN_COUNT
        )
    )
    np.testing.assert_array_equal(tau_neg, np.float32(expected))


def test_asymmetric_rule_has_few_confident_positives_and_liberal_negatives():
    positive, negative = asymmetric_case()
    unknown = np.array([[7, 1, 1, 1], [0, 0, 5, 5]], np.float32)  # tails 10,3,2,1 / 10,10,10,5
    tau_pos, tau_neg = jax.device_get(
        histogram_thresholds.category_thresholds(
            positive,
            negative,
            rule="asymmetric",
            min_precision=0.6,
            max_missed_positive_fraction=0.05,
            min_count=MIN_COUNT,
            unknown=unknown,
            prior_fraction=1.0,
            min_negative_precision=0.85,
        )
    )
    # Class 0: tail precisions 10/30, 10/20, 9/14, 8/10 first reach ρ+ = 0.6 at e_2; the prior
    # (ρ π̂ n^u = 10/30 * 10 = 3.3 unknowns) alone would allow e_1; the stricter e_2 wins.
    # Class 1: tail precisions 10/20, 10/18, 10/16, 9/13 allow e_2, but the prior (10/20 * 10 =
    # 5 unknowns) allows only the top bin: e_3.
    np.testing.assert_array_equal(tau_pos, np.float32([0.5, 0.75]))
    # τ- of ρ- = 0.85 is e_3 for both (test_negative_precision_thresholds), capped at τ+.
    np.testing.assert_array_equal(tau_neg, np.float32([0.5, 0.75]))


def test_precision_weights_of_pseudo_labels_and_their_bce():
    positive, negative = asymmetric_case()
    positive, negative = positive[:1], negative[:1]  # class 0 of asymmetric_case
    scores = np.array([[0.8], [0.1], [0.6], [0.3]], np.float32)  # bins 3, 0, 2, 1
    pseudo = np.array([[1.0], [-1.0], [0.0], [-1.0]], np.float32)
    weights = jax.device_get(
        histogram_thresholds.pseudo_label_precision(
            scores, pseudo, positive, negative, min_count=MIN_COUNT
        )
    )
    # +1 in bin 3: tail precision 8/10; -1 in bins 0 and 1: head precisions 10/10 and 15/16.
    np.testing.assert_allclose(weights[:, 0], [0.8, 1.0, 0.0, 0.9375], rtol=1e-7)

    logits = np.array([[2.0], [-1.0], [0.5], [0.0]], np.float32)

    def softplus(x):
        return math.log1p(math.exp(x))

    expected = (0.8 * softplus(-2.0) + 1.0 * softplus(-1.0) + 0.9375 * softplus(0.0)) / 3
    # float32 terms of size ~1, three of them summed: a few ulp.
    np.testing.assert_allclose(
        float(weighted_pseudo_bce(logits, pseudo, weights)), expected, rtol=1e-6
    )
