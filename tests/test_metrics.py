"""Tests for mlrpl_jax.core.metrics: reference parity (metrics.npz), scikit-learn, mlcpl,
hand-computed cases."""

import numpy as np
import pytest
from mlcpl_modules import import_mlcpl
from sklearn.metrics import average_precision_score

from mlrpl_jax.core.metrics import (
    CALIBRATION_BINS,
    CALIBRATION_METRIC_NAMES,
    FIXED_RECALLS,
    PER_CLASS_AP,
    THRESHOLD_METRIC_NAMES,
    average_precision,
    calibration_errors,
    evaluate_scores,
    interpolated_average_precision,
    precision_at_recall,
    precision_at_recall_name,
    threshold_metrics,
)


def _as_array(metrics: dict[str, float], suffix: str = "") -> np.ndarray:
    return np.array([metrics[name + suffix] for name in THRESHOLD_METRIC_NAMES])


@pytest.mark.parametrize("tag", ["small", "medium"])
@pytest.mark.parametrize("target_kind", ["validate", "raw"])
def test_parity_with_reference(vectors, tag, target_kind):
    v = vectors("metrics")
    scores = v[f"{tag}/scores"]
    targets = v[f"{tag}/target_{target_kind}"]
    # The reference mAP is a fraction; its per-class AP is float32.
    np.testing.assert_allclose(
        np.mean(interpolated_average_precision(scores, targets)),
        v[f"{tag}/mAP_voc2012"],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        average_precision(scores, targets), v[f"{tag}/{target_kind}/ap_per_class"], rtol=1e-6
    )
    np.testing.assert_allclose(
        _as_array(threshold_metrics(scores, targets)), v[f"{tag}/{target_kind}/overall"], rtol=1e-12
    )
    np.testing.assert_allclose(
        _as_array(threshold_metrics(scores, targets, top_k=3)),
        v[f"{tag}/{target_kind}/overall_top3"],
        rtol=1e-12,
    )


@pytest.mark.parametrize("tag", ["small", "medium"])
def test_evaluate_scores_reports_reference_values_in_percent(vectors, tag):
    v = vectors("metrics")
    result = evaluate_scores(v[f"{tag}/scores"], v[f"{tag}/target_raw"])
    expected_names = (
        {"mAP", "mAP_plain", PER_CLASS_AP, *CALIBRATION_METRIC_NAMES}
        | {n + s for n in THRESHOLD_METRIC_NAMES for s in ("", "_top3")}
        | {precision_at_recall_name(r) for r in FIXED_RECALLS}
    )
    assert set(result) == expected_names
    np.testing.assert_allclose(result["mAP"], 100 * v[f"{tag}/mAP_voc2012"], rtol=1e-12)
    # the same float64 APs as the mAP's, each times 100: their mean is the mAP to round-off
    assert result[PER_CLASS_AP] == list(
        100 * interpolated_average_precision(v[f"{tag}/scores"], v[f"{tag}/target_raw"])
    )
    assert np.mean(result[PER_CLASS_AP]) == pytest.approx(result["mAP"], rel=1e-12)
    np.testing.assert_allclose(
        result["mAP_plain"], 100 * np.mean(v[f"{tag}/validate/ap_per_class"]), rtol=1e-6
    )
    np.testing.assert_allclose(_as_array(result), 100 * v[f"{tag}/validate/overall"], rtol=1e-12)
    np.testing.assert_allclose(
        _as_array(result, "_top3"), 100 * v[f"{tag}/validate/overall_top3"], rtol=1e-12
    )


def test_per_class_ap_without_zero_targets_is_each_class_ap_without_those_images():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 4))
    targets = rng.choice([-1.0, 0.0, 1.0], size=(40, 4), p=[0.5, 0.2, 0.3])
    per_class = evaluate_scores(scores, targets, ignore_zero_targets=True)[PER_CLASS_AP]
    for c in range(4):
        kept = targets[:, c] != 0
        expected = interpolated_average_precision(scores[kept, c : c + 1], targets[kept, c : c + 1])
        assert per_class[c] == pytest.approx(100 * expected[0], rel=1e-12)


def test_class_without_positives(vectors):
    v = vectors("metrics")
    scores, targets = v["nopos/scores"], v["nopos/target"]
    assert not np.any(targets[:, 2] > 0)
    for ap in (interpolated_average_precision(scores, targets), average_precision(scores, targets)):
        assert np.isnan(ap[2])
        assert np.all(np.isfinite(np.delete(ap, 2)))
    assert np.isnan(v["nopos/mAP_voc2012"])
    assert np.isnan(np.mean(interpolated_average_precision(scores, targets)))
    overall = _as_array(threshold_metrics(scores, targets))
    np.testing.assert_allclose(overall, v["nopos/overall"], rtol=1e-12, equal_nan=True)
    assert np.all(np.isfinite(overall[:4])) and np.all(np.isnan(overall[4:]))
    with pytest.raises(ValueError, match=r"classes \[2\] have no positive"):
        evaluate_scores(scores, targets)


def test_average_precision_matches_sklearn_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(300, 7))
    targets = rng.choice([-1.0, 0.0, 1.0], size=(300, 7), p=[0.6, 0.2, 0.2])
    assert all(np.unique(scores[:, c]).size == scores.shape[0] for c in range(scores.shape[1]))
    expected = average_precision_score(targets > 0, scores, average=None)
    np.testing.assert_allclose(average_precision(scores, targets), expected, rtol=1e-9)


def _interpolated_ap_by_recall_steps(scores: np.ndarray, positives: np.ndarray) -> float:
    """Direct transcription of docs/methods/evaluation.md §11.1 for one class (padding, envelope, recall steps)."""
    hits = positives[np.argsort(-scores, kind="stable")].astype(np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], tp / hits.sum(), [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, np.finfo(np.float64).eps), [0.0]])
    for i in range(precision.size - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def test_interpolated_average_precision_matches_recall_step_definition_with_ties():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(60, 5)), 1)  # many ties
    targets = rng.choice([-1.0, 1.0], size=(60, 5), p=[0.7, 0.3])
    expected = [_interpolated_ap_by_recall_steps(scores[:, c], targets[:, c] > 0) for c in range(5)]
    np.testing.assert_allclose(
        interpolated_average_precision(scores, targets), expected, rtol=1e-12
    )


def test_worked_example():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    targets = np.array([[0], [1], [1], [0]])
    np.testing.assert_allclose(interpolated_average_precision(scores, targets), [2 / 3], rtol=1e-12)
    np.testing.assert_allclose(
        average_precision(scores, targets), [(1 / 2 + 2 / 3) / 2], rtol=1e-12
    )


def test_ranking_ties_take_the_lower_index_first():
    scores = np.array([[0.5], [0.5], [0.1]])
    np.testing.assert_allclose(average_precision(scores, np.array([[0], [1], [0]])), [1 / 2])
    np.testing.assert_allclose(average_precision(scores, np.array([[1], [0], [0]])), [1.0])


# Hand-computed case. Class 4 is never predicted (N_p = 0 -> 1). Top-3: row 0 drops class 3
# (logit >= 0 but 4th highest); row 1 drops class 2 (in the top 3 but logit < 0).
_SCORES = np.array(
    [
        [2.0, 1.0, 0.5, 0.2, -3.0],
        [-1.0, 0.3, -0.2, 0.1, -3.0],
        [-0.5, -0.4, -0.3, -0.1, -3.0],
    ]
)
_TARGETS = np.array(
    [
        [1, 0, -1, 1, 0],
        [-1, 1, 1, 0, 1],
        [1, -1, 0, 0, -1],
    ]
)


def test_threshold_metrics_hand_computed():
    # N_g = (2,1,1,1,1), N_p = (1,2,1,2,0->1), N_c = (1,1,0,1,0).
    op, orec, cp, cr = 3 / 7, 3 / 6, (1 + 1 / 2 + 1 / 2) / 5, (1 / 2 + 1 + 1) / 5
    expected = [op, orec, 2 * op * orec / (op + orec), cp, cr, 2 * cp * cr / (cp + cr)]
    np.testing.assert_allclose(
        _as_array(threshold_metrics(_SCORES, _TARGETS)), expected, rtol=1e-12
    )


def test_threshold_metrics_top3_hand_computed():
    # N_p = (1,2,1,1,0->1), N_c = (1,1,0,0,0).
    op, orec, cp, cr = 2 / 6, 2 / 6, (1 + 1 / 2) / 5, (1 / 2 + 1) / 5
    expected = [op, orec, 2 * op * orec / (op + orec), cp, cr, 2 * cp * cr / (cp + cr)]
    np.testing.assert_allclose(
        _as_array(threshold_metrics(_SCORES, _TARGETS, top_k=3)), expected, rtol=1e-12
    )


def test_top_k_ties_take_the_lower_class_first():
    scores = np.ones((1, 5))
    targets = np.array([[0, 0, 0, 1, 1]])
    assert threshold_metrics(scores, targets, top_k=3)["OR"] == 0.0
    assert threshold_metrics(np.flip(scores, 1), np.flip(targets, 1), top_k=3)["OR"] == 1.0


@pytest.mark.parametrize(
    "scores, targets, message",
    [
        (np.zeros(4), np.zeros(4), "must be 2-D"),
        (np.zeros((4, 3)), np.zeros((4, 2)), "differs from scores shape"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
        (np.array([[0.0, np.nan]]), np.ones((1, 2)), "non-finite"),
        (np.zeros((1, 2)), np.array([[1.0, np.inf]]), "targets contain NaN or inf"),
    ],
)
def test_invalid_inputs_raise(scores, targets, message):
    for fn in (
        interpolated_average_precision,
        average_precision,
        threshold_metrics,
        evaluate_scores,
        calibration_errors,
        lambda s, t: precision_at_recall(s, t, 0.5),
    ):
        with pytest.raises(ValueError, match=message):
            fn(scores, targets)


@pytest.mark.parametrize("top_k", [0, -1, 2.5, True])
def test_invalid_top_k_raises(top_k):
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        threshold_metrics(_SCORES, _TARGETS, top_k=top_k)


def test_ignored_zero_targets_equal_removing_those_entries():
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((40, 4))
    targets = np.where(rng.random((40, 4)) < 0.3, 1, -1)
    targets[rng.random((40, 4)) < 0.2] = 0  # "difficult": ignored at test (ML-GCN)
    targets[0] = 1  # every class keeps a positive
    removed = [
        average_precision(
            scores[targets[:, c] != 0, c : c + 1], targets[targets[:, c] != 0, c : c + 1]
        )[0]
        for c in range(4)
    ]
    ignored = evaluate_scores(scores, targets, ignore_zero_targets=True)
    np.testing.assert_allclose(ignored["mAP_plain"], 100 * np.mean(removed))
    as_negatives = evaluate_scores(scores, np.where(targets == 0, -1, targets))
    assert evaluate_scores(scores, targets)["mAP_plain"] == as_negatives["mAP_plain"]
    assert ignored["mAP_plain"] != as_negatives["mAP_plain"]


def _logits(probabilities) -> np.ndarray:
    """The logits whose sigmoids are `probabilities`, as a (N, 1) column."""
    p = np.asarray(probabilities, dtype=np.float64)
    return np.log(p / (1 - p))[:, None]


def test_calibration_errors_by_hand():
    # p = 0.1, 0.2, 0.3, 0.9 with labels 0, 1, 0, 1 and 2 bins.
    # Equal width [0, .5) | [.5, 1]: {.1, .2, .3} mean p .2, positive rate 1/3, gap 2/15;
    # {.9}: gap .1. ECE = 3/4 * 2/15 + 1/4 * .1 = .125, MCE = 2/15.
    # Equal mass {.1, .2}: mean .15, rate .5, gap .35; {.3, .9}: mean .6, rate .5, gap .1;
    # ACE = (.35 + .1) / 2 = .225. Tolerance: the logit -> sigmoid round trip, a few ulps.
    result = calibration_errors(
        _logits([0.1, 0.2, 0.3, 0.9]), np.array([[0], [1], [0], [1]]), num_bins=2
    )
    np.testing.assert_allclose(
        [result[n] for n in CALIBRATION_METRIC_NAMES], [0.125, 0.225, 2 / 15], rtol=1e-12
    )


def test_equal_mass_bins_of_an_uneven_count_differ_by_at_most_one():
    # 5 entries, 2 bins: the lowest 3 and the highest 2 (bin = ascending position * M // N).
    # {.1, .2, .3} labels 1, 0, 0: gap |1/3 - .2|; {.6, .7} labels 1, 1: gap .35.
    result = calibration_errors(
        _logits([0.3, 0.7, 0.1, 0.6, 0.2]), np.array([[0], [1], [1], [1], [0]]), num_bins=2
    )
    np.testing.assert_allclose(result["ACE"], (2 / 15 + 0.35) / 2, rtol=1e-12)


def test_calibration_errors_are_class_means_and_evaluate_scores_reports_them_in_percent():
    rng = np.random.default_rng(4)
    targets = np.where(rng.random((60, 3)) < 0.4, 1, -1)
    scores = rng.normal(size=(60, 3)) + 1.5 * targets
    per_class = [calibration_errors(scores[:, c : c + 1], targets[:, c : c + 1]) for c in range(3)]
    together = calibration_errors(scores, targets)
    reported = evaluate_scores(scores, targets)
    for name in CALIBRATION_METRIC_NAMES:
        # the same float64 sums, grouped per class: equal to a few ulps
        assert together[name] == pytest.approx(np.mean([c[name] for c in per_class]), rel=1e-12)
        assert reported[name] == pytest.approx(100 * together[name], rel=1e-12)
    assert len({together[n] for n in CALIBRATION_METRIC_NAMES}) == 3  # three distinct errors


def test_precision_at_recall_by_hand():
    scores = np.array([[0.9, 0.9], [0.8, 0.8], [0.7, 0.7], [0.6, 0.6]])
    targets = np.array([[0, 1], [1, 0], [1, 0], [0, 1]])
    # class 0: precision by rank 0, 1/2, 2/3, 1/2; the best at recall >= .5 and at 1 is 2/3.
    # class 1: precision 1, 1/2, 1/3, 1/2: 1 at recall .5, 1/2 at recall .7.
    np.testing.assert_allclose(precision_at_recall(scores, targets, 0.5), [2 / 3, 1.0])
    np.testing.assert_allclose(precision_at_recall(scores, targets, 0.7), [2 / 3, 0.5])
    np.testing.assert_allclose(precision_at_recall(scores, targets, 1.0), [2 / 3, 0.5])


def test_precision_at_recall_needs_exactly_the_recall_not_one_positive_more():
    # 10 positives then 10 negatives interleaved so that precision falls after the 3rd
    # positive: 0.3 * 10 is 3.0000000000000004 in floats, yet 3 positives reach recall 0.3.
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])[:, None]
    scores = -np.arange(len(labels), dtype=np.float64)[:, None]
    assert precision_at_recall(scores, labels, 0.3)[0] == 1.0
    assert precision_at_recall(scores, labels, 0.4)[0] == pytest.approx(10 / 13)


@pytest.mark.parametrize("recall", [0, -0.5, 1.5, True, "0.5"])
def test_invalid_recall_raises(recall):
    with pytest.raises(ValueError, match="recall must be a number in"):
        precision_at_recall(_SCORES, _TARGETS, recall)


@pytest.mark.parametrize("num_bins", [0, 2.0, True])
def test_invalid_num_bins_raises(num_bins):
    with pytest.raises(ValueError, match="num_bins must be a positive integer"):
        calibration_errors(_SCORES, _TARGETS, num_bins=num_bins)


def test_evaluate_scores_reports_the_mean_precision_at_each_fixed_recall():
    rng = np.random.default_rng(5)
    targets = np.where(rng.random((50, 4)) < 0.3, 1, -1)
    targets[0] = 1
    scores = rng.normal(size=(50, 4)) + targets
    reported = evaluate_scores(scores, targets)
    for recall in FIXED_RECALLS:
        expected = 100 * np.mean(precision_at_recall(scores, targets, recall))
        assert reported[precision_at_recall_name(recall)] == pytest.approx(expected, rel=1e-12)


def test_ignored_zero_targets_leave_calibration_and_precision_at_recall():
    rng = np.random.default_rng(6)
    scores = rng.standard_normal((40, 3))
    targets = np.where(rng.random((40, 3)) < 0.3, 1, -1)
    targets[rng.random((40, 3)) < 0.2] = 0
    targets[0] = 1
    ignored = evaluate_scores(scores, targets, ignore_zero_targets=True)
    kept = [targets[:, c] != 0 for c in range(3)]
    columns = [(scores[k, c : c + 1], targets[k, c : c + 1]) for c, k in enumerate(kept)]
    for name in CALIBRATION_METRIC_NAMES:
        expected = 100 * np.mean([calibration_errors(s, t)[name] for s, t in columns])
        assert ignored[name] == pytest.approx(expected, rel=1e-12)
    for recall in FIXED_RECALLS:
        expected = 100 * np.mean([precision_at_recall(s, t, recall)[0] for s, t in columns])
        assert ignored[precision_at_recall_name(recall)] == pytest.approx(expected, rel=1e-12)
    assert ignored["ECE"] != evaluate_scores(scores, targets)["ECE"]


def test_calibration_and_precision_at_recall_match_mlcpl():
    torch, mlcpl = import_mlcpl("metrics")
    rng = np.random.default_rng(7)
    targets = (rng.random((120, 6)) < 0.35).astype(np.float32)
    logits = rng.uniform(-4, 4, (120, 6)).astype(np.float32) + targets  # no ties
    preds, target = torch.tensor(logits), torch.tensor(targets)
    ours = calibration_errors(logits, targets, num_bins=CALIBRATION_BINS)
    # mlcpl takes the sigmoid in float32 (~6e-8 relative per entry), we in float64; no
    # probability lies within that of a bin edge here, so the bins agree and the errors differ
    # by float32 rounding of means of values <= 1.
    for name, fn in (
        ("ECE", mlcpl.partial_multilabel_expected_calibration_error),
        ("MCE", mlcpl.partial_multilabel_maximum_calibration_error),
    ):
        theirs = float(fn(preds, target, n_bins=CALIBRATION_BINS, average="macro"))
        assert ours[name] == pytest.approx(theirs, abs=1e-6)
    for recall in FIXED_RECALLS:
        theirs, _ = mlcpl.partial_multilabel_precision_at_fixed_recall(preds, target, recall)
        np.testing.assert_allclose(
            precision_at_recall(logits, targets, recall), theirs.numpy(), rtol=1e-6
        )  # float32 precision values
