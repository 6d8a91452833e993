"""Assume-negative BCE: every unknown label is a negative (docs/methods/partial_losses.md §1), on
the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/assume_negative_digits.py \
        --workdir=workdirs/assume_negative_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("assume_negative", regime)
