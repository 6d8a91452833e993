"""Partial-BCE baseline on the embedded digit-scene dataset (the default demo run).

    python -m mlrpl_jax.main --config=configs/baseline_digits.py --workdir=workdirs/baseline_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config` (ResNet-18 of width
16 trained from scratch at 64 px, 6 epochs).
"""

from mlrpl_jax.config import digit_scenes_config


def get_config():
    return digit_scenes_config("baseline")
