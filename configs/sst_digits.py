"""SST (METHODS.md §6) on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/sst_digits.py --workdir=workdirs/sst_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config` (ResNet-18 of width
16 trained from scratch at 64 px, 6 epochs).
The script schedule is scaled to the 6 epochs: pseudo labels start at epoch 2 instead of
5, so the margins fall from 0.95 by 0.025 per epoch over the last epochs; loss weights
and the bank of 100 positives per class are the script's.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config():
    config = digit_scenes_config("sst")
    config.sst.generate_label_epoch = 2
    return config
