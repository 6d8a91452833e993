"""The verdict rule (mlrpl_jax/paired_gain.py): paired gains over seeds, Student-t intervals."""

import math

import numpy as np
import pytest

from mlrpl_jax import paired_gain

# Two-sided 95 % critical values of Student's t from a printed table (e.g. NIST/SEMATECH
# e-Handbook 1.3.6.7.2), to 4 decimals: independent of the scipy call under test.
T_975 = {2: 4.3027, 7: 2.3646, 9: 2.2622}


def test_interval_matches_the_hand_computation():
    # Gains 1, 2, 3: mean 2, sample std 1, half-width t_{.975,2} / √3.
    interval = paired_gain.mean_interval([1.0, 2.0, 3.0])
    half = T_975[2] / math.sqrt(3)
    assert interval.n == 3 and interval.mean == 2.0
    # 5e-5 / √3 ≈ 3e-5: the table's rounding of t, carried through the half-width.
    assert interval.low == pytest.approx(2.0 - half, abs=3e-5)
    assert interval.high == pytest.approx(2.0 + half, abs=3e-5)


def test_eight_seeds_and_nan_entries_left_out():
    gains = [0.5, 1.5, 0.8, 1.1, 2.0, 0.2, 1.4, 0.9]
    mean, std = np.mean(gains), np.std(gains, ddof=1)
    half = T_975[7] * std / math.sqrt(8)
    interval = paired_gain.mean_interval(gains + [float("nan")])
    assert interval.n == 8 and interval.mean == pytest.approx(mean, rel=1e-12)
    # The table's t is rounded to 5e-5: the half-width is off by at most 5e-5 · s / √8.
    assert interval.half_width == pytest.approx(half, abs=5e-5 * std / math.sqrt(8) + 1e-12)


def test_verdicts_and_pairing_by_seed():
    reference = {0: 50.0, 1: 52.0, 2: 51.0, 3: 49.0}
    # Gains +2.0, +2.5, +1.5 on the shared seeds 0-2 (seed 3 has no partner): interval
    # 2 ± 4.3027 · 0.5 / √3 = [0.76, 3.24], above 0.
    gain = paired_gain.paired_gain({0: 52.0, 1: 54.5, 2: 52.5, 7: 10.0}, reference)
    assert gain.seeds == (0, 1, 2) and gain.gains == (2.0, 2.5, 1.5)
    assert gain.verdict == paired_gain.BEATS and gain.interval.low > 0.7
    below = paired_gain.paired_gain({s: v - 3.0 + 0.1 * s for s, v in reference.items()}, reference)
    assert below.verdict == paired_gain.BELOW
    unsettled = paired_gain.paired_gain({0: 51.0, 1: 51.0, 2: 52.0}, reference)  # +1, -1, +1
    assert unsettled.verdict == paired_gain.NOT_SETTLED
    one = paired_gain.paired_gain({0: 60.0}, reference)
    assert one.verdict == paired_gain.ONE_SEED and one.gains == (10.0,)
    assert math.isnan(one.interval.low) and math.isnan(one.interval.high)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_gain.paired_gain({5: 1.0}, reference)


def test_pairing_removes_the_seed_effect_the_unpaired_spread_holds():
    # Seed effects of ±5 points shared by both configs, gain exactly +1 at every seed: the
    # paired interval is a point above 0, whatever the spread of either config alone.
    reference = {s: 60.0 + 5.0 * (-1) ** s for s in range(8)}
    gain = paired_gain.paired_gain({s: v + 1.0 for s, v in reference.items()}, reference)
    assert gain.interval.low == gain.interval.high == 1.0 and gain.verdict == paired_gain.BEATS


def test_coverage_of_the_interval_is_nominal():
    # 4,000 draws of 8 normal gains: the 95 % interval holds the true mean in a fraction whose
    # binomial std is √(0.95 · 0.05 / 4000) ≈ 0.0034; 4 std ≈ 0.014 bounds a correct rule.
    rng = np.random.default_rng(0)
    draws = rng.normal(0.7, 1.3, size=(4000, 8))
    covered = [
        paired_gain.mean_interval(row).low <= 0.7 <= paired_gain.mean_interval(row).high
        for row in draws
    ]
    assert abs(np.mean(covered) - 0.95) < 0.014
