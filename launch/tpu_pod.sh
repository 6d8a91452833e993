#!/usr/bin/env bash
# Runs `python -m mlrpl_jax.main` on every worker of a Cloud TPU VM slice (one process per
# host) as one JAX cluster: `--distributed=on` lets JAX find the workers from the TPU VM
# metadata. The repository (with its .venv) must be at REPO_DIR on every worker, and --workdir
# on storage all workers share (a gs:// bucket: checkpoints, metrics and results go there).
# The .venv needs the TPU build of JAX, the [tpu] extra; SETUP=1 installs it on every worker
# first (python3 -m venv .venv && .venv/bin/pip install -e '.[tpu]'; Python >= 3.11).
# The prepared dataset is read from each worker's local disk: DATA_FROM=gs://... (a data_dir on
# Cloud Storage) copies it to DATA_DIR (default $HOME/tensorflow_datasets) on every worker
# first, and passes --config.data.data_dir=DATA_DIR.
# Before training, every worker runs the acceptance check with the same arguments
# (`python -m mlrpl_jax.acceptance`: devices, step time, MFU, input images/s, a verdict in
# <workdir>/acceptance.json); a FAIL verdict stops the job. SKIP_ACCEPTANCE=1 skips it.
#
#   SETUP=1 DATA_FROM=gs://my-bucket/tensorflow_datasets TPU_NAME=my-v4-32 \
#       ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/sst_coco.py --workdir=gs://my-bucket/workdirs/sst_coco
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
REPO_DIR=${REPO_DIR:-\~/mlrpl_jax}
PYTHON=${PYTHON:-.venv/bin/python}
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project="$PROJECT"); fi

SETUP_COMMAND=""
if [[ "${SETUP:-0}" == 1 ]]; then
  SETUP_COMMAND="{ test -x .venv/bin/python || python3 -m venv .venv; } && .venv/bin/pip install --quiet -e '.[tpu]' && "
fi

STAGE_COMMAND=""
DATA_FLAG=""
if [[ -n "${DATA_FROM:-}" ]]; then
  DATA_DIR=${DATA_DIR:-\$HOME/tensorflow_datasets}
  # The command a run given a gs:// data_dir names in its error (mlrpl_jax/core/run_inputs.py).
  STAGE_COMMAND="mkdir -p ${DATA_DIR} && gcloud storage rsync --recursive ${DATA_FROM} ${DATA_DIR}"
  STAGE_COMMAND+=" && "
  DATA_FLAG=" --config.data.data_dir=${DATA_DIR}"
fi

remote_args=$(printf ' %q' "$@")
TRAIN_COMMAND="${PYTHON} -m mlrpl_jax.main --distributed=on${remote_args}${DATA_FLAG}"
ACCEPT_COMMAND=""
if [[ "${SKIP_ACCEPTANCE:-0}" != 1 ]]; then
  ACCEPT_COMMAND="${PYTHON} -m mlrpl_jax.acceptance --distributed=on${remote_args}${DATA_FLAG} && "
fi
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all \
  --command="cd ${REPO_DIR} && ${SETUP_COMMAND}${STAGE_COMMAND}${ACCEPT_COMMAND}${TRAIN_COMMAND}"
