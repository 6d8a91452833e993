"""SST on the embedded digit-scene dataset (METHODS.md §6), the baseline demo's model and optimiser.

    python -m mlrpl_jax.main --config=configs/sst_digits.py --workdir=workdirs/sst_digits

Model and optimiser as configs/baseline_digits.py (ResNet-18 width 16 from scratch at 64 px,
no extra pool, Adam lr 1e-3, 6 epochs). The script's schedule is scaled to the 6 epochs:
pseudo labels start at epoch 2 instead of 5 (a third of the run instead of a quarter, so the
margins still fall 0.95 -> 0.875 over the last three epochs); loss weights and the bank of 100
positives per class are the script's.
"""

from mlrpl_jax.config import base_config
from mlrpl_jax.methods.sst import StructuredSemanticTransfer


def get_config():
    config = base_config()
    config.method = "sst"
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
    config.sst = StructuredSemanticTransfer.default_config()
    config.sst.generate_label_epoch = 2
    return config
