"""Command-line entry point.

    python -m mlrpl_jax.main --config=configs/baseline_digits.py --workdir=workdirs/demo \
        --config.known_ratio=0.3 --config.batch_size=16

Running the same command again in the same workdir resumes from its latest checkpoint. It prints
the last- and best-epoch test metrics at the end; `--verbosity=0` adds absl's INFO lines
(training scalars, checkpoints), which are off by default.
`--dry_run_steps=N` instead runs N train steps of the config at its shapes on synthetic input
(no dataset, weights or embeddings needed) and reports compile time, step time and peak
memory (mlrpl_jax/core/dry_run.py, docs/dry_run.md).
On a TPU pod, a SLURM job or with --coordinator_address/--num_processes/--process_id the
processes join one cluster first (mlrpl_jax/core/distributed.py, launch/README.md).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from mlrpl_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_DRY_RUN_STEPS = flags.DEFINE_integer(
    "dry_run_steps",
    0,
    "If > 0, train this many steps on synthetic input at the config's shapes "
    "with random weights, report times and peak memory to <workdir>/dry_run.json, and stop.",
    lower_bound=0,
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    config = _CONFIG.value
    cli.start(argv, config, check_inputs=not _DRY_RUN_STEPS.value)
    # Imported here so that `--help` and flag errors do not pay for importing JAX.
    if _DRY_RUN_STEPS.value:
        from mlrpl_jax.core import dry_run

        dry_run.run(config, _WORKDIR.value, _DRY_RUN_STEPS.value)
        return
    import jax

    from mlrpl_jax.core import train

    logging.info("config:\n%s", config)
    results = train.train_and_evaluate(config, _WORKDIR.value)
    if jax.process_index() == 0:
        print(train.format_results(results, config))


if __name__ == "__main__":
    app.run(main)
