#!/usr/bin/env bash
# Runs `python -m mlrpl_jax.main` on every worker of a Cloud TPU VM slice (one process per
# host) as one JAX cluster: `--distributed=on` lets JAX find the workers from the TPU VM
# metadata. The repository (with its .venv) must be at REPO_DIR on every worker, the dataset
# readable by every worker, and --workdir on storage all workers share (a gs:// bucket).
# The .venv needs the TPU build of JAX, the [tpu] extra; SETUP=1 installs it on every worker
# first (python3 -m venv .venv && .venv/bin/pip install -e '.[tpu]'; Python >= 3.11).
#
#   SETUP=1 TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/sst_coco.py --workdir=gs://my-bucket/workdirs/sst_coco \
#       --config.data.data_dir=gs://my-bucket/tensorflow_datasets
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

remote_args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all \
  --command="cd ${REPO_DIR} && ${SETUP_COMMAND}${PYTHON} -m mlrpl_jax.main --distributed=on${remote_args}"
