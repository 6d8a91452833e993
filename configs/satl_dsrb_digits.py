"""SATL on top of DSRB (our SATL design, docs/methods/satl.md §4; DSRB repaired, docs/methods/dsrb.md §9) on the digit scenes.

    python -m mlrpl_jax.main --config=configs/satl_dsrb_digits.py --workdir=workdirs/satl_dsrb_digits

The base method is set here rather than by `--config.satl.base_method=dsrb` so that the config
holds a `dsrb` section: the command line can only override keys that the config file has. The
DSRB settings are those of configs/dsrb_digits.py, the SATL settings those of
configs/satl_digits.py. DSRB has no pseudo-label terms of its own, so SATL's pseudo labels are
added to its losses.
"""

from mlrpl_jax.config import digit_scenes_config


def get_config(regime: str = "small"):
    return digit_scenes_config("satl", regime, base_method="dsrb")
