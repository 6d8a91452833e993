"""SATL (our design following the abstract of arXiv 2507.23263, SATL.md §4) on the digit scenes.

    python -m mlrpl_jax.main --config=configs/satl_digits.py --workdir=workdirs/satl_digits
    python -m mlrpl_jax.sweep --config=configs/satl_digits.py --workdir=workdirs/satl_digits_sweep \
        --known_ratios=0.1,0.3,0.5 --seeds=0,1,2
    # on top of SST (its fixed-margin pseudo labels replaced by SATL's thresholds) or DSRB:
    python -m mlrpl_jax.main --config=configs/satl_digits.py --config.satl.base_method=sst ...

Model and optimiser as configs/baseline_digits.py (ResNet-18 width 16 from scratch at 64 px,
no extra pool, Adam lr 1e-3, 6 epochs). The §4.8 design defaults, with the pseudo-label
warm-up scaled to the 6 epochs as in configs/sst_digits.py: pseudo labels from epoch 2.
"""

from mlrpl_jax.config import base_config
from mlrpl_jax.methods.satl import SemanticAwareThresholdLearning


def get_config():
    config = base_config()
    config.method = "satl"
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
    config.satl = SemanticAwareThresholdLearning.default_config()
    config.satl.warmup_epochs = 2
    return config
