"""Tests of preprocessing and of the grain input pipeline on the tiny digit-scenes build."""

import os

import numpy as np
import pytest
from fixtures_data import TINY_DATASET
from PIL import Image

from mlrpl_jax.data import digit_scenes, preprocessing
from mlrpl_jax.data.partial_labels import (
    make_partial_labels,
    one_positive_labels,
    per_category_labels,
)
from mlrpl_jax.data.pipeline import (
    AUTO_WORKERS,
    MAX_AUTO_WORKERS,
    DatasetNotPreparedError,
    PartialLabelData,
    resolve_num_workers,
)

IMAGE_SIZE = 32
KNOWN_RATIO = 0.3


def _data(data_dir: str, seed: int = 0, num_workers: int = 0) -> PartialLabelData:
    return PartialLabelData(
        dataset=TINY_DATASET,
        data_dir=data_dir,
        image_size=IMAGE_SIZE,
        known_ratio=KNOWN_RATIO,
        seed=seed,
        num_workers=num_workers,
    )


@pytest.fixture(scope="module")
def data(digit_scenes_dir) -> PartialLabelData:  # noqa: F811
    return _data(digit_scenes_dir)


def _assert_batches_equal(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _concat_processes(batches_per_process: list[list[dict]]) -> list[dict]:
    """Global batches from each process's list of local batches."""
    return [
        {key: np.concatenate([local[key] for local in step]) for key in step[0]}
        for step in zip(*batches_per_process)
    ]


# ----------------------------------------------------------------------------- preprocessing


def test_reference_sizes_at_448():
    assert preprocessing.scale_size(448) == 512
    assert preprocessing.crop_sizes(448) == (512, 448, 384, 320, 256)
    assert preprocessing.scale_size(64) == 73
    assert preprocessing.crop_sizes(64) == (73, 64, 55, 46, 37)


def test_train_preprocessing_replays_the_reference_recipe_at_448():
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for seed in range(3):
        out = preprocessing.preprocess_for_train(image, 448, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        crop = (512, 448, 384, 320, 256)[rng.integers(5)]
        top, left = rng.integers(512 - crop + 1), rng.integers(512 - crop + 1)
        expected = Image.fromarray(image).resize((512, 512), Image.Resampling.BICUBIC)
        expected = expected.crop((left, top, left + crop, top + crop))
        expected = np.asarray(expected.resize((448, 448), Image.Resampling.BICUBIC))
        if rng.random() < 0.5:
            expected = expected[:, ::-1]
        expected = (expected / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        assert out.shape == (448, 448, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_preprocessing_shapes_and_ranges():
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    low = (0 - preprocessing.IMAGENET_MEAN) / preprocessing.IMAGENET_STD
    high = (1 - preprocessing.IMAGENET_MEAN) / preprocessing.IMAGENET_STD
    train = preprocessing.preprocess_for_train(image, IMAGE_SIZE, np.random.default_rng(0))
    evaluated = preprocessing.preprocess_for_eval(image, 64)
    assert train.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and train.dtype == np.float32
    for out in (train, evaluated):
        assert np.all(out >= low - 1e-6) and np.all(out <= high + 1e-6)
    np.testing.assert_allclose(evaluated, preprocessing.normalize(image), atol=1e-6)


def test_preprocessing_rejects_non_rgb_images():
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocessing.preprocess_for_eval(np.zeros((8, 8), np.uint8), 8)


# ----------------------------------------------------------------------------- labels


def test_label_matrices_follow_index_order(data):
    info = data.info
    assert (info.num_classes, info.num_train, info.num_test) == (10, 96, 40)
    generated_train = np.stack([x[2] for x in digit_scenes.generate_split("train", 96, 0)])
    generated_test = np.stack([x[2] for x in digit_scenes.generate_split("test", 40, 0)])
    np.testing.assert_array_equal(info.train_complete_labels, generated_train)
    np.testing.assert_array_equal(info.test_labels, generated_test)
    np.testing.assert_array_equal(
        info.train_partial_labels, make_partial_labels(generated_train, KNOWN_RATIO)
    )
    assert info.train_partial_labels.dtype == np.int8
    assert 0 < np.mean(info.train_partial_labels != 0) < 0.6


@pytest.mark.parametrize(
    "label_drop, labels_per_category", [("one_positive", 0), ("per_category", 6)]
)
def test_label_drop_protocol_gives_the_training_labels_of_the_batches(
    digit_scenes_dir, label_drop, labels_per_category
):  # noqa: F811
    data = PartialLabelData(
        dataset=TINY_DATASET,
        data_dir=digit_scenes_dir,
        image_size=IMAGE_SIZE,
        known_ratio=1.0,
        seed=4,
        label_drop=label_drop,
        labels_per_category=labels_per_category,
    )
    complete = data.info.train_complete_labels
    expected = (
        one_positive_labels(complete, 4)
        if label_drop == "one_positive"
        else per_category_labels(complete, labels_per_category, 4)
    )
    np.testing.assert_array_equal(data.info.train_partial_labels, expected)
    for batch in data.train_batches(0, 32):
        np.testing.assert_array_equal(batch["labels"], expected[batch["index"]])
        np.testing.assert_array_equal(batch["complete_labels"], complete[batch["index"]])


def test_a_bad_label_drop_stops_before_the_dataset_is_read(tmp_path):
    # tmp_path holds no dataset: the protocol's error comes first
    with pytest.raises(ValueError, match="set known_ratio=1.0"):
        PartialLabelData(
            dataset=TINY_DATASET,
            data_dir=str(tmp_path),
            image_size=IMAGE_SIZE,
            known_ratio=0.5,
            seed=0,
            label_drop="one_positive",
        )


def test_label_cache_is_written_and_reused(digit_scenes_dir, data):  # noqa: F811
    builder_dir = data._builder_dir
    cache = [builder_dir / f"{split}_labels_by_index.npy" for split in ("train", "test")]
    assert all(path.exists() for path in cache)
    mtimes = [os.stat(path).st_mtime_ns for path in cache]
    again = _data(digit_scenes_dir)
    assert [os.stat(path).st_mtime_ns for path in cache] == mtimes
    np.testing.assert_array_equal(again.info.test_labels, data.info.test_labels)


def test_stale_label_cache_is_rebuilt(digit_scenes_dir, data):  # noqa: F811
    path = data._builder_dir / "test_labels_by_index.npy"
    np.save(path, np.zeros((3, 10), np.int8))
    again = _data(digit_scenes_dir)
    np.testing.assert_array_equal(again.info.test_labels, data.info.test_labels)
    np.testing.assert_array_equal(np.load(path), data.info.test_labels)


# ----------------------------------------------------------------------------- training batches


def test_train_batches_are_deterministic_and_well_formed(digit_scenes_dir, data):  # noqa: F811
    batches = list(data.train_batches(0, 16))
    assert len(batches) == data.steps_per_epoch(16) == 6
    _assert_batches_equal(batches, list(_data(digit_scenes_dir).train_batches(0, 16)))
    batch = batches[0]
    assert batch["image"].shape == (16, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch["image"].dtype == np.float32
    assert batch["index"].dtype == np.int32
    assert {batch[k].dtype for k in ("labels", "complete_labels", "mask")} == {np.dtype(np.float32)}
    indices = np.concatenate([b["index"] for b in batches])
    assert sorted(indices) == list(range(96))
    for b in batches:
        np.testing.assert_array_equal(b["labels"], data.info.train_partial_labels[b["index"]])
        np.testing.assert_array_equal(
            b["complete_labels"], data.info.train_complete_labels[b["index"]]
        )
        np.testing.assert_array_equal(b["mask"], np.ones(16))


def test_epochs_and_seeds_change_the_order(digit_scenes_dir, data):  # noqa: F811
    first = np.concatenate([b["index"] for b in data.train_batches(0, 32)])
    second = np.concatenate([b["index"] for b in data.train_batches(1, 32)])
    other_seed = np.concatenate(
        [b["index"] for b in _data(digit_scenes_dir, seed=1).train_batches(0, 32)]
    )
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, other_seed)


def test_drop_last(data):
    assert data.steps_per_epoch(40) == 2
    assert sum(len(b["index"]) for b in data.train_batches(0, 40)) == 80


def test_resume_with_start_step_equals_tail_of_epoch(data):
    full = list(data.train_batches(3, 16))
    _assert_batches_equal(list(data.train_batches(3, 16, start_step=4)), full[4:])
    assert list(data.train_batches(3, 16, start_step=6)) == []


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_slices_concatenate_to_the_global_batch(data, process_count):
    full = list(data.train_batches(2, 16, start_step=3))
    per_process = [
        list(data.train_batches(2, 16, start_step=3, process_index=p, process_count=process_count))
        for p in range(process_count)
    ]
    assert per_process[0][0]["image"].shape[0] == 16 // process_count
    _assert_batches_equal(_concat_processes(per_process), full)


def test_batch_size_must_divide_by_process_count(data):
    with pytest.raises(ValueError, match="divisible by process_count"):
        data.train_batches(0, 10, process_index=0, process_count=4)


def test_worker_processes_give_identical_batches(digit_scenes_dir, data):  # noqa: F811
    with_workers = _data(digit_scenes_dir, num_workers=1)
    _assert_batches_equal(
        list(with_workers.train_batches(1, 16, start_step=4)),
        list(data.train_batches(1, 16, start_step=4)),
    )


def test_auto_worker_count_is_zero_on_cpu_and_bounded_on_accelerators(monkeypatch):
    assert resolve_num_workers(AUTO_WORKERS, "cpu") == 0
    assert resolve_num_workers(3, "cpu") == 3 and resolve_num_workers(0, "gpu") == 0
    for cores, expected in ((1, 1), (2, 1), (5, 4), (64, MAX_AUTO_WORKERS)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert resolve_num_workers(AUTO_WORKERS, "gpu") == expected
    with pytest.raises(ValueError, match="auto"):
        resolve_num_workers(-2, "tpu")


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_test_example_once(data, process_count):
    assert data.num_eval_batches(16) == 3
    per_process = [
        list(data.eval_batches(16, process_index=p, process_count=process_count))
        for p in range(process_count)
    ]
    batches = _concat_processes(per_process)
    assert len(batches) == 3 and all(b["image"].shape[0] == 16 for b in batches)
    index = np.concatenate([b["index"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(index[mask == 1], np.arange(40))
    np.testing.assert_array_equal(mask, np.r_[np.ones(40), np.zeros(8)])
    padding = batches[-1]
    assert np.all(padding["image"][8:] == 0) and np.all(padding["labels"][8:] == 0)
    assert np.all(padding["index"][8:] == -1)
    for b in batches:
        real = b["mask"] == 1
        np.testing.assert_array_equal(b["labels"][real], data.info.test_labels[b["index"][real]])
        np.testing.assert_array_equal(b["labels"], b["complete_labels"])


def test_eval_images_are_unaugmented_and_repeatable(data):
    first = list(data.eval_batches(16))
    _assert_batches_equal(first, list(data.eval_batches(16)))
    image = digit_scenes.generate_split("test", 1, 0).__next__()[1]
    np.testing.assert_allclose(
        first[0]["image"][0], preprocessing.preprocess_for_eval(image, IMAGE_SIZE), atol=1e-6
    )


def test_eval_on_train_split_uses_partial_labels(data):
    batches = list(data.eval_batches(32, split="train"))
    index = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(index, np.arange(96))
    np.testing.assert_array_equal(
        np.concatenate([b["labels"] for b in batches]), data.info.train_partial_labels
    )


# ----------------------------------------------------------------------------- errors


def test_missing_dataset_error_names_the_prepare_command(tmp_path):
    with pytest.raises(DatasetNotPreparedError) as error:
        _data(str(tmp_path))
    assert isinstance(error.value, FileNotFoundError)
    assert (
        f"python -m mlrpl_jax.data.prepare --dataset=digit_scenes/tiny --data_dir={tmp_path}"
        in str(error.value)
    )


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(
        ValueError,
        match="Valid dataset names: .*digit_scenes, digit_scenes/large, digit_scenes/small, digit_scenes/tiny",
    ):
        PartialLabelData(
            dataset="voc", data_dir=str(tmp_path), image_size=32, known_ratio=0.5, seed=0
        )
