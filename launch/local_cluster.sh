#!/usr/bin/env bash
# Starts NUM_PROCESSES CPU processes on this machine as one JAX cluster (gloo collectives),
# each with DEVICES_PER_PROCESS simulated devices, all running `python -m mlrpl_jax.main`
# with the given arguments. Process 0 hosts the coordinator on PORT and writes the logs.
# Before training, a cluster of the same processes runs the acceptance check with the same
# arguments (`python -m mlrpl_jax.acceptance`, launch/README.md); SKIP_ACCEPTANCE=1 skips it.
#
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 launch/local_cluster.sh \
#       --config=configs/baseline_digits.py --workdir=workdirs/local_cluster
#
# Exits with the first non-zero exit status of any process; Ctrl-C stops them all.
set -euo pipefail

NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-2}
PYTHON=${PYTHON:-.venv/bin/python}
LOG_DIR=${LOG_DIR:-}

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_all INT TERM

# run_cluster MODULE LOG_PREFIX ARGS...: every process runs `python -m MODULE ARGS...`.
run_cluster() {
  local module=$1 log_prefix=$2
  shift 2
  local port=${PORT:-$("$PYTHON" -c "import portpicker; print(portpicker.pick_unused_port())")}
  pids=()
  for ((process_id = 0; process_id < NUM_PROCESSES; process_id++)); do
    command=(env JAX_PLATFORMS=cpu
             XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"
             "$PYTHON" -m "$module" "$@" --coordinator_address="localhost:${port}"
             --num_processes="$NUM_PROCESSES" --process_id="$process_id")
    if [[ -n "$LOG_DIR" ]]; then
      mkdir -p "$LOG_DIR"
      "${command[@]}" >"$LOG_DIR/${log_prefix}process_${process_id}.log" 2>&1 &
    else
      "${command[@]}" &
    fi
    pids+=("$!")
  done
  local status=0 code
  for pid in "${pids[@]}"; do
    code=0
    wait "$pid" || code=$?
    if [[ $code -ne 0 && $status -eq 0 ]]; then status=$code; stop_all; fi
  done
  return "$status"
}

if [[ "${SKIP_ACCEPTANCE:-0}" != 1 ]]; then
  run_cluster mlrpl_jax.acceptance acceptance_ "$@"
fi
run_cluster mlrpl_jax.main "" "$@"
