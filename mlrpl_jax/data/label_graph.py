"""Label co-occurrence graph from known positives of the partial training labels (docs/methods/problem_and_data.md §3.1).

A_ij = n_ij / n_ii with n_ij = #images whose labels i and j are both known positives, so row i
is the conditional frequency of j given i and the diagonal is 1. The GGNN uses A as its "in"
matrix and A^T as its "out" matrix.
"""
import numpy as np

EMPTY_CLASS_ROW_MODES = ("zero", "nan")


def _check_partial_labels(partial_labels: np.ndarray) -> np.ndarray:
    """Returns the labels as an array after checking they are (N, C) with entries in {-1, 0, 1}."""
    labels = np.asarray(partial_labels)
    if labels.ndim != 2:
        raise ValueError(
            f"partial_labels must be a 2-D (num_images, num_classes) array, got shape "
            f"{labels.shape}."
        )
    bad = np.argwhere((labels != 1) & (labels != 0) & (labels != -1))
    if bad.size:
        row, col = (int(i) for i in bad[0])
        raise ValueError(
            f"partial_labels must contain only -1 (absent), 0 (unknown) and 1 (present); "
            f"found {labels[row, col].item()} at (row {row}, class {col})."
        )
    return labels


def classes_without_known_positive(partial_labels: np.ndarray) -> np.ndarray:
    """Int64 indices of the classes with no known positive (their graph row is 0/0)."""
    labels = _check_partial_labels(partial_labels)
    return np.flatnonzero(~np.any(labels == 1, axis=0))


def label_adjacency(partial_labels: np.ndarray, *, empty_class_rows: str = "zero") -> np.ndarray:
    """Float32 (C, C) adjacency A_ij = n_ij / n_ii over known positives, computed in float64.

    A class i without any known positive has n_ii = 0, so its whole row is 0/0. With
    ``empty_class_rows="zero"`` (default) that row, diagonal included, is set to 0: our fix of
    the reference, which discards its NaN cleaning and lets the NaN row poison the GGNN
    (docs/methods/reference_defects.md §12.1). ``"nan"`` keeps the reference's NaN row, for parity tests. Both modes
    agree whenever every class has a known positive.
    """
    if empty_class_rows not in EMPTY_CLASS_ROW_MODES:
        raise ValueError(
            f"empty_class_rows must be one of {EMPTY_CLASS_ROW_MODES}, got {empty_class_rows!r}."
        )
    labels = _check_partial_labels(partial_labels)
    positive = (labels == 1).astype(np.float64)  # (N, C)
    counts = positive.T @ positive  # (C, C): n_ij
    own_counts = np.diag(counts)[:, None]  # (C, 1): n_ii
    with np.errstate(divide="ignore", invalid="ignore"):
        adjacency = counts / own_counts
    if empty_class_rows == "zero":
        adjacency = np.where(own_counts > 0, adjacency, 0.0)
    return adjacency.astype(np.float32)
