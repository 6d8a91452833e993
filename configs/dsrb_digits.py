"""DSRB, repaired (METHODS.md §9), on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/dsrb_digits.py --workdir=workdirs/dsrb_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config` (ResNet-18 of width
16 trained from scratch at 64 px, 6 epochs).
Blending and quadrant prototypes start at epoch 2 instead of 5 and are recomputed every
2 epochs.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config():
    config = digit_scenes_config("dsrb")
    config.dsrb.mixup_epoch = 2
    config.dsrb.recompute_interval = 2
    return config
