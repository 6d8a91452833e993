"""DSRB, repaired (METHODS.md §9) on the embedded digit-scene dataset (a small demo run).

    python -m mlrpl_jax.main --config=configs/dsrb_digits.py --workdir=workdirs/dsrb_digits

Model and optimiser as configs/baseline_digits.py (ResNet-18 width 16 from scratch at 64 px,
no extra pool, so the final map is the scene's 2x2 digit grid). The 6-epoch schedule starts
blending and prototypes at epoch 2 and recomputes them every 2 epochs.
"""

from mlrpl_jax.config import base_config
from mlrpl_jax.methods.dsrb import DSRB


def get_config():
    config = base_config()
    config.method = "dsrb"
    config.known_ratio = 0.5
    config.batch_size = 32
    config.epochs = 6
    config.data.name = "digit_scenes"
    config.data.image_size = 64
    config.embeddings.kind = "random"
    config.model.depth = 18
    config.model.width = 16
    config.model.extra_pool = False
    config.model.freeze_early_stages = False
    config.model.feature_dim = 128
    config.model.attention_dim = 64
    config.model.output_dim = 128
    config.optim.lr = 1e-3
    config.optim.weight_decay = 1e-4
    config.optim.lr_decay_epochs = 4
    config.logging.every_steps = 25
    config.dsrb = DSRB.default_config()
    config.dsrb.mixup_epoch = 2
    config.dsrb.recompute_interval = 2
    return config
