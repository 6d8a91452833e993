"""SARB with a model EMA (evaluated on the EMA weights) trained on LogicMix batches
(docs/methods/sarb.md, ema.md §1, logicmix.md), on the embedded digit-scene dataset: an HCPLab
method combined with the field's two recipes.

    python -m mlrpl_jax.main --config=configs/sarb_ema_logicmix_digits.py:cached \
        --workdir=workdirs/sarb_ema_logicmix_digits

The settings of configs/sarb_digits.py, the EMA horizon of configs/baseline_ema_digits.py and
the LogicMix settings of configs/baseline_logicmix_digits.py.
"""

from mlrpl_jax.config import AUTHORS_LOGICMIX, DIGIT_REGIMES, digit_scenes_config


def get_config(regime: str = "small"):
    config = digit_scenes_config("sarb", regime)  # an unknown regime stops here
    config.ema.decay = DIGIT_REGIMES[regime].ema_decay
    config.logicmix.update(AUTHORS_LOGICMIX)
    return config
