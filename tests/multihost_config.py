"""Tiny config of the multi-process tests: `--config=tests/multihost_config.py:<method>`.

One epoch of 6 steps (global batch 16) on the tiny digit scenes, ResNet-18 of width 8 at 32 px;
SARB blends and computes prototypes from epoch 0, so its host hook runs in the cluster. The
test sets `--config.data.data_dir`.
"""

from mlrpl_jax.config import base_config, with_method_sections


def get_config(method="baseline"):
    config = base_config()
    config.method = method
    config.batch_size = 16
    config.epochs = 1
    config.data.name = "digit_scenes/tiny"
    config.data.image_size = 32
    config.embeddings.kind = "random"
    config.embeddings.dim = 16
    config.model.update(depth=18, width=8, extra_pool=False, freeze_early_stages=False,
                        feature_dim=16, attention_dim=8, output_dim=16)
    config.optim.lr = 1e-3
    config.eval.batch_size = 8
    config.logging.every_steps = 1
    config.logging.progress_bar = False
    config.checkpoint.keep_last = 1
    config.checkpoint.keep_best = 0
    config = with_method_sections(config)
    if method == "sarb":
        config.sarb.mixup_epoch = 0
    return config
