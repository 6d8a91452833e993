"""LL-R, large-loss rejection (Kim et al. 2022): assume negative, then drop the unknowns of largest
loss, Δ_rel = 0.1 % more of them per epoch (docs/methods/partial_losses.md §4), on the embedded
digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/ll_r_digits.py \
        --workdir=workdirs/ll_r_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
Δ_rel is 0.25 % per epoch, the papers' 0.1 % in proportion to the schedule.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("ll_r", regime)
