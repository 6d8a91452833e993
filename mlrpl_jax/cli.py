"""Start-up shared by the command-line entry points (main.py, sweep.py)."""

from __future__ import annotations

import ml_collections
from absl import app, flags, logging

from mlrpl_jax import config as config_lib
from mlrpl_jax.core import distributed, run_inputs


def start(argv: list[str], config: ml_collections.ConfigDict, check_inputs: bool = True) -> None:
    """Quiets the logs (`quiet_unless_asked`), rejects stray arguments, invalid configs and
    missing or wrong input files (one usage line; run_inputs.py), then joins the cluster.

    The cluster (TPU pod, SLURM, explicit coordinator flags; mlrpl_jax/core/distributed.py) must be
    joined before anything touches a device.
    """
    quiet_unless_asked()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config_lib.validate_config(config)
        if check_inputs:  # a dry run (dry_run.py) reads no input file
            run_inputs.check_run_inputs(config)
    except config_lib.ConfigError as error:
        raise app.UsageError(str(error)) from None
    distributed.initialize_from_flags()


def quiet_unless_asked() -> None:
    """Warnings and errors only from absl and the libraries that log through it (orbax), unless
    --verbosity is given: --verbosity=0 shows the INFO lines (per-window training scalars,
    checkpoints), 1 debug lines."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
