"""Multi-label evaluation metrics over a whole test set, on the host in float64 NumPy (docs/methods/evaluation.md §11).

Scores are the model's logits, shape (N, C); targets have the same shape and any entry > 0 is a
positive (the test labels' −1 and 0 are both negatives, §11). Ranking ties are broken by the
lower sample index (stable sort), and top-k ties by the lower class index.
"""
import numpy as np

THRESHOLD_METRIC_NAMES = ("OP", "OR", "OF1", "CP", "CR", "CF1")


def _validated(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (scores as float64, positives as bool), both (N, C), after checking the inputs."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(
            f"scores must be 2-D (num_samples, num_classes), got shape {scores.shape}; "
            "stack the per-batch outputs into one array first."
        )
    if targets.shape != scores.shape:
        raise ValueError(
            f"targets shape {targets.shape} differs from scores shape {scores.shape}; "
            "pass one target row per score row, one column per class."
        )
    if scores.size == 0:
        raise ValueError(
            f"scores of shape {scores.shape} are empty; evaluate at least one sample and one class."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(
            f"scores contain {np.count_nonzero(~np.isfinite(scores))} non-finite values (NaN or inf); "
            "check the model outputs for divergence before evaluating."
        )
    if not np.all(np.isfinite(targets)):
        raise ValueError("targets contain NaN or inf; use 1 for positives and 0 or -1 for negatives.")
    return scores, targets > 0


def _precision_at_positive_ranks(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ranks samples by decreasing score and returns (is_positive, precision), both (C, N).

    precision[c, k] = (positives among the top k+1) / (k+1).
    """
    order = np.argsort(-scores.T, axis=1, kind="stable")  # (C, N), best first
    is_positive = np.take_along_axis(positives.T, order, axis=1)  # (C, N)
    true_positives = np.cumsum(is_positive, axis=1, dtype=np.float64)  # (C, N)
    rank = np.arange(1, scores.shape[0] + 1, dtype=np.float64)  # (N,)
    return is_positive, true_positives / rank


def _mean_over_positives(values: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """(C, N) values and mask -> (C,) mean of the values at positive ranks; NaN where a class has none."""
    total = np.sum(values, axis=1, where=is_positive)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.count_nonzero(is_positive, axis=1)


def interpolated_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """VOC-2012 all-point interpolated AP per class, (N, C), (N, C) -> (C,) (docs/methods/evaluation.md §11.1).

    AP = Σ_k (R_k − R_{k−1}) · max_{j≥k} P_j with recall padded by 0 and 1 and precision by 0 and 0.
    Recall rises by exactly 1/N₊ at each positive rank and the padded ends add nothing, so this
    equals the mean over positive ranks of the right-to-left running maximum of precision.
    A class without positives gives NaN (0/0 recall), as in the reference.
    """
    scores, positives = _validated(scores, targets)
    return _interpolated_ap_from_ranking(*_precision_at_positive_ranks(scores, positives))


def _interpolated_ap_from_ranking(is_positive: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(C, N) ranked positives and precision -> (C,) interpolated AP."""
    precision_envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # (C, N)
    return _mean_over_positives(precision_envelope, is_positive)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-interpolated AP per class, (N, C), (N, C) -> (C,) (docs/methods/evaluation.md §11.2).

    AP = mean over positive ranks k of P_k = TP_k / k. A class without positives gives NaN
    (the reference raises ZeroDivisionError there).
    """
    scores, positives = _validated(scores, targets)
    is_positive, precision = _precision_at_positive_ranks(scores, positives)
    return _mean_over_positives(precision, is_positive)


def _predicted_positives(scores: np.ndarray, top_k: int | None) -> np.ndarray:
    """(N, C) bool: logit >= 0, and with top_k also among the row's top_k logits."""
    predicted = scores >= 0
    if top_k is None:
        return predicted
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
    top_classes = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]  # (N, k)
    in_top = np.zeros_like(predicted)
    np.put_along_axis(in_top, top_classes, True, axis=1)
    return predicted & in_top


def threshold_metrics(scores: np.ndarray, targets: np.ndarray, top_k: int | None = None) -> dict[str, float]:
    """Overall and per-class precision, recall and F1 of thresholded logits, as fractions (docs/methods/evaluation.md §11.3).

    Prediction = logit >= 0 (top_k=3: also among the image's 3 highest logits). Per class N_g, N_p,
    N_c = positives, predictions, correct predictions; N_p = 0 is replaced by 1 before any sum.
    OP = ΣN_c/ΣN_p, OR = ΣN_c/ΣN_g, CP = mean N_c/N_p, CR = mean N_c/N_g, xF1 = 2·xP·xR/(xP+xR).
    As in the reference, a class without positives makes CR and CF1 NaN, and no correct
    prediction at all makes OF1 and CF1 NaN (0/0).
    """
    scores, positives = _validated(scores, targets)
    predicted = _predicted_positives(scores, top_k)
    num_positive = np.count_nonzero(positives, axis=0).astype(np.float64)  # (C,)
    num_predicted = np.count_nonzero(predicted, axis=0).astype(np.float64)  # (C,)
    num_correct = np.count_nonzero(predicted & positives, axis=0).astype(np.float64)  # (C,)
    num_predicted[num_predicted == 0] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        op = num_correct.sum() / num_predicted.sum()
        orec = num_correct.sum() / num_positive.sum()
        cp = np.mean(num_correct / num_predicted)
        cr = np.mean(num_correct / num_positive)
        of1 = 2 * op * orec / (op + orec)
        cf1 = 2 * cp * cr / (cp + cr)
    return dict(zip(THRESHOLD_METRIC_NAMES, (float(v) for v in (op, orec, of1, cp, cr, cf1))))


# Key of evaluate_scores' one non-scalar entry: the interpolated AP of each class, in class order.
PER_CLASS_AP = "per_class_AP"


def evaluate_scores(scores: np.ndarray, targets: np.ndarray, *,
                    ignore_zero_targets: bool = False) -> dict[str, float | list[float]]:
    """All test metrics in percent: 'mAP' (interpolated, the reported number), 'mAP_plain', the six
    threshold metrics and the same six with suffix '_top3' (docs/methods/evaluation.md §11), and
    PER_CLASS_AP, the list of the C interpolated APs whose mean is 'mAP'.

    With `ignore_zero_targets` (the ML-GCN convention for VOC's difficult objects), entries whose
    target is 0 take no part: they are ranked below every other image and never predicted, which
    is the same as removing them from each class's AP and from the threshold counts. Otherwise
    0 counts as a negative, as in the reference. Raises ValueError if a class has no positive,
    since its AP (and so the mAP) would be NaN.
    """
    scores, positives = _validated(scores, targets)
    if ignore_zero_targets:
        scores = np.where(np.asarray(targets) == 0, np.finfo(np.float64).min, scores)
    missing = np.flatnonzero(~positives.any(axis=0))
    if missing.size:
        raise ValueError(
            f"classes {missing.tolist()} have no positive test label, so their AP is undefined; "
            "evaluate on a test set where every class occurs, or drop those columns."
        )
    is_positive, precision = _precision_at_positive_ranks(scores, positives)
    class_ap = _interpolated_ap_from_ranking(is_positive, precision)  # (C,)
    percent = {
        "mAP": 100.0 * float(np.mean(class_ap)),
        "mAP_plain": 100.0 * float(np.mean(_mean_over_positives(precision, is_positive))),
    }
    for suffix, top_k in (("", None), ("_top3", 3)):
        for name, value in threshold_metrics(scores, positives, top_k).items():
            percent[name + suffix] = 100.0 * value
    percent[PER_CLASS_AP] = [100.0 * float(ap) for ap in class_ap]
    return percent
