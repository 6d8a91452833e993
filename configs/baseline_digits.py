"""Partial-BCE baseline on the embedded digit-scene dataset (the default demo run).

    python -m mlrpl_jax.main --config=configs/baseline_digits.py --workdir=workdirs/baseline_digits

A small ResNet-18 (width 16) trained from scratch at 64 px: no ImageNet weights exist for
this data, so the whole backbone trains (`model.freeze_early_stages=False`) and the extra 2x2
pool is off so the final 2x2 map matches the scene's 2x2 digit grid.
"""

from mlrpl_jax.config import base_config


def get_config():
    config = base_config()
    config.method = "baseline"
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
    return config
