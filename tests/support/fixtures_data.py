"""Shared data fixtures; tests/conftest.py makes `digit_scenes_dir` available to every test."""

import pytest
import tensorflow_datasets as tfds

from mlrpl_jax.data.datasets import prepare_dataset

TINY_DATASET = "digit_scenes/tiny"


def prepared_data_dir(tmp_path_factory: pytest.TempPathFactory, dataset: str) -> str:
    """A fresh data_dir with `dataset` prepared in it (offline, seconds for the digit scenes)."""
    data_dir = tmp_path_factory.mktemp("tfds_data")
    tfds.display_progress_bar(False)
    prepare_dataset(dataset, str(data_dir))
    return str(data_dir)


@pytest.fixture(scope="session")
def digit_scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """data_dir holding the 'tiny' digit-scenes build (96 train / 40 test), built once per session."""
    return prepared_data_dir(tmp_path_factory, TINY_DATASET)
