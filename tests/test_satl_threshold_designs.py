"""benchmarks/satl_threshold_designs.py, SATL's threshold designs measured and not kept
(docs/results/satl_experiments.md): class-prior matching, asymmetric thresholds and
precision-weighted pseudo labels on hand-computed histograms with K = 4 bins (edges 0, 0.25,
0.5, 0.75; every expected threshold is a bin edge, so they are compared exactly; the weighted
BCE to float32 round-off of a few terms), the designs in SATL's step, and the scores of the
model EMA."""

import math

import jax
import method_harness
import numpy as np
import pytest
import satl_threshold_designs as designs
from test_satl import (
    build_satl,
    check_histograms_in_the_step,
    histogram_counts,
    train_mode_scores,
    with_other_ema,
)

from mlrpl_jax.config import DIGIT_REGIMES, ConfigError, digit_scenes_config, validate_config
from mlrpl_jax.core import train
from mlrpl_jax.methods.thresholds import histogram_thresholds

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
        designs.prior_matching_thresholds(
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
        designs.design_thresholds(
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
    prior_pos = designs.prior_matching_thresholds(
        positive, negative, unknown, prior_fraction=1.0, min_count=MIN_COUNT
    )
    np.testing.assert_array_equal(tau_pos, prior_pos)
    # The missed-positive budget alone would give e_3 for class 1; τ+ = 0.5 caps it.
    assert tau_neg[1] == np.float32(0.5)
    np.testing.assert_array_equal(tau_neg[[0, 2, 3, 4]], 0.0)  # n+ < n_min


def test_rules_that_need_unknown_scores_say_so():
    positive, negative, _ = prior_case()
    with pytest.raises(ValueError, match="unknown entries' scores"):
        designs.design_thresholds(
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
        designs.negative_precision_thresholds(
            *asymmetric_case(), min_negative_precision=min_negative_precision, min_count=MIN_COUNT
        )
    )
    np.testing.assert_array_equal(tau_neg, np.float32(expected))


def test_asymmetric_rule_has_few_confident_positives_and_liberal_negatives():
    positive, negative = asymmetric_case()
    unknown = np.array([[7, 1, 1, 1], [0, 0, 5, 5]], np.float32)  # tails 10,3,2,1 / 10,10,10,5
    tau_pos, tau_neg = jax.device_get(
        designs.design_thresholds(
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
        designs.pseudo_label_precision(scores, pseudo, positive, negative, min_count=MIN_COUNT)
    )
    # +1 in bin 3: tail precision 8/10; -1 in bins 0 and 1: head precisions 10/10 and 15/16.
    np.testing.assert_allclose(weights[:, 0], [0.8, 1.0, 0.0, 0.9375], rtol=1e-7)

    logits = np.array([[2.0], [-1.0], [0.5], [0.0]], np.float32)

    def softplus(x):
        return math.log1p(math.exp(x))

    expected = (0.8 * softplus(-2.0) + 1.0 * softplus(-1.0) + 0.9375 * softplus(0.0)) / 3
    # float32 terms of size ~1, three of them summed: a few ulp.
    np.testing.assert_allclose(
        float(designs.weighted_pseudo_bce(logits, pseudo, weights)), expected, rtol=1e-6
    )


def build_designs(**options):
    """The benchmark's SATL subclass with SATL_OPTIONS and `options` (test_satl.build_satl)."""
    return build_satl(method_class=designs.ThresholdDesignSATL, **options)


def test_with_the_defaults_it_keeps_the_unknown_histogram_and_reads_no_model_ema():
    """The defaults are SATL's (student scores: the step gets no model EMA, so its loss cannot
    read one, test_satl.test_satl_reads_no_model_ema) plus H^u, which the step fills from the
    unknown entries' scores."""
    method, optimizer, host_state, data = build_designs(ema_decay=0.5)
    assert method.options.score_source == "student"
    assert method.model_ema_in_loss(method.config) == ""
    check_histograms_in_the_step(
        method, optimizer, host_state, data, names=("positive", "negative", "unknown")
    )


def test_asymmetric_precision_weighted_design_in_the_step():
    method, optimizer, host_state, data = build_designs(
        threshold_rule="asymmetric",
        pseudo_label_weighting="precision",
        prior_fraction=1.0,
        min_negative_precision=0.6,
    )
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    state, history = runner.run(runner.replicate(host_state), 4)
    assert all(h["satl/pseudo_on"] == 1.0 for h in history[2:])
    assert sum(h["satl/pseudo_negatives"] for h in history[2:]) > 0
    # The weights are precisions of pseudo-label sets, in (0, 1]; their mean is 0 without any.
    made = [h["satl/pseudo_positives"] + h["satl/pseudo_negatives"] > 0 for h in history]
    assert all(
        (0.0 < h["satl/mean_pseudo_weight"] <= 1.0)
        if any_made
        else h["satl/mean_pseudo_weight"] == 0.0
        for h, any_made in zip(history, made)
    )
    assert any(h["satl/mean_pseudo_weight"] < 1.0 for h in history[2:])  # ... and below 1 here
    assert np.all(np.isfinite([h["loss"] for h in history]))
    stats = jax.device_get(state.method_state["satl"])
    tau_pos, tau_neg = method.thresholds_from_state(stats)
    expected = designs.design_thresholds(
        stats["positive_histogram"],
        stats["negative_histogram"],
        rule="asymmetric",
        min_precision=0.5,
        max_missed_positive_fraction=0.05,
        min_count=2.0,
        unknown=stats["unknown_histogram"],
        prior_fraction=1.0,
        min_negative_precision=0.6,
    )
    np.testing.assert_array_equal(tau_pos, expected[0])
    np.testing.assert_array_equal(tau_neg, expected[1])


def test_ema_teacher_scores_set_the_histograms_and_pseudo_labels():
    """score_source='ema_teacher': H±, H^u and the pseudo labels come from the EMA's
    inference-mode scores of the batch, recomputed here from the state before each step."""
    method, optimizer, host_state, data = build_designs(ema_decay=0.5, score_source="ema_teacher")
    assert method.model_ema_in_loss(method.config) == "satl.score_source='ema_teacher'"
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    decay = math.exp(-1.0 / method_harness.STEPS_PER_EPOCH)  # memory_epochs = 1
    teacher_forward = jax.jit(
        lambda variables, images: jax.nn.sigmoid(
            method.model.apply(variables, images, train=False).logits
        )
    )
    state = runner.replicate(with_other_ema(method, host_state, seed=1))
    expected = np.zeros((3, method_harness.NUM_CLASSES, 10))  # H+, H-, H^u
    pseudo_made = 0.0
    for step in range(4):
        batch, before = data.batch(step), jax.device_get(state)
        teacher = np.asarray(teacher_forward(before.ema_variables(), batch["image"]))  # (B, C)
        student = train_mode_scores(method, state, batch)
        labels = batch["labels"]
        tau_pos, tau_neg = method.thresholds_from_state(before.method_state["satl"])
        pseudo = np.asarray(
            histogram_thresholds.threshold_pseudo_labels(teacher, labels, tau_pos, tau_neg)
        )
        counts = {
            source: histogram_counts(scores, labels, (1, -1, 0))
            for source, scores in (("teacher", teacher), ("student", student))
        }
        # The two sources bin this batch differently, so the comparison below tells them apart.
        assert np.any(counts["teacher"] != counts["student"])
        expected = decay * expected + counts["teacher"]
        state, (scalars,) = runner.run(state, 1)
        stats = jax.device_get(state.method_state["satl"])
        # Each entry is Σ_s λ^(n-s) c_s of non-negative integer counts, made in float32 by one
        # product and one sum per step from λ rounded once: relative error <= (2n + n) u
        # (u = 2^-24; λ^k carries k roundings of λ), 7.2e-7 after n = 4 steps.
        for index, key in enumerate(("positive", "negative", "unknown")):
            np.testing.assert_allclose(stats[f"{key}_histogram"], expected[index], rtol=1e-6)
        assert float(scalars["satl/pseudo_positives"]) == np.sum(pseudo == 1)
        assert float(scalars["satl/pseudo_negatives"]) == np.sum(pseudo == -1)
        pseudo_made += float(scalars["satl/pseudo_on"]) * np.sum(pseudo != 0)
    assert pseudo_made > 0  # the teacher's pseudo labels entered the loss in epoch 1


def test_ema_teacher_without_a_model_ema_stops_at_config_validation(tmp_path):
    """The script's config (`with_design_options`) asking for the EMA's scores without an EMA."""
    config = designs.with_design_options(digit_scenes_config("satl", "cached"))
    assert config.method == designs.ThresholdDesignSATL.name
    config.satl.score_source = "ema_teacher"
    message = r"satl.score_source='ema_teacher' scores .* set ema.decay > 0"
    with pytest.raises(ConfigError, match=message):
        validate_config(config)
    # A run stops there, before it opens the data (which this data_dir does not hold).
    config.data.data_dir = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match=message):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    config.ema.decay = DIGIT_REGIMES["cached"].ema_decay
    validate_config(config)


def test_invalid_design_options_are_rejected():
    with pytest.raises(ValueError, match="pseudo_label_weighting must be one of hard, precision"):
        build_designs(pseudo_label_weighting="soft")
    with pytest.raises(ValueError, match=r"prior_fraction must be in \(0, 1\]"):
        build_designs(threshold_rule="prior", prior_fraction=0.0)
    with pytest.raises(ValueError, match=r"min_negative_precision must be in \(0, 1\]"):
        build_designs(threshold_rule="asymmetric", min_negative_precision=1.5)
    with pytest.raises(ValueError, match="score_source must be one of student, ema_teacher"):
        build_designs(score_source="teacher")
    with pytest.raises(
        ValueError, match="threshold_rule must be one of precision, pos_only, prior"
    ):
        build_designs(threshold_rule="median")
