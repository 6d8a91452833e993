"""Partial-BCE baseline trained on LogicMix batches (docs/methods/logicmix.md) on the digit scenes.

    python -m mlrpl_jax.main --config=configs/baseline_logicmix_digits.py \
        --workdir=workdirs/baseline_logicmix_digits

The settings of configs/baseline_digits.py with the authors' LogicMix settings: half of the rows
of every batch mixed, 2 or 3 images each. Any other config takes LogicMix the same way, e.g.
--config=configs/hst_digits.py --config.logicmix.probability=0.5 (methods that cannot:
docs/methods/logicmix.md §4).
"""

from mlrpl_jax.config import AUTHORS_LOGICMIX, digit_scenes_config


def get_config(regime: str = "small"):
    config = digit_scenes_config("baseline", regime)
    config.logicmix.update(AUTHORS_LOGICMIX)
    return config
