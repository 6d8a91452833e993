"""Tests of the digit-scenes TFDS builder and the dataset registry."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from fixtures_data import TINY_DATASET
from sklearn.datasets import load_digits

from mlrpl_jax.data import digit_scenes
from mlrpl_jax.data.datasets import dataset_names, get_dataset_spec
from mlrpl_jax.data.pipeline import find_builder_dir

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records_by_index(data_dir: str, split: str) -> list[dict]:
    """All records of a split of the tiny build, decoded, sorted by 'index'."""
    builder_dir = find_builder_dir(get_dataset_spec(TINY_DATASET), data_dir)
    source = tfds.builder_from_directory(builder_dir).as_data_source(split)
    return sorted(source, key=lambda example: int(example["index"]))


@pytest.fixture(scope="module")
def tiny_labels(digit_scenes_dir) -> dict[str, np.ndarray]:  # noqa: F811
    return {
        split: np.stack([r["labels"] for r in _records_by_index(digit_scenes_dir, split)])
        for split in ("train", "test")
    }


def test_tiny_build_has_configured_sizes_and_features(digit_scenes_dir):  # noqa: F811
    builder_dir = find_builder_dir(get_dataset_spec(TINY_DATASET), digit_scenes_dir)
    builder = tfds.builder_from_directory(builder_dir)
    assert builder.info.splits["train"].num_examples == 96
    assert builder.info.splits["test"].num_examples == 40
    assert builder.info.metadata["class_names"] == list(digit_scenes.CLASS_NAMES)
    example = builder.as_data_source("train")[0]
    assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
    assert example["labels"].shape == (10,) and example["labels"].dtype == np.int8
    assert set(np.unique(example["labels"])) <= {-1, 1}


def test_records_are_in_index_order_and_match_the_generator(digit_scenes_dir):  # noqa: F811
    for split, size in (("train", 96), ("test", 40)):
        records = _records_by_index(digit_scenes_dir, split)
        assert [int(r["index"]) for r in records] == list(range(size))
        generated = list(digit_scenes.generate_split(split, size, seed=0))
        for record, (index, image, labels, _) in zip(records, generated):
            assert record["image_id"].decode() == f"{split}_{index:05d}"
            np.testing.assert_array_equal(record["labels"], labels)
            np.testing.assert_array_equal(record["image"], image)  # PNG is lossless


def test_cli_build_is_identical_to_fixture_build(digit_scenes_dir, tmp_path):  # noqa: F811
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlrpl_jax.data.prepare",
            f"--dataset={TINY_DATASET}",
            f"--data_dir={tmp_path}",
        ],
        cwd=_ROOT,
        check=True,
        capture_output=True,
    )
    for split in ("train", "test"):
        first = _records_by_index(digit_scenes_dir, split)
        second = _records_by_index(str(tmp_path), split)
        assert len(first) == len(second)
        for a, b in zip(first, second):
            assert a["image_id"] == b["image_id"]
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["labels"], b["labels"])


def test_digit_instances_are_split_disjointly_and_stratified():
    targets = load_digits().target
    pools = digit_scenes.split_digit_instances(targets, seed=0)
    train, test = np.concatenate(pools["train"]), np.concatenate(pools["test"])
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(targets) == 1797
    for digit in range(10):
        assert np.all(targets[pools["train"][digit]] == digit)
        assert np.all(targets[pools["test"][digit]] == digit)
        fraction = len(pools["train"][digit]) / np.sum(targets == digit)
        assert abs(fraction - 0.75) < 0.01


def test_scenes_use_only_their_split_instances():
    pools = digit_scenes.split_digit_instances(load_digits().target, seed=0)
    for split in ("train", "test"):
        allowed = set(np.concatenate(pools[split]))
        for _, _, labels, instances in digit_scenes.generate_split(split, 60, seed=0):
            assert set(instances) <= allowed
            assert len(instances) == np.sum(labels == 1)


def test_label_statistics(tiny_labels):
    for split, labels in tiny_labels.items():
        cardinality = np.sum(labels == 1, axis=1)
        assert set(cardinality) == {1, 2, 3, 4}, split
        assert np.all(np.sum(labels == 1, axis=0) > 0), f"a class has no positive in {split}"


def test_cooccurrence_is_structured():
    labels = np.stack([x[2] for x in digit_scenes.generate_split("train", 600, seed=0)]) == 1
    counts = labels.T.astype(np.int64) @ labels  # (C, C)
    pairs = np.array([counts[i, j] for i, j in itertools.combinations(range(10), 2)])  # (45,)
    # Core pairs of a topic, e.g. (two, three), are far more frequent than cross-topic pairs.
    assert counts[2, 3] > 5 * counts[3, 9]
    assert pairs.max() > 5 * max(pairs.min(), 1)


def test_tiny_is_a_prefix_of_default():
    tiny = digit_scenes.DigitScenes.builder_configs["tiny"]
    default = digit_scenes.DigitScenes.builder_configs["default"]
    assert (tiny.seed, tiny.num_train, tiny.num_test) == (0, 96, 40)
    assert (default.seed, default.num_train, default.num_test) == (0, 5000, 1500)
    short = list(digit_scenes.generate_split("test", 8, seed=0))
    longer = list(digit_scenes.generate_split("test", 12, seed=0))[:8]
    for a, b in zip(short, longer):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])


def test_registry():
    assert {"digit_scenes", "digit_scenes/small", "digit_scenes/tiny"} <= set(dataset_names())
    spec = get_dataset_spec("digit_scenes")
    assert spec.tfds_name == "digit_scenes/default"
    assert spec.class_names[0] == "zero" and spec.num_classes == 10
    assert spec.prepare_command_for("/d") == (
        "python -m mlrpl_jax.data.prepare --dataset=digit_scenes --data_dir=/d"
    )
    with pytest.raises(
        ValueError, match="digit_scenes, digit_scenes/large, digit_scenes/small, digit_scenes/tiny"
    ):
        get_dataset_spec("coco_2014")
