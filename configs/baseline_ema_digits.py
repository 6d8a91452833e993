"""Partial-BCE baseline with a model EMA, evaluated on the EMA weights, on the embedded
digit-scene dataset (docs/methods/ema.md §1): the strong simple baseline beside the recipes.

    python -m mlrpl_jax.main --config=configs/baseline_ema_digits.py:cached \
        --workdir=workdirs/baseline_ema_digits

Model, optimiser and schedule as configs/baseline_digits.py; the EMA horizon is about 1.5
epochs of steps (`DigitRegime.ema_decay`).
"""

from mlrpl_jax.config import DIGIT_REGIMES, digit_scenes_config


def get_config(regime: str = "small"):
    config = digit_scenes_config("baseline", regime)  # an unknown regime stops here
    config.ema.decay = DIGIT_REGIMES[regime].ema_decay
    return config
