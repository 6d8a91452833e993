"""EMA-teacher curriculum pseudo labels (LogicMix's 2WayAug-PL, Pattern Recognition 2026) on
partial BCE, on the embedded digit-scene dataset (docs/methods/ema.md §2).

    python -m mlrpl_jax.main --config=configs/ema_teacher_digits.py \
        --workdir=workdirs/ema_teacher_digits

Model, optimiser and schedule from `mlrpl_jax.config.digit_scenes_config`: ImageNet
EfficientNet-Lite0 frozen up to stride 16, 64 px, 8 epochs (the papers' 20 in proportion).
Pseudo labels from epoch 3 of 8 (7 of 20 in proportion), thresholds at logits -4 and 4. The
model EMA keeps the published horizon of about 1.5 epochs (0.999 per step at 647 steps per
COCO epoch), `DigitRegime.ema_decay`: 0.98 at the 31 steps of a 'small' epoch, 0.999 at the 625
of a 'large' or 'cached' one.
The model EMA is what is evaluated (results.json: evaluated_weights).
"""

from mlrpl_jax.config import DIGIT_REGIMES, digit_scenes_config


def get_config(regime: str = "small"):
    config = digit_scenes_config("ema_teacher", regime)  # an unknown regime stops here
    config.ema.decay = DIGIT_REGIMES[regime].ema_decay
    return config
