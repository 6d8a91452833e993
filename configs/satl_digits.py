"""SATL (our design following the abstract of arXiv 2507.23263, docs/methods/satl.md §4) on the digit scenes.

    python -m mlrpl_jax.main --config=configs/satl_digits.py --workdir=workdirs/satl_digits
    python -m mlrpl_jax.sweep --config=configs/satl_digits.py --workdir=workdirs/satl_digits_sweep \
        --known_ratios=0.1,0.3,0.5 --seeds=0,1,2
    # on top of SST (its fixed-margin pseudo labels replaced by SATL's thresholds) or DSRB:
    python -m mlrpl_jax.main --config=configs/satl_digits.py --config.satl.base_method=sst ...

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
The §4.8 design defaults, with the pseudo-label warm-up in the papers' proportion of the
schedule as in configs/sst_digits.py: pseudo labels from epoch 2.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("satl", regime)
