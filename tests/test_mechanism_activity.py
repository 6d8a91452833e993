"""benchmarks/mechanism_activity.py: per-epoch means of the mechanism scalars of a run's log."""

import math

import mechanism_activity
import pytest


def test_epoch_means_weight_windows_by_their_steps():
    # 10 steps per epoch, windows of 4, 4, 2 steps (the last one cut at the epoch's end).
    keys = mechanism_activity.PSEUDO_LABEL_KEYS
    records = [
        {"step": 4, **dict(zip(keys, (0.0, 1.0, 1.0, 4.0)))},
        {"step": 8, **dict(zip(keys, (0.0, 3.0, 2.0, 4.0)))},
        {"step": 10, **dict(zip(keys, (1.0, 6.0, 3.0, 4.0)))},
        {"step": 10, "test/mAP": 50.0},  # an evaluation record: no mechanism key
        {"step": 20, **dict(zip(keys, (2.0, 0.0, 0.0, 8.0)))},
    ]
    rows = mechanism_activity.epoch_means(records, keys, epoch_steps=10)
    assert [r["epoch"] for r in rows] == [0, 1]
    # Epoch 0: inter (4·1 + 4·3 + 2·6) / 10 = 2.8, true (4 + 8 + 6) / 10 = 1.8, intra 0.2.
    assert rows[0][keys[1]] == pytest.approx(2.8) and rows[0][keys[2]] == pytest.approx(1.8)
    assert rows[0][keys[0]] == pytest.approx(0.2)
    quality = mechanism_activity.with_pseudo_label_quality(rows[0])
    assert quality["inter_precision"] == pytest.approx(1.8 / 2.8)
    assert quality["inter_recall"] == pytest.approx(1.8 / 4.0)
    # Epoch 1 made no inter pseudo positive: precision undefined, recall 0.
    quality = mechanism_activity.with_pseudo_label_quality(rows[1])
    assert math.isnan(quality["inter_precision"]) and quality["inter_recall"] == 0.0


def test_per_epoch_scalars_keep_the_epochs_last_value():
    keys = mechanism_activity.SATL_KEYS
    records = [{"step": 10, keys[0]: 3.0}, {"step": 20, keys[0]: 5.0, keys[2]: 0.8}]
    rows = mechanism_activity.last_per_epoch(records, keys, epoch_steps=10)
    assert [(r["epoch"], r[keys[0]]) for r in rows] == [(0, 3.0), (1, 5.0)]
    assert math.isnan(rows[0][keys[2]]) and rows[1][keys[2]] == 0.8
    text = mechanism_activity.format_activity({"thresholds": rows})
    assert text.splitlines()[0] == "thresholds:" and "| 1 | 5 |" in text
