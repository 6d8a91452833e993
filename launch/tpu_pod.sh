#!/usr/bin/env bash
# Runs `python -m mlrpl_jax.main` on every worker of a Cloud TPU VM slice (one process per
# host) as one JAX cluster: `--distributed=on` lets JAX find the workers from the TPU VM
# metadata. The repository (with its .venv) must be at REPO_DIR on every worker, the dataset
# readable by every worker, and --workdir on storage all workers share (a gs:// bucket).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh \
#       --config=configs/sst_coco.py --workdir=gs://my-bucket/workdirs/sst_coco \
#       --config.data.data_dir=gs://my-bucket/tensorflow_datasets
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
REPO_DIR=${REPO_DIR:-\~/mlrpl_jax}
PYTHON=${PYTHON:-.venv/bin/python}
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project="$PROJECT"); fi

remote_args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all \
  --command="cd ${REPO_DIR} && ${PYTHON} -m mlrpl_jax.main --distributed=on${remote_args}"
