"""Tests for mlrpl_jax.core.metrics: reference parity (metrics.npz), scikit-learn, hand-computed cases."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mlrpl_jax.core.metrics import (
    PER_CLASS_AP,
    THRESHOLD_METRIC_NAMES,
    average_precision,
    evaluate_scores,
    interpolated_average_precision,
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
    np.testing.assert_allclose(np.mean(interpolated_average_precision(scores, targets)),
                               v[f"{tag}/mAP_voc2012"], rtol=1e-12)
    np.testing.assert_allclose(average_precision(scores, targets),
                               v[f"{tag}/{target_kind}/ap_per_class"], rtol=1e-6)
    np.testing.assert_allclose(_as_array(threshold_metrics(scores, targets)),
                               v[f"{tag}/{target_kind}/overall"], rtol=1e-12)
    np.testing.assert_allclose(_as_array(threshold_metrics(scores, targets, top_k=3)),
                               v[f"{tag}/{target_kind}/overall_top3"], rtol=1e-12)


@pytest.mark.parametrize("tag", ["small", "medium"])
def test_evaluate_scores_reports_reference_values_in_percent(vectors, tag):
    v = vectors("metrics")
    result = evaluate_scores(v[f"{tag}/scores"], v[f"{tag}/target_raw"])
    expected_names = {"mAP", "mAP_plain", PER_CLASS_AP} | {
        n + s for n in THRESHOLD_METRIC_NAMES for s in ("", "_top3")}
    assert set(result) == expected_names
    np.testing.assert_allclose(result["mAP"], 100 * v[f"{tag}/mAP_voc2012"], rtol=1e-12)
    # the same float64 APs as the mAP's, each times 100: their mean is the mAP to round-off
    assert result[PER_CLASS_AP] == list(
        100 * interpolated_average_precision(v[f"{tag}/scores"], v[f"{tag}/target_raw"]))
    assert np.mean(result[PER_CLASS_AP]) == pytest.approx(result["mAP"], rel=1e-12)
    np.testing.assert_allclose(result["mAP_plain"], 100 * np.mean(v[f"{tag}/validate/ap_per_class"]),
                               rtol=1e-6)
    np.testing.assert_allclose(_as_array(result), 100 * v[f"{tag}/validate/overall"], rtol=1e-12)
    np.testing.assert_allclose(_as_array(result, "_top3"), 100 * v[f"{tag}/validate/overall_top3"],
                               rtol=1e-12)


def test_per_class_ap_without_zero_targets_is_each_class_ap_without_those_images():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 4))
    targets = rng.choice([-1.0, 0.0, 1.0], size=(40, 4), p=[0.5, 0.2, 0.3])
    per_class = evaluate_scores(scores, targets, ignore_zero_targets=True)[PER_CLASS_AP]
    for c in range(4):
        kept = targets[:, c] != 0
        expected = interpolated_average_precision(scores[kept, c:c + 1], targets[kept, c:c + 1])
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
    np.testing.assert_allclose(interpolated_average_precision(scores, targets), expected, rtol=1e-12)


def test_worked_example():
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    targets = np.array([[0], [1], [1], [0]])
    np.testing.assert_allclose(interpolated_average_precision(scores, targets), [2 / 3], rtol=1e-12)
    np.testing.assert_allclose(average_precision(scores, targets), [(1 / 2 + 2 / 3) / 2], rtol=1e-12)


def test_ranking_ties_take_the_lower_index_first():
    scores = np.array([[0.5], [0.5], [0.1]])
    np.testing.assert_allclose(average_precision(scores, np.array([[0], [1], [0]])), [1 / 2])
    np.testing.assert_allclose(average_precision(scores, np.array([[1], [0], [0]])), [1.0])


# Hand-computed case. Class 4 is never predicted (N_p = 0 -> 1). Top-3: row 0 drops class 3
# (logit >= 0 but 4th highest); row 1 drops class 2 (in the top 3 but logit < 0).
_SCORES = np.array([
    [2.0, 1.0, 0.5, 0.2, -3.0],
    [-1.0, 0.3, -0.2, 0.1, -3.0],
    [-0.5, -0.4, -0.3, -0.1, -3.0],
])
_TARGETS = np.array([
    [1, 0, -1, 1, 0],
    [-1, 1, 1, 0, 1],
    [1, -1, 0, 0, -1],
])


def test_threshold_metrics_hand_computed():
    # N_g = (2,1,1,1,1), N_p = (1,2,1,2,0->1), N_c = (1,1,0,1,0).
    op, orec, cp, cr = 3 / 7, 3 / 6, (1 + 1 / 2 + 1 / 2) / 5, (1 / 2 + 1 + 1) / 5
    expected = [op, orec, 2 * op * orec / (op + orec), cp, cr, 2 * cp * cr / (cp + cr)]
    np.testing.assert_allclose(_as_array(threshold_metrics(_SCORES, _TARGETS)), expected, rtol=1e-12)


def test_threshold_metrics_top3_hand_computed():
    # N_p = (1,2,1,1,0->1), N_c = (1,1,0,0,0).
    op, orec, cp, cr = 2 / 6, 2 / 6, (1 + 1 / 2) / 5, (1 / 2 + 1) / 5
    expected = [op, orec, 2 * op * orec / (op + orec), cp, cr, 2 * cp * cr / (cp + cr)]
    np.testing.assert_allclose(_as_array(threshold_metrics(_SCORES, _TARGETS, top_k=3)), expected, rtol=1e-12)


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
    for fn in (interpolated_average_precision, average_precision, threshold_metrics, evaluate_scores):
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
    removed = [average_precision(scores[targets[:, c] != 0, c:c + 1],
                                 targets[targets[:, c] != 0, c:c + 1])[0] for c in range(4)]
    ignored = evaluate_scores(scores, targets, ignore_zero_targets=True)
    np.testing.assert_allclose(ignored["mAP_plain"], 100 * np.mean(removed))
    as_negatives = evaluate_scores(scores, np.where(targets == 0, -1, targets))
    assert evaluate_scores(scores, targets)["mAP_plain"] == as_negatives["mAP_plain"]
    assert ignored["mAP_plain"] != as_negatives["mAP_plain"]
