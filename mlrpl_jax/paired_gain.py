"""Paired gains over seeds and their confidence intervals: the verdict rule of every comparison.

Two configs run with the same seed share the partial-label mask, the initialisation and the
data order, so their difference at one seed is one paired observation of the gain. Over n
seeds the gain's mean has the Student-t interval

    mean ± t_{(1 + confidence) / 2, n - 1} · s / √n,    s = sample std (ddof = 1) of the gains,

and a config *beats* the reference only when the whole interval lies above 0 (*below* when it
lies under 0; otherwise the seeds do not settle it). One seed gives a gain and no verdict.
The interval assumes the per-seed gains are independent draws of one normal distribution: each
pair has its own seed, and tests/test_paired_gain.py checks the interval's coverage under it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95

BEATS, BELOW, NOT_SETTLED, ONE_SEED = "beats", "below", "not settled", "no verdict (1 seed)"


@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean of n observations and the two ends of its confidence interval (NaN ends for n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval of the mean of `values` (NaN entries are left out)."""
    logged = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    n = len(logged)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(logged.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * logged.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


@dataclasses.dataclass(frozen=True)
class PairedGain:
    """Per-seed gains of a config over the reference, and their interval."""

    seeds: tuple[int, ...]
    gains: tuple[float, ...]  # (n,) config − reference at each seed, in `seeds` order
    interval: Interval

    @property
    def verdict(self) -> str:
        if self.interval.n < 2:
            return ONE_SEED
        if self.interval.low > 0:
            return BEATS
        if self.interval.high < 0:
            return BELOW
        return NOT_SETTLED


def paired_gain(
    values: Mapping[int, float], reference: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedGain:
    """The gain of `values` over `reference` ({seed: metric}) on the seeds both have.

    Raises ValueError when they share no seed: an unpaired difference is no evidence here.
    """
    seeds = tuple(sorted(set(values) & set(reference)))
    if not seeds:
        raise ValueError(
            f"no seed in common: {sorted(values)} against the reference's {sorted(reference)}"
        )
    gains = tuple(float(values[s]) - float(reference[s]) for s in seeds)
    return PairedGain(seeds, gains, mean_interval(gains, confidence))
