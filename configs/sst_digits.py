"""SST (METHODS.md §6) on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/sst_digits.py --workdir=workdirs/sst_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 4 epochs (the papers' 20 in proportion).
Pseudo labels start at epoch 1 instead of 5 (the papers' proportion of the schedule), so the
margins fall from 0.95 by 0.025 per epoch over the last epochs; loss weights and the bank of
100 positives per class are the script's.
"""

from mlrpl_jax.config import DIGIT_METHOD_START_EPOCH, DIGIT_SCHEDULE_SCALE, digit_scenes_config


def get_config():
    config = digit_scenes_config("sst")
    config.sst.generate_label_epoch = DIGIT_METHOD_START_EPOCH
    config.sst.margin_decay *= DIGIT_SCHEDULE_SCALE
    return config
