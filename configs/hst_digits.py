"""HST (METHODS.md §7) on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/hst_digits.py --workdir=workdirs/hst_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config` (ResNet-18 of width
16 trained from scratch at 64 px, 6 epochs).
The script schedule is scaled to the 6 epochs: pseudo labels, learnable margins and
prototypes start at epoch 2 instead of 5 and the K-means prototypes (K = 10) are
recomputed every 2 epochs instead of 5; loss weights are the script's.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config():
    config = digit_scenes_config("hst")
    config.hst.generate_label_epoch = 2
    config.hst.prototype_interval = 2
    return config
