"""Partial training labels: keep each complete label with probability p (docs/methods/problem_and_data.md §1.2).

The reference re-seeds NumPy's legacy global generator with 0 and thresholds one uniform
draw of the label-matrix shape. A private ``RandomState(0)`` yields the same MT19937 stream
without touching the global generator (docs/methods/reference_defects.md §12.1), so every published split is
reproduced bit for bit. Because the same draw is thresholded for every p, the known sets are
nested: an entry known at p is known at every p' > p.
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
