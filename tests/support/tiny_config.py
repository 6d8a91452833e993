"""The tiny run config of the tests, also a config file: `--config=tests/support/tiny_config.py:<method>`.

`tiny_digit_config` is the shared base (tiny digit scenes, ResNet-18 of width 8 at 32 px, small
heads); `get_config` is the multi-process tests' config: one epoch of 6 steps (global batch 16),
SARB blending and computing prototypes from epoch 0 so that its host hook runs in the cluster.
The multi-process test sets `--config.data.data_dir`.
"""

from mlrpl_jax.config import base_config, with_method_sections


def tiny_digit_config(method: str, *, batch_size: int, epochs: int, data_dir: str = ""):
    """A short real run on the tiny digit scenes (96 training scenes)."""
    config = base_config()
    config.method = method
    config.batch_size = batch_size
    config.epochs = epochs
    config.data.name = "digit_scenes/tiny"
    config.data.data_dir = data_dir
    config.data.image_size = 32
    config.embeddings.kind = "random"
    config.embeddings.dim = 16
    config.model.update(
        depth=18,
        width=8,
        extra_pool=False,
        freeze_early_stages=False,
        feature_dim=16,
        attention_dim=8,
        output_dim=16,
    )
    config.optim.lr = 1e-3
    return config


def get_config(method="baseline"):
    config = tiny_digit_config(method, batch_size=16, epochs=1)
    config.eval.batch_size = 8
    config.logging.every_steps = 1
    config.logging.progress_bar = False
    config.checkpoint.keep_last = 1
    config.checkpoint.keep_best = 0
    config = with_method_sections(config)
    if method == "sarb":
        config.sarb.mixup_epoch = 0
    return config
