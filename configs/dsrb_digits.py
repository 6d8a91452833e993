"""DSRB, repaired (docs/methods/dsrb.md §9), on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/dsrb_digits.py --workdir=workdirs/dsrb_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
Blending and quadrant prototypes start at epoch 2 instead of 5 and are recomputed every 2 epochs
instead of every 5 (the papers' proportions of the schedule).
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("dsrb", regime)
