"""benchmarks/satl_threshold_rules.py: the `bayes` and `gauss` rules of docs/methods/satl.md §4.4
on the synthetic histograms of tests/test_thresholds.py, and SATL run with them."""

import importlib.util
import pathlib

import jax
import method_harness
import numpy as np
import pytest
from test_thresholds import K, synthetic_histograms

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "satl_threshold_rules.py"
spec = importlib.util.spec_from_file_location("satl_threshold_rules", SCRIPT)
rules = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rules)


def test_bayes_and_gauss_rules_on_synthetic_distributions():
    positive, negative = synthetic_histograms()
    tau_pos, tau_neg = jax.device_get(rules.bayes_thresholds(positive, negative, min_count=20.0))
    # Overlapping: L+ + T- = 700, 600, ..., 200, 120, 40, 60, 80 -> the cut is e_7.
    assert tau_pos[1] == tau_neg[1] == np.float32(0.7)
    assert tau_pos[0] == tau_neg[0] == np.float32(0.2)  # first zero-error edge
    assert np.all(np.isinf(tau_pos[2:4])) and np.all(tau_neg[2:4] == 0.0)

    tau_pos, tau_neg = jax.device_get(
        rules.gauss_thresholds(positive, negative, kappa=2.0, min_count=20.0)
    )
    centres = (np.arange(K) + 0.5) / K
    mean_p, mean_n = (np.average(centres, weights=h[1]) for h in (positive, negative))
    std_p = np.sqrt(np.average((centres - mean_p) ** 2, weights=positive[1]))
    std_n = np.sqrt(np.average((centres - mean_n) ** 2, weights=negative[1]))
    np.testing.assert_allclose(tau_pos[1], max(mean_n + 2 * std_n, 0.7), rtol=1e-6)
    np.testing.assert_allclose(tau_neg[1], min(mean_p - 2 * std_p, 0.7), rtol=1e-6)
    assert np.all(np.isinf(tau_pos[2:4])) and np.all(tau_neg[2:4] == 0.0)


@pytest.mark.parametrize("rule", ["bayes", "gauss"])
def test_satl_uses_the_chosen_rule(rule):
    config = method_harness.tiny_config("satl", threshold_rule=rule, gauss_kappa=1.5, min_count=2.0)
    data = method_harness.SyntheticTrainingData()
    method, _, _ = method_harness.build(rules.AlternativeRuleSATL, config, data)
    positive, negative = synthetic_histograms()
    expected = (
        rules.bayes_thresholds(positive, negative, min_count=2.0)
        if rule == "bayes"
        else rules.gauss_thresholds(positive, negative, kappa=1.5, min_count=2.0)
    )
    for ours, theirs in zip(method.thresholds(positive, negative), expected):  # τ+ may be +inf
        np.testing.assert_array_equal(ours, theirs)


def test_rejects_a_rule_it_does_not_compute():
    config = method_harness.tiny_config("satl", threshold_rule="precision")
    with pytest.raises(ValueError, match="threshold_rule must be one of bayes, gauss"):
        method_harness.build(
            rules.AlternativeRuleSATL, config, method_harness.SyntheticTrainingData()
        )
