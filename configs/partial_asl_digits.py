"""Partial asymmetric loss: ASL (γ+ = 0, γ- = 4, m = 0.05) on the known labels only
(docs/methods/partial_losses.md §2), on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/partial_asl_digits.py \
        --workdir=workdirs/partial_asl_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("partial_asl", regime)
