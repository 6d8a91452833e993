"""Checks of the files a run reads, made when the run starts.

`validate_config` judges a config's keys and values alone (it also passes configs that run
on synthetic input); `check_run_inputs` looks at the files the config names — the ImageNet
backbone and the label embeddings, local or on gs:// (core/storage.py) — and at where the
dataset is, before the dataset is scanned, and stops with the command that produces a missing
or wrong file or stages a dataset that is on gs://. Every method reads the label embeddings:
they are the queries of the semantic decoupling in the network all methods share.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from etils import epath

from mlrpl_jax import config as config_lib
from mlrpl_jax.core import storage
from mlrpl_jax.data import datasets
from mlrpl_jax.models import backbone_weights


def embeddings_command(dataset: str, output: str) -> str:
    """The command that writes the GloVe label embeddings of `dataset` into `output` (.npy)."""
    return (
        f"python -m mlrpl_jax.tools.prepare_embeddings --dataset={dataset} "
        f"--glove=glove.840B.300d.txt --output={output}"
    )


def stage_data_command(remote_dir: str, local_dir: str) -> str:
    """The command that copies a prepared dataset folder from Cloud Storage to local disk
    (launch/tpu_pod.sh runs it on every worker with DATA_FROM)."""
    return f"mkdir -p {local_dir} && gcloud storage rsync --recursive {remote_dir} {local_dir}"


def data_dir(config: ml_collections.ConfigDict) -> str:
    """config.data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return (
        config.data.data_dir
        or os.environ.get("TFDS_DATA_DIR")
        or os.path.expanduser("~/tensorflow_datasets")
    )


def check_run_inputs(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the fix when a backbone or embedding file is missing or wrong,
    or the dataset is on remote storage."""
    check_data_dir(config)
    _check_backbone(config.model, config.data.name)
    _check_embeddings(config.embeddings, config.data.name)


def check_data_dir(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError with the staging command when the dataset is on remote storage (also
    run alone by the acceptance check, which reads the dataset but no weights)."""
    _check_data_dir(data_dir(config), config.data.name)


def _check_data_dir(directory: str, dataset: str) -> None:
    """The TFDS array_record reader opens local files only: a remote data_dir is refused."""
    if not storage.is_remote(directory):
        return
    local_dir = "$HOME/tensorflow_datasets"
    folder = (
        datasets.get_dataset_spec(dataset).tfds_name if dataset in datasets.dataset_names() else ""
    )
    remote, local = (
        (f"{directory.rstrip('/')}/{folder}", f"{local_dir}/{folder}")
        if folder
        else (directory, local_dir)
    )
    raise config_lib.ConfigError(
        f"data_dir {directory!r} is on remote storage, but the prepared dataset's array_record "
        "files are read from local disk only. Copy it to every host's local disk first with: "
        f"{stage_data_command(remote, local)}, then pass --config.data.data_dir={local_dir} "
        "(launch/tpu_pod.sh does both when given DATA_FROM, launch/README.md)."
    )


def _is_paper_dataset(name: str) -> bool:
    return name.split("/")[0] in config_lib.PAPER_DATASETS


def _check_backbone(model: ml_collections.ConfigDict, dataset: str) -> None:
    path = model.pretrained
    suggested = path or f"{model.backbone}{model.depth if model.backbone == 'resnet' else ''}.npz"
    convert = backbone_weights.conversion_command(model.backbone, model.depth, suggested)
    if not path:
        if (
            model.freeze_early_stages
            and _is_paper_dataset(dataset)
            and not model.allow_random_frozen_backbone
        ):
            raise config_lib.ConfigError(
                f"model.pretrained is empty, so the frozen early stages of the backbone would stay "
                f"random for the whole {dataset} run. Convert the ImageNet weights once with: "
                f"{convert}, then pass --config.model.pretrained={suggested}. To train from "
                "scratch instead, unfreeze with --config.model.freeze_early_stages=False, or keep "
                "the random frozen stages on purpose with "
                "--config.model.allow_random_frozen_backbone=True."
            )
        return
    if path == backbone_weights.PYPI_INPUT:
        return
    if not epath.Path(path).is_file():
        raise config_lib.ConfigError(
            f"model.pretrained {path!r} does not exist. Convert the ImageNet weights once with: "
            f"{convert}"
        )
    if not path.endswith(".npz"):
        convert_file = backbone_weights.conversion_command(
            model.backbone, model.depth, "backbone.npz", path
        )
        raise config_lib.ConfigError(
            f"model.pretrained {path!r} is not the .npz that the import tool writes; convert it "
            f"with: {convert_file}"
        )


def _check_embeddings(embeddings: ml_collections.ConfigDict, dataset: str) -> None:
    if embeddings.kind not in ("npy", "glove"):
        return  # 'random' needs no file; an unknown kind is reported by the embedding loader
    output = f"{dataset.replace('/', '_')}_glove300.npy"
    fix = (
        f"Write the dataset's embeddings once with: {embeddings_command(dataset, output)}, "
        f"then pass --config.embeddings.path={output} (or the authors' array of the dataset, "
        "docs/paper_datasets.md); --config.embeddings.kind=random needs no file."
    )
    path = embeddings.path
    if not path:
        raise config_lib.ConfigError(
            f"embeddings.kind={embeddings.kind!r} needs a file but embeddings.path is empty. {fix}"
        )
    if not epath.Path(path).is_file():
        raise config_lib.ConfigError(f"embeddings.path {path!r} does not exist. {fix}")
    if embeddings.kind == "glove":
        return  # its words are looked up when the run builds the embeddings
    try:
        with epath.Path(path).open("rb") as f:
            shape = np.load(f, allow_pickle=False).shape
    except (OSError, ValueError) as error:
        raise config_lib.ConfigError(
            f"embeddings.path {path!r} is not a .npy array ({error}). {fix}"
        ) from None
    expected = (_num_classes(dataset), embeddings.dim)
    if len(shape) != 2 or any(e is not None and s != e for s, e in zip(shape, expected)):
        rows = "C" if expected[0] is None else expected[0]
        raise config_lib.ConfigError(
            f"embeddings.path {path!r} holds an array of shape {shape}, but {dataset} needs "
            f"({rows}, embeddings.dim={embeddings.dim}): one row per class in class-index order. "
            f"Set --config.embeddings.dim if the width is intended; otherwise {fix}"
        )


def _num_classes(dataset: str) -> int | None:
    """The registered dataset's class count, from its spec (no data read); None if unregistered."""
    if dataset not in datasets.dataset_names():
        return None
    return datasets.get_dataset_spec(dataset).num_classes
