"""Multi-process start-up: one JAX cluster over every host of a TPU pod or GPU job.

`initialize_from_environment` must run before anything touches devices. It calls
`jax.distributed.initialize` when

* the coordinator is given explicitly (`--coordinator_address`, `--num_processes`,
  `--process_id`, or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID; launch/local_cluster.sh uses these),
* the process is one task of a SLURM step with more than one task (launch/slurm_gpu.sbatch:
  one task per GPU; JAX reads the coordinator, the process id and the local GPU from SLURM),
* the process is one worker of a multi-host TPU slice (TPU_WORKER_HOSTNAMES or
  TPU_PROCESS_ADDRESSES lists more than one host), or `distributed='on'` is asked for
  (launch/tpu_pod.sh: JAX finds the workers from the TPU VM metadata),

and runs as a single process otherwise. Processes other than 0 log at WARNING only, so that
one process writes the run's log (metrics are written by process 0 alone: metric_writer.py).
The command-line flags are defined here, for mlrpl_jax.main and mlrpl_jax.sweep; JAX is
imported only when the cluster is joined, so that `--help` stays fast.
"""

from __future__ import annotations

import os

from absl import flags, logging

_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 of a multi-process run "
    "(default: $JAX_COORDINATOR_ADDRESS, else detected on SLURM and TPU pods).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes of the run (default: $JAX_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (default: $JAX_PROCESS_ID)."
)
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "auto: join a cluster when the flags, "
    "JAX_* variables, SLURM or TPU variables describe one; on: always call "
    "jax.distributed.initialize() (JAX detects the cluster, e.g. from TPU VM metadata); off: "
    "single process.",
)

EXPLICIT_ENV = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
MODES = ("auto", "on", "off")


def detect_cluster(
    environ: dict[str, str],
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    mode: str = "auto",
) -> tuple[str, dict[str, object]]:
    """(cluster kind, keyword arguments of jax.distributed.initialize); kind 'single' means none.

    Explicit values (arguments, else JAX_* variables) win over detection; they must be given
    together. `mode` 'off' forces a single process, 'on' lets JAX auto-detect the cluster.
    """
    if mode not in MODES:
        raise ValueError(f"distributed mode must be one of {MODES}, got {mode!r}")
    explicit = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for key, variable in EXPLICIT_ENV.items():
        if explicit[key] is None and environ.get(variable):
            explicit[key] = environ[variable]
    given = {key: value for key, value in explicit.items() if value is not None}
    if mode == "off":
        return "single", {}
    if given:
        if len(given) != len(explicit):
            missing = sorted(set(explicit) - set(given))
            raise ValueError(
                f"explicit multi-process set-up needs {missing} as well "
                f"(flags --{' --'.join(missing)} or {[EXPLICIT_ENV[k] for k in missing]})"
            )
        return "explicit", {
            "coordinator_address": str(given["coordinator_address"]),
            "num_processes": int(given["num_processes"]),
            "process_id": int(given["process_id"]),
        }
    if int(environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1:  # inside an srun step
        return "slurm", {}
    tpu_hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    if len([host for host in tpu_hosts.split(",") if host]) > 1:
        return "tpu_pod", {}
    if mode == "on":
        return "auto_detected", {}
    return "single", {}


def initialize_from_environment(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    mode: str = "auto",
) -> str:
    """Joins the cluster the environment describes (see the module docstring); returns its kind."""
    import jax

    kind, kwargs = detect_cluster(
        dict(os.environ), coordinator_address, num_processes, process_id, mode
    )
    if kind != "single":
        jax.distributed.initialize(**kwargs)
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)
    logging.info(
        "%s: process %d of %d, %d local of %d global devices",
        kind,
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return kind


def initialize_from_flags() -> str:
    """`initialize_from_environment` with --coordinator_address, --num_processes, --process_id
    and --distributed."""
    return initialize_from_environment(
        _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _DISTRIBUTED.value
    )
