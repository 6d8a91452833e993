"""Command line of the acceptance check of a new accelerator host or pod slice.

    python -m mlrpl_jax.acceptance --config=configs/dsrb_coco.py --workdir=/tmp/accept \
        --config.data.data_dir=$HOME/tensorflow_datasets

Takes the training command's arguments (the cluster flags too: launch/*.sh run it before
training, launch/README.md) and runs mlrpl_jax/core/host_acceptance.py: topology, the config's
dry run with its FLOP/s and MFU, the input pipeline's images/s, a one-line verdict, written to
<workdir>/acceptance.json. Exits with status 1 when the verdict is FAIL. Like the dry run it
reads no weights or embeddings (random ones: same shapes and time), but the prepared dataset.
"""

from absl import app, flags
from ml_collections import config_flags

from mlrpl_jax import cli
from mlrpl_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory the report acceptance.json goes to.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed train steps after the compile.", lower_bound=1)
_INPUT_BATCHES = flags.DEFINE_integer(
    "input_batches",
    20,
    "Training batches of the input pipeline to time (the first is not timed).",
    lower_bound=2,
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    config = _CONFIG.value
    cli.start(argv, config, check_inputs=False)
    # Imported here so that `--help` and flag errors do not pay for importing JAX.
    from mlrpl_jax.core import host_acceptance, run_inputs
    from mlrpl_jax.data.pipeline import DatasetNotPreparedError

    try:
        run_inputs.check_data_dir(config)
        report = host_acceptance.run(config, _WORKDIR.value, _STEPS.value, _INPUT_BATCHES.value)
    except (config_lib.ConfigError, DatasetNotPreparedError) as error:
        raise app.UsageError(str(error)) from None
    if report["verdict"].startswith("FAIL"):
        raise SystemExit(1)


if __name__ == "__main__":
    app.run(main)
