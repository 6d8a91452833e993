"""Partial training labels: the label-drop protocols of docs/methods/problem_and_data.md §1.2-1.3.

'elementwise' (the authors'): keep each complete label with probability p. The reference
re-seeds NumPy's legacy global generator with 0 and thresholds one uniform draw of the
label-matrix shape. A private ``RandomState(0)`` yields the same MT19937 stream without
touching the global generator (docs/methods/reference_defects.md §12.1), so every published
split is reproduced bit for bit. Because the same draw is thresholded for every p, the known
sets are nested: an entry known at p is known at every p' > p.

'one_positive' (single-positive, Cole et al. 2021) and 'per_category' (fixed per class, the
FPC of Ben-Baruch et al. 2022) draw from a PCG64 generator seeded with the run's seed, in
mlcpl 0.1.7's order, so both equal mlcpl's drop_labels_single_positive and
drop_labels_fix_per_category for the same seed.
"""
import math
import numbers

import numpy as np

MASK_SEED = 0


def _check_known_ratio(known_ratio: float) -> float:
    """Returns known_ratio as a float after checking it lies in (0, 1]."""
    if isinstance(known_ratio, bool) or not isinstance(known_ratio, numbers.Real):
        raise TypeError(
            f"known_ratio must be a number in (0, 1], got {known_ratio!r} of type "
            f"{type(known_ratio).__name__}; pass e.g. 0.5, or 1.0 for complete labels."
        )
    ratio = float(known_ratio)
    if not (math.isfinite(ratio) and 0.0 < ratio <= 1.0):
        raise ValueError(
            f"known_ratio must be in (0, 1] (the proportion of labels kept; 1.0 means "
            f"complete labels), got {known_ratio!r}."
        )
    return ratio


def _check_complete_labels(complete_labels: np.ndarray) -> np.ndarray:
    """Returns the labels as an array after checking they are (N, C) with entries in {-1, +1}."""
    labels = np.asarray(complete_labels)
    if labels.ndim != 2:
        raise ValueError(
            f"complete_labels must be a 2-D (num_images, num_classes) array, got shape "
            f"{labels.shape}."
        )
    bad = np.argwhere((labels != 1) & (labels != -1))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise ValueError(
            f"complete_labels must contain only -1 (absent) and +1 (present); found "
            f"{labels[row, col].item()} at (row {row}, class {col}) (invalid entries in "
            f"total: {len(bad)}). 0/unknown is not allowed in complete labels: pass the full "
            f"ground truth and let make_partial_labels hide entries."
        )
    return labels


def known_label_mask(shape: tuple[int, int], known_ratio: float) -> np.ndarray:
    """Bool (N, C) mask K = [U < p], U = RandomState(0).random_sample(shape) (docs/methods/problem_and_data.md §1.2).

    Depends only on the shape and p; the global NumPy generator is left untouched.
    """
    ratio = _check_known_ratio(known_ratio)
    uniform = np.random.RandomState(MASK_SEED).random_sample(tuple(shape))  # (N, C)
    return uniform < ratio


def make_partial_labels(complete_labels: np.ndarray, known_ratio: float) -> np.ndarray:
    """Int8 (N, C) partial labels y = K * L in {-1, 0, +1}, 0 = hidden (docs/methods/problem_and_data.md §1.2).

    With known_ratio == 1 the complete labels are returned unchanged (as an int8 copy) and no
    random numbers are drawn, as in the reference.
    """
    ratio = _check_known_ratio(known_ratio)
    labels = _check_complete_labels(complete_labels).astype(np.int8)
    if ratio == 1.0:
        return labels
    mask = known_label_mask(labels.shape, ratio)  # (N, C)
    return np.where(mask, labels, np.int8(0))


LABEL_DROP_PROTOCOLS = ("elementwise", "one_positive", "per_category")


def check_label_drop(protocol: str, known_ratio: float, labels_per_category: int) -> None:
    """Raises ValueError unless the protocol and its parameters fit together (§1.3): the
    element-wise drop takes known_ratio and no labels_per_category; the others choose the
    known labels themselves (known_ratio 1.0); 'per_category' takes an even
    labels_per_category >= 2."""
    if protocol not in LABEL_DROP_PROTOCOLS:
        raise ValueError(f"label_drop must be one of {', '.join(LABEL_DROP_PROTOCOLS)}, got "
                         f"{protocol!r}.")
    _check_known_ratio(known_ratio)
    if protocol != "elementwise" and known_ratio != 1.0:
        raise ValueError(
            f"label_drop={protocol!r} chooses the known labels itself; known_ratio is the "
            f"element-wise protocol's proportion, so set known_ratio=1.0 (got {known_ratio}).")
    integer = isinstance(labels_per_category, int) and not isinstance(labels_per_category, bool)
    if protocol == "per_category":
        if not integer or labels_per_category < 2 or labels_per_category % 2:
            raise ValueError(
                f"label_drop='per_category' needs labels_per_category, the known labels kept per "
                f"class (half positive, half negative), as an even integer >= 2; got "
                f"{labels_per_category!r}.")
    elif labels_per_category != 0:
        raise ValueError(f"labels_per_category applies only to label_drop='per_category'; "
                         f"leave it 0 with label_drop={protocol!r} (got {labels_per_category!r}).")


def _generator(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    return np.random.Generator(np.random.PCG64(int(seed)))


def one_positive_labels(complete_labels: np.ndarray, seed: int) -> np.ndarray:
    """Int8 (N, C): each image keeps one of its positives, drawn uniformly, as its only known
    label; an image without positives keeps none (docs/methods/problem_and_data.md §1.3)."""
    labels = _check_complete_labels(complete_labels)
    positives = labels > 0  # (N, C)
    num_positive = np.count_nonzero(positives, axis=1)  # (N,)
    rows = np.flatnonzero(num_positive)  # images with a positive, in order
    kept = _generator(seed).integers(0, num_positive[rows])  # (R,) which positive, 0-based
    rank = np.cumsum(positives[rows], axis=1)  # (R, C) positives up to each class
    columns = np.argmax(positives[rows] & (rank == kept[:, None] + 1), axis=1)  # (R,)
    partial = np.zeros(labels.shape, np.int8)
    partial[rows, columns] = 1
    return partial


def per_category_labels(complete_labels: np.ndarray, labels_per_category: int,
                        seed: int) -> np.ndarray:
    """Int8 (N, C): class c keeps n_c = min(positives, negatives, labels_per_category / 2) of
    its positives and as many of its negatives, drawn uniformly without replacement; everything
    else is unknown (docs/methods/problem_and_data.md §1.3)."""
    labels = _check_complete_labels(complete_labels)
    check_label_drop("per_category", 1.0, labels_per_category)
    rng = _generator(seed)
    partial = np.zeros(labels.shape, np.int8)
    for c in range(labels.shape[1]):
        positives = np.flatnonzero(labels[:, c] > 0)
        negatives = np.flatnonzero(labels[:, c] < 0)
        kept = min(len(positives), len(negatives), labels_per_category // 2)
        partial[rng.permutation(positives)[:kept], c] = 1
        partial[rng.permutation(negatives)[:kept], c] = -1
    return partial


def drop_labels(complete_labels: np.ndarray, protocol: str, *, known_ratio: float,
                labels_per_category: int, seed: int) -> np.ndarray:
    """Int8 (N, C) partial training labels by `protocol` (LABEL_DROP_PROTOCOLS, §1.3);
    'elementwise' ignores the seed (the authors' fixed mask)."""
    check_label_drop(protocol, known_ratio, labels_per_category)
    if protocol == "one_positive":
        return one_positive_labels(complete_labels, seed)
    if protocol == "per_category":
        return per_category_labels(complete_labels, labels_per_category, seed)
    return make_partial_labels(complete_labels, known_ratio)
