"""SST (docs/methods/sst.md §6) on the embedded digit-scene dataset.

    python -m mlrpl_jax.main --config=configs/sst_digits.py --workdir=workdirs/sst_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
Pseudo labels start at epoch 2 instead of 5 and the margins fall by 0.0625 per epoch instead of
0.025 (the papers' proportions of the schedule); loss weights are the script's. The bank keeps
10 positives per class instead of 100: the mean cosine to the bank counts empty rows as 0
(docs/methods/sst.md §6.3), and at p = 0.1 digit_scenes/small shows each class only ~25 known positives
per epoch, so a 100-row bank would cap the mean at ~0.25, below every margin (COCO at p = 0.1
gives a typical class hundreds per epoch). The benchmark regime (`configs/sst_digits.py:large`,
~490 known positives per class per epoch at p = 0.1) keeps the reference's 100.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    if regime == "small":
        return digit_scenes_config("sst", regime, bank_size=10)
    return digit_scenes_config("sst", regime)
