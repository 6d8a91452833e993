"""Multi-label evaluation metrics over a whole test set, on the host in float64 NumPy (docs/methods/evaluation.md §11).

Scores are the model's logits, shape (N, C); targets have the same shape and any entry > 0 is a
positive (the test labels' −1 and 0 are both negatives, §11). Ranking ties are broken by the
lower sample index (stable sort), and top-k ties by the lower class index.
"""

import numpy as np

THRESHOLD_METRIC_NAMES = ("OP", "OR", "OF1", "CP", "CR", "CF1")
CALIBRATION_METRIC_NAMES = ("ECE", "ACE", "MCE")
CALIBRATION_BINS = 15  # Guo et al. 2017's M (docs/methods/evaluation.md §11.4)
FIXED_RECALLS = (0.5, 0.7, 0.9)  # evaluate_scores' precision-at-recall levels (§11.5)


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
        raise ValueError(
            "targets contain NaN or inf; use 1 for positives and 0 or -1 for negatives."
        )
    return scores, targets > 0


def _ranking(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the sample indices by decreasing score and whether each is a positive,
    both (C, N)."""
    order = np.argsort(-scores.T, axis=1, kind="stable")  # (C, N), best first
    return order, np.take_along_axis(positives.T, order, axis=1)


def _precision_at_ranks(true_positives: np.ndarray) -> np.ndarray:
    """(C, N) positives among the top k+1, np.cumsum(is_positive, axis=1) -> (C, N)
    precision[c, k] = true_positives[c, k] / (k+1)."""
    rank = np.arange(1, true_positives.shape[1] + 1, dtype=np.float64)  # (N,)
    return true_positives / rank


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
    _, is_positive = _ranking(scores, positives)
    envelope = _precision_envelope(_precision_at_ranks(np.cumsum(is_positive, axis=1)))  # (C, N)
    return _mean_over_positives(envelope, is_positive)


def _precision_envelope(precision: np.ndarray) -> np.ndarray:
    """(C, N) precision by rank -> (C, N) its right-to-left running maximum (interpolated
    precision)."""
    return np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-interpolated AP per class, (N, C), (N, C) -> (C,) (docs/methods/evaluation.md §11.2).

    AP = mean over positive ranks k of P_k = TP_k / k. A class without positives gives NaN
    (the reference raises ZeroDivisionError there).
    """
    scores, positives = _validated(scores, targets)
    _, is_positive = _ranking(scores, positives)
    precision = _precision_at_ranks(np.cumsum(is_positive, axis=1))  # (C, N)
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


def threshold_metrics(
    scores: np.ndarray, targets: np.ndarray, top_k: int | None = None
) -> dict[str, float]:
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


def _check_recall(recall: float) -> float:
    number = isinstance(recall, (int, float, np.floating)) and not isinstance(recall, bool)
    if not number or not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be a number in (0, 1], got {recall!r}.")
    return float(recall)


def _precision_at_recall_from_ranking(
    true_positives: np.ndarray, precision_envelope: np.ndarray, recall: float
) -> np.ndarray:
    """(C, N) positives among the top k+1 and interpolated precision -> (C,) the highest
    precision at any rank whose recall is >= `recall`: the envelope at the m-th positive,
    m = min{m: m/N+ >= recall}."""
    num_positive = true_positives[:, -1]  # (C,)
    needed = np.ceil(recall * num_positive).astype(np.int64)  # (C,), within 1 of m in floats
    needed = np.where((needed - 1) / num_positive >= recall, needed - 1, needed)
    needed = np.where(needed / num_positive < recall, needed + 1, needed)
    rank = np.argmax(true_positives >= needed[:, None], axis=1)  # (C,) first rank reaching m
    return precision_envelope[np.arange(len(rank)), rank]


def precision_at_recall(scores: np.ndarray, targets: np.ndarray, recall: float) -> np.ndarray:
    """Precision at fixed recall per class, (N, C), (N, C) -> (C,)
    (docs/methods/evaluation.md §11.5).

    The highest precision over the ranks whose recall TP_k/N+ reaches `recall`, i.e. the
    interpolated precision of §11.1 at that recall. A class without positives gives NaN.
    """
    recall = _check_recall(recall)
    scores, positives = _validated(scores, targets)
    _, is_positive = _ranking(scores, positives)
    true_positives = np.cumsum(is_positive, axis=1)  # (C, N)
    envelope = _precision_envelope(_precision_at_ranks(true_positives))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            is_positive.any(axis=1),
            _precision_at_recall_from_ranking(true_positives, envelope, recall),
            np.nan,
        )


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x); below x = -709 e^-x overflows to inf and the result is the exact 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits))


def _equal_width_gaps(
    probability: np.ndarray, is_positive: np.ndarray, num_counted: np.ndarray, num_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """(C, N) probabilities, labels and (C,) number of leading entries that count -> (C, M)
    |positive rate - mean probability| in the bins [m/M, (m+1)/M) (the last one closed; NaN
    when empty) and (C, M) their entry counts."""
    num_classes, num_entries = probability.shape
    bins = np.minimum((probability * num_bins).astype(np.int64), num_bins - 1)  # (C, N)
    if np.any(num_counted < num_entries):  # the rest go to an extra bin, dropped below
        bins[np.arange(num_entries) >= num_counted[:, None]] = num_bins
    bins += (num_bins + 1) * np.arange(num_classes)[:, None]
    size = num_classes * (num_bins + 1)
    count = np.bincount(bins.ravel(), minlength=size).astype(np.float64)
    probability_sum = np.bincount(bins.ravel(), weights=probability.ravel(), minlength=size)
    positive_sum = np.bincount(bins.ravel(), weights=is_positive.ravel(), minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(positive_sum - probability_sum) / count
    shape = (num_classes, num_bins + 1)
    return gap.reshape(shape)[:, :num_bins], count.reshape(shape)[:, :num_bins]


def _equal_mass_gaps(
    probability: np.ndarray, true_positives: np.ndarray, num_counted: np.ndarray, num_bins: int
) -> np.ndarray:
    """(C, N) probabilities in decreasing order, positives among the top k+1 and (C,) number
    of leading entries that count -> (C, M) |positive rate - mean probability| in M bins of
    consecutive entries (NaN when empty). Bin m holds the ascending positions
    [ceil(m n/M), ceil((m+1) n/M)), n = num_counted: sizes differ by at most one."""
    n = num_counted[:, None]  # (C, 1)
    start = (np.arange(num_bins + 1) * n + num_bins - 1) // num_bins  # (C, M+1) ascending
    edge = n - start  # (C, M+1) the same edges as ranks from the top, decreasing
    zero = np.zeros((probability.shape[0], 1))
    probability_before = np.concatenate([zero, np.cumsum(probability, axis=1)], axis=1)
    positive_before = np.concatenate([zero, true_positives], axis=1)  # (C, N+1)
    count = edge[:, :-1] - edge[:, 1:]  # (C, M)
    probability_sum = np.take_along_axis(
        probability_before, edge[:, :-1], axis=1
    ) - np.take_along_axis(probability_before, edge[:, 1:], axis=1)
    positive_sum = np.take_along_axis(positive_before, edge[:, :-1], axis=1) - np.take_along_axis(
        positive_before, edge[:, 1:], axis=1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(positive_sum - probability_sum) / count


def _calibration_from_ranking(
    ranked_logits: np.ndarray,
    is_positive: np.ndarray,
    true_positives: np.ndarray,
    num_counted: np.ndarray,
    num_bins: int,
) -> dict[str, np.ndarray]:
    """(C, N) logits by decreasing value, their labels, positives among the top k+1 and (C,)
    number of leading entries that count -> per-class ECE, ACE, MCE, (C,) each, as fractions
    (docs/methods/evaluation.md §11.4)."""
    probability = _sigmoid(ranked_logits)  # (C, N)
    width_gap, width_count = _equal_width_gaps(probability, is_positive, num_counted, num_bins)
    mass_gap = _equal_mass_gaps(probability, true_positives, num_counted, num_bins)
    return {
        "ECE": np.nansum(width_gap * width_count, axis=1) / num_counted,
        "ACE": np.nanmean(mass_gap, axis=1),
        "MCE": np.nanmax(width_gap, axis=1),
    }


def _check_num_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    return int(num_bins)


def calibration_errors(
    scores: np.ndarray, targets: np.ndarray, num_bins: int = CALIBRATION_BINS
) -> dict[str, float]:
    """ECE, ACE and MCE of the sigmoid of the logits, each per class then averaged over the
    classes, as fractions (docs/methods/evaluation.md §11.4).

    Per class c over its N entries, with p = sigmoid(logit) and y = [target > 0]:
    ECE = Σ_m |B_m|/N · |mean y − mean p| over M equal-width bins of p (Guo et al. 2017),
    MCE = the largest of those gaps over the non-empty bins, ACE = the mean gap over M
    equal-mass bins of the entries sorted by p (Nixon et al. 2019).
    """
    num_bins = _check_num_bins(num_bins)
    scores, positives = _validated(scores, targets)
    order, is_positive = _ranking(scores, positives)
    per_class = _calibration_from_ranking(
        np.take_along_axis(scores.T, order, axis=1),
        is_positive,
        np.cumsum(is_positive, axis=1),
        np.full(scores.shape[1], scores.shape[0]),
        num_bins,
    )
    return {name: float(np.mean(per_class[name])) for name in CALIBRATION_METRIC_NAMES}


def precision_at_recall_name(recall: float) -> str:
    """evaluate_scores' key for the precision at `recall`: 'P_at_R50' for 0.5."""
    return f"P_at_R{round(100 * recall)}"


# Key of evaluate_scores' one non-scalar entry: the interpolated AP of each class, in class order.
PER_CLASS_AP = "per_class_AP"


def evaluate_scores(
    scores: np.ndarray, targets: np.ndarray, *, ignore_zero_targets: bool = False
) -> dict[str, float | list[float]]:
    """All test metrics in percent: 'mAP' (interpolated, the reported number), 'mAP_plain', the six
    threshold metrics and the same six with suffix '_top3', 'ECE', 'ACE', 'MCE' and the precision
    at each of FIXED_RECALLS ('P_at_R50', ...) (docs/methods/evaluation.md §11), and
    PER_CLASS_AP, the list of the C interpolated APs whose mean is 'mAP'.

    With `ignore_zero_targets` (the ML-GCN convention for VOC's difficult objects), entries whose
    target is 0 take no part: they are ranked below every other image and never predicted, which
    is the same as removing them from each class's AP and from the threshold counts; they are
    left out of the calibration bins too. Otherwise 0 counts as a negative, as in the reference.
    Raises ValueError if a class has no positive, since its AP (and so the mAP) would be NaN.
    """
    scores, positives = _validated(scores, targets)
    num_counted = np.full(scores.shape[1], scores.shape[0])  # (C,)
    if ignore_zero_targets:
        ignored = np.asarray(targets) == 0  # (N, C)
        scores = np.where(ignored, np.finfo(np.float64).min, scores)
        num_counted = num_counted - np.count_nonzero(ignored, axis=0)
    missing = np.flatnonzero(~positives.any(axis=0))
    if missing.size:
        raise ValueError(
            f"classes {missing.tolist()} have no positive test label, so their AP is undefined; "
            "evaluate on a test set where every class occurs, or drop those columns."
        )
    order, is_positive = _ranking(scores, positives)  # (C, N) each
    true_positives = np.cumsum(is_positive, axis=1)  # (C, N)
    precision = _precision_at_ranks(true_positives)  # (C, N)
    envelope = _precision_envelope(precision)  # (C, N)
    class_ap = _mean_over_positives(envelope, is_positive)  # (C,)
    percent = {
        "mAP": 100.0 * float(np.mean(class_ap)),
        "mAP_plain": 100.0 * float(np.mean(_mean_over_positives(precision, is_positive))),
    }
    for suffix, top_k in (("", None), ("_top3", 3)):
        for name, value in threshold_metrics(scores, positives, top_k).items():
            percent[name + suffix] = 100.0 * value
    calibration = _calibration_from_ranking(
        np.take_along_axis(scores.T, order, axis=1),
        is_positive,
        true_positives,
        num_counted,
        CALIBRATION_BINS,
    )
    for name in CALIBRATION_METRIC_NAMES:
        percent[name] = 100.0 * float(np.mean(calibration[name]))
    for recall in FIXED_RECALLS:
        at_recall = _precision_at_recall_from_ranking(true_positives, envelope, recall)  # (C,)
        percent[precision_at_recall_name(recall)] = 100.0 * float(np.mean(at_recall))
    percent[PER_CLASS_AP] = [100.0 * float(ap) for ap in class_ap]
    return percent
