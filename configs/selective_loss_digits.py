"""Class-aware selective loss (Ben-Baruch et al. 2022): unknowns of classes with a known-label
prior above 0.05 and the top-5 likely positives per image ignored, the others negatives
(docs/methods/partial_losses.md §3), on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/selective_loss_digits.py \
        --workdir=workdirs/selective_loss_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("selective_loss", regime)
