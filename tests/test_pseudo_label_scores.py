"""benchmarks/pseudo_label_scores.py: score summaries of the unknown entries against margins."""

import math

import numpy as np
import pseudo_label_scores
import pytest

# Two images, three classes. Known entries (targets != 0) never count.
SCORES = np.array([[0.9, 0.55, 0.2], [0.8, 0.45, 0.7]])
TARGETS = np.array([[1, 0, 0], [0, 0, 0]])
HIDDEN = np.array([[1, 1, -1], [1, -1, -1]])


def test_group_summary_splits_unknown_entries_by_hidden_label():
    summary = pseudo_label_scores.group_summary(SCORES, TARGETS == 0, HIDDEN, margin=0.6)
    # Unknown hidden positives: 0.55, 0.8; hidden negatives: 0.2, 0.45, 0.7.
    assert summary["hidden_positive"]["entries"] == 2
    assert summary["hidden_positive"]["q100"] == 0.8
    assert summary["hidden_positive"]["share_at_or_above_margin"] == 0.5
    assert summary["hidden_negative"]["q50"] == 0.45
    assert summary["hidden_negative"]["share_at_or_above_margin"] == pytest.approx(1 / 3)


def test_precision_and_recall_at_each_threshold():
    rows = pseudo_label_scores.at_thresholds(SCORES, TARGETS == 0, HIDDEN)
    # >= 0.5: 0.55 (pos), 0.8 (pos), 0.7 (neg) -> precision 2/3, recall 2/2, 1.5 per image.
    assert rows["0.5"] == {"per_image": 1.5, "precision": pytest.approx(2 / 3), "recall": 1.0}
    # >= 0.75: 0.8 only (the known 0.9 is not a candidate).
    assert rows["0.75"]["precision"] == 1.0 and rows["0.75"]["recall"] == 0.5
    assert math.isnan(
        pseudo_label_scores.at_thresholds(SCORES * 0, TARGETS == 0, HIDDEN)["0.3"]["precision"]
    )
