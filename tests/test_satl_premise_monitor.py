"""SATL's premise monitor (mlrpl_jax/methods/thresholds/premise_monitor.py): the groups counted,
the binned Kolmogorov-Smirnov statistic against scipy.stats.ks_2samp, and the epoch scalars."""

import jax
import numpy as np
import pytest
import scipy.stats

from mlrpl_jax.methods.thresholds import histogram_thresholds, premise_monitor


def histogram(samples, num_bins):
    """(1, K) counts of a 1-D sample, binned as in the step."""
    scores = np.asarray(samples, np.float32)[:, None]  # (n, 1): n images of one class
    return np.asarray(
        jax.device_get(
            histogram_thresholds.score_histogram(scores, np.ones_like(scores, bool), num_bins)
        )
    )


def test_premise_histograms_count_known_and_hidden_entries_by_sign():
    scores = np.array([[0.05, 0.95], [0.55, 0.45], [0.95, 0.15]], np.float32)  # bins of K = 10
    trained = np.array([[-1, 1], [0, 0], [1, 0]], np.float32)
    labels = np.array([[-1, 1], [0, 0], [1, 0]], np.float32)
    complete = np.array([[-1, 1], [1, -1], [1, 1]], np.float32)
    groups = jax.device_get(
        premise_monitor.premise_histograms(scores, trained, labels, complete, 10)
    )
    expected = {group: np.zeros((2, 10)) for group in premise_monitor.GROUPS}
    expected["known_negative"][0, 0] = 1
    expected["known_positive"][1, 9] = 1
    expected["hidden_positive"][0, 5] = 1  # image 1, class 0: unknown, hidden +1
    expected["hidden_negative"][1, 4] = 1
    expected["known_positive"][0, 9] = 1
    expected["hidden_positive"][1, 1] = 1  # image 2, class 1
    for group in premise_monitor.GROUPS:
        np.testing.assert_array_equal(groups[group], expected[group], err_msg=group)

    # An entry the loss did not train on but that is known (a held-out calibration label) is in
    # neither group.
    trained_out = trained.copy()
    trained_out[2, 0] = 0
    groups = jax.device_get(
        premise_monitor.premise_histograms(scores, trained_out, labels, complete, 10)
    )
    assert groups["known_positive"][0].sum() == 0 and groups["hidden_positive"][0].sum() == 1


def test_ks_statistic_is_exact_when_scores_lie_at_bin_centres():
    num_bins = 20
    rng = np.random.default_rng(0)
    first = (rng.integers(0, num_bins, 37) + 0.5) / num_bins
    second = (rng.integers(5, num_bins, 53) + 0.5) / num_bins
    ours = premise_monitor.binned_ks_statistic(
        histogram(first, num_bins), histogram(second, num_bins)
    )
    exact = scipy.stats.ks_2samp(first, second).statistic
    # Both are a difference of two count ratios (k/37 - l/53); float64 round-off only.
    np.testing.assert_allclose(ours, [exact], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_ks_statistic_is_within_the_bin_share_of_scipy(seed):
    num_bins = 100
    rng = np.random.default_rng(seed)
    first, second = rng.beta(2, 5, 500), rng.beta(2, 3, 700)
    first_hist = histogram(first, num_bins)
    second_hist = histogram(second, num_bins)
    ours = float(premise_monitor.binned_ks_statistic(first_hist, second_hist)[0])
    exact = scipy.stats.ks_2samp(first.astype(np.float32), second.astype(np.float32)).statistic
    # Inside a bin each empirical CDF rises by its sample's share of the bin, so the binned
    # statistic (taken at the edges) is at most the exact one and short of it by at most the
    # largest share of either sample in one bin (~ density bound / K: here about 0.03).
    largest_share = max(first_hist.max() / first.size, second_hist.max() / second.size)
    assert ours <= exact + 1e-12
    assert exact <= ours + largest_share + 1e-12
    assert largest_share < 0.05  # the bound is informative at K = 100


def test_ks_statistic_is_undefined_for_an_empty_sample():
    filled = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    other = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    statistic = premise_monitor.binned_ks_statistic(filled, other)
    # Class 0: CDFs 1/3, 1, 1 and 0, 1/3, 1.
    np.testing.assert_allclose(statistic[0], 2 / 3, rtol=1e-12)
    assert np.isnan(statistic[1])


def test_epoch_scalars_per_class_and_over_the_classes():
    zeros = np.zeros((3, 2))
    histograms = {
        "known_positive": np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
        "hidden_positive": np.array([[1.0, 1.0], [0.0, 4.0], [0.0, 0.0]]),  # class 2 empty
        "known_negative": np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]),
        "hidden_negative": zeros + [[0.0, 1.0]],
    }
    scalars = premise_monitor.epoch_premise_scalars(histograms, ("a", "b", "c"))
    assert scalars == {
        "satl/premise_ks_positive/a": 0.5,
        "satl/premise_ks_positive/b": 0.0,
        "satl/premise_ks_positive_mean": 0.25,
        "satl/premise_ks_positive_max": 0.5,
        "satl/premise_ks_negative/a": 1.0,
        "satl/premise_ks_negative/b": 1.0,
        "satl/premise_ks_negative/c": 1.0,
        "satl/premise_ks_negative_mean": 1.0,
        "satl/premise_ks_negative_max": 1.0,
    }
