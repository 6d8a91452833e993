"""SATL on top of DSRB (our SATL design, SATL.md §4; DSRB repaired, METHODS.md §9) on the digit scenes.

    python -m mlrpl_jax.main --config=configs/satl_dsrb_digits.py --workdir=workdirs/satl_dsrb_digits

The base method is set here rather than by `--config.satl.base_method=dsrb` so that the config
holds a `dsrb` section: the command line can only override keys that the config file has. The
DSRB settings are those of configs/dsrb_digits.py, the SATL settings those of
configs/satl_digits.py. DSRB has no pseudo-label terms of its own, so SATL's pseudo labels are
added to its losses.
"""

from mlrpl_jax.config import DIGIT_METHOD_START_EPOCH, digit_scenes_config, with_method_sections


def get_config():
    config = digit_scenes_config("satl")
    config.satl.base_method = "dsrb"
    config = with_method_sections(config)
    config.satl.warmup_epochs = DIGIT_METHOD_START_EPOCH
    config.dsrb.mixup_epoch = DIGIT_METHOD_START_EPOCH
    config.dsrb.recompute_interval = 2
    return config
