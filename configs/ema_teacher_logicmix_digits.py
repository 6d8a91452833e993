"""LogicMix with EMA-teacher pseudo labels (the published recipe's pseudo-labelling and mixing,
Pattern Recognition 2026) on partial BCE, on the embedded digit-scene dataset
(docs/methods/ema.md §2.6, logicmix.md §4).

    python -m mlrpl_jax.main --config=configs/ema_teacher_logicmix_digits.py:cached \
        --workdir=workdirs/ema_teacher_logicmix_digits

The settings of configs/ema_teacher_digits.py (pseudo labels from the model EMA after a third of
the epochs, thresholds at logits -4 and 4, the EMA evaluated) with the LogicMix authors' settings
of configs/baseline_logicmix_digits.py: each image's labels are completed by its pseudo labels,
then half of the rows of every batch are mixed, 2 or 3 images each.
"""

from mlrpl_jax.config import AUTHORS_LOGICMIX, DIGIT_REGIMES, digit_scenes_config


def get_config(regime: str = "small"):
    config = digit_scenes_config("ema_teacher", regime)  # an unknown regime stops here
    config.ema.decay = DIGIT_REGIMES[regime].ema_decay
    config.logicmix.update(AUTHORS_LOGICMIX)
    return config
