"""SARB with its blend weights fixed at α = β = 0.5 and partial ASL in every term
(docs/methods/sarb.md, partial_losses.md §2, §2.1), on the embedded digit-scene dataset: an HCPLab
method combined with the strongest loss baseline of docs/results/benchmark_regime.md.

    python -m mlrpl_jax.main --config=configs/sarb_fixed_asl_digits.py:cached \
        --workdir=workdirs/sarb_fixed_asl_digits

The settings of configs/sarb_digits.py, with `learn_alpha = learn_beta = False` (the reference's
isAlphaLearnable / isBetaLearnable; learned, the weights drift to their clamps in that
benchmark), `known_label_loss = 'asl'` (the main term) and `blended_loss = 'asl'` (the blended
branches, whose targets are soft).
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    config = digit_scenes_config("sarb", regime)
    config.sarb.learn_alpha = False
    config.sarb.learn_beta = False
    config.sarb.known_label_loss = "asl"
    config.sarb.blended_loss = "asl"
    return config
