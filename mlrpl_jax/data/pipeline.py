"""Input pipeline: prepared TFDS dataset -> grain -> numpy batches (docs/methods/problem_and_data.md §1.2, §2.4, §2.5).

Every example carries its position in the split's reference order ('index'); TFDS may store
records in another order, so all label matrices here are indexed by 'index' and the
partial-label mask row of an image is its 'index' (docs/methods/problem_and_data.md §1.2).

Determinism: epoch e's training order is a permutation that depends only on (seed, e); the
augmentation of the example at position k of that order depends only on (seed, e, k). Batches
are therefore identical whatever the number of processes or loader workers, and a run resumed
at `start_step` sees exactly the batches an uninterrupted run would have seen.

Label cache: reading every record once to collect labels is slow for big datasets (COCO
images are 13 GB), so the index-ordered labels and the record position of each index are
saved next to the dataset files on first use (`<split>_labels_by_index.npy`,
`<split>_record_of_index.npy`; written to a temporary name, then renamed) and reused.
"""
import dataclasses
import io
import json
import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging
from etils import epath
from PIL import Image

from mlrpl_jax.data import preprocessing
from mlrpl_jax.data.builder_common import CorruptImageError
from mlrpl_jax.data.datasets import DatasetSpec, get_dataset_spec
from mlrpl_jax.data.info import DataInfo
from mlrpl_jax.data.partial_labels import check_label_drop, drop_labels

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1
_THREADS_IN_PROCESS = 2
_PREFETCH_BATCHES = 4
AUTO_WORKERS = -1
MAX_AUTO_WORKERS = 8


class DatasetNotPreparedError(FileNotFoundError):
    """The requested dataset has not been built in data_dir."""


def find_builder_dir(spec: DatasetSpec, data_dir: str) -> epath.Path:
    """`<data_dir>/<tfds_name>/<latest version>`, or DatasetNotPreparedError."""
    dataset_dir = epath.Path(data_dir) / spec.tfds_name
    versions = []
    if dataset_dir.is_dir():
        for child in dataset_dir.iterdir():
            if (child / "dataset_info.json").exists():
                try:
                    versions.append(tfds.core.Version(child.name))
                except ValueError:
                    continue
    if not versions:
        layout = f" The raw data it reads is laid out as:\n{spec.raw_layout}" if spec.raw_layout else ""
        raise DatasetNotPreparedError(
            f"Dataset {spec.name!r} is not prepared in data_dir {data_dir!r} (no "
            f"{dataset_dir}/<version>/dataset_info.json). Build it once with: "
            f"{spec.prepare_command_for(data_dir)}{layout}"
        )
    return dataset_dir / str(max(versions))


def with_prepared_class_names(spec: DatasetSpec, builder_dir: epath.Path) -> DatasetSpec:
    """spec with the class names stored in the prepared dataset's metadata, when it has C of them.

    Builders that choose their categories at build time (vg200) record them only there.
    """
    metadata_path = builder_dir / "metadata.json"
    if not metadata_path.exists():
        return spec
    names = json.loads(metadata_path.read_text()).get("class_names")
    if not names or len(names) != spec.num_classes or tuple(names) == spec.class_names:
        return spec
    return dataclasses.replace(spec, class_names=tuple(names))


def _open_split(builder_dir: epath.Path, split: str) -> Any:
    """Random-access TFDS source of a split, image bytes left encoded."""
    builder = tfds.builder_from_directory(builder_dir)
    return builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})


def _save_npy_atomically(path: epath.Path, array: np.ndarray) -> None:
    tmp = path.parent / f"{path.name}.tmp-{uuid.uuid4().hex}"  # unique: hosts may share data_dir
    try:
        with tmp.open("wb") as f:
            np.save(f, array)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_npy(path: epath.Path) -> np.ndarray:
    with path.open("rb") as f:
        return np.load(f)


def read_split_labels(
    builder_dir: epath.Path, split: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(labels int8 (N, C), record_of_index int64 (N,)), both in reference order, cached.

    record_of_index[i] is the position in the TFDS source of the example whose 'index' is i.
    """
    labels_path = builder_dir / f"{split}_labels_by_index.npy"
    records_path = builder_dir / f"{split}_record_of_index.npy"
    source = _open_split(builder_dir, split)
    num_examples = len(source)
    if labels_path.exists() and records_path.exists():
        labels, record_of_index = _load_npy(labels_path), _load_npy(records_path)
        if labels.shape == (num_examples, num_classes) and record_of_index.shape == (num_examples,):
            return labels, record_of_index
        logging.warning("Stale label cache in %s; rebuilding it.", builder_dir)

    indices = np.empty(num_examples, dtype=np.int64)
    labels_in_record_order = np.empty((num_examples, num_classes), dtype=np.int8)
    for record, example in enumerate(source):
        indices[record] = example["index"]
        labels_in_record_order[record] = example["labels"]
    if not np.array_equal(np.sort(indices), np.arange(num_examples)):
        raise ValueError(
            f"The 'index' feature of split {split!r} in {builder_dir} is not a permutation of "
            f"0..{num_examples - 1}; the dataset is corrupt, delete it and prepare it again."
        )
    record_of_index = np.empty(num_examples, dtype=np.int64)
    record_of_index[indices] = np.arange(num_examples)
    labels = labels_in_record_order[record_of_index]
    try:
        _save_npy_atomically(labels_path, labels)
        _save_npy_atomically(records_path, record_of_index)
    except OSError as error:
        logging.warning("Could not cache labels in %s (%s); continuing.", builder_dir, error)
    return labels, record_of_index


def decode_image(encoded: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W, 3) RGB."""
    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"))


def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """Int64 (N,): reference indices in epoch `epoch`'s training order; depends on (seed, epoch)."""
    return np.random.default_rng([_ORDER_STREAM, seed, epoch]).permutation(num_examples)


def augmentation_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """Generator for the example at `position` of epoch `epoch`'s order."""
    return np.random.default_rng([_AUGMENT_STREAM, seed, epoch, position])


@dataclasses.dataclass
class _ExampleLoader:
    """Maps a process-local slot to one example dict; re-opens its source after pickling.

    Slot k of process p is row j = k % b of global batch s = k // b, i.e. position
    s * B + p * b + j of the (padded) split order, b = B / P.
    """

    builder_dir: str
    split: str
    order: np.ndarray  # int64 (N,): reference index at each position
    record_of_index: np.ndarray  # int64 (N,)
    labels: np.ndarray  # int8 (N, C): labels the method may see
    complete_labels: np.ndarray  # int8 (N, C)
    image_size: int
    global_batch_size: int
    local_batch_size: int
    process_index: int
    augment: bool
    seed: int
    augmentation: str
    epoch: int
    # float32 (N, h, w, F) backbone maps in reference order served as 'image' instead of the
    # decoded pixels (core/feature_cache.py), or None
    feature_maps: np.ndarray | None = None
    _source: Any = dataclasses.field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    def position(self, slot: int) -> int:
        step, row = divmod(slot, self.local_batch_size)
        return step * self.global_batch_size + self.process_index * self.local_batch_size + row

    def __call__(self, slot: int) -> dict[str, np.ndarray]:
        position = self.position(slot)
        if position >= len(self.order):
            return self._padding()
        if self.feature_maps is not None:
            index = int(self.order[position])
            return self._example(np.asarray(self.feature_maps[index]), index)
        if self._source is None:
            self._source = _open_split(epath.Path(self.builder_dir), self.split)
        index = int(self.order[position])
        record = self._source[int(self.record_of_index[index])]
        if int(record["index"]) != index:
            raise ValueError(
                f"Record {self.record_of_index[index]} of {self.builder_dir}/{self.split} has "
                f"index {record['index']}, expected {index}: the label cache is stale; delete "
                f"the *_labels_by_index.npy and *_record_of_index.npy files there."
            )
        try:
            image = decode_image(record["image"])
        except (OSError, ValueError) as error:
            image_id = record["image_id"]
            raise CorruptImageError(
                f"Cannot decode the image of record {self.record_of_index[index]} (image_id "
                f"{image_id.decode() if isinstance(image_id, bytes) else image_id!r}, index {index}) "
                f"of {self.builder_dir}/{self.split}: {error}. The prepared dataset is damaged; "
                "delete it and prepare it again."
            ) from None
        if self.augment:
            rng = augmentation_rng(self.seed, self.epoch, position)
            pixels = preprocessing.preprocess_train_example(image, self.image_size,
                                                            self.augmentation, rng)
        else:
            pixels = preprocessing.preprocess_for_eval(image, self.image_size)
        return self._example(pixels, index)

    def _example(self, image: np.ndarray, index: int) -> dict[str, np.ndarray]:
        return {
            "image": image,
            "labels": self.labels[index].astype(np.float32),
            "complete_labels": self.complete_labels[index].astype(np.float32),
            "index": np.int32(index),
            "mask": np.float32(1.0),
        }

    def _padding(self) -> dict[str, np.ndarray]:
        num_classes = self.labels.shape[1]
        if self.feature_maps is not None:
            shape = self.feature_maps.shape[1:]
        else:
            shape = (self.image_size, self.image_size, 3)
        return {
            "image": np.zeros(shape, np.float32),
            "labels": np.zeros(num_classes, np.float32),
            "complete_labels": np.zeros(num_classes, np.float32),
            "index": np.int32(-1),
            "mask": np.float32(0.0),
        }


def resolve_num_workers(num_workers: int, platform: str) -> int:
    """config.data.num_workers with AUTO_WORKERS (-1) resolved for the JAX `platform`.

    Auto: 0 on 'cpu', where loader processes would take the cores the step computes on;
    on accelerators one worker per host core this process may use but one (kept for the main
    process), at most MAX_AUTO_WORKERS: a 448-px training image costs ~13 ms of CPU, so a
    0.1 s step at batch 32 needs ~4 loader cores (docs/dry_run.md).
    """
    if num_workers == AUTO_WORKERS:
        if platform == "cpu":
            return 0
        return max(1, min(len(os.sched_getaffinity(0)) - 1, MAX_AUTO_WORKERS))
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0 = load in-process) or {AUTO_WORKERS} (auto), "
                         f"got {num_workers}.")
    return num_workers


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index must be in [0, process_count); got process_index={process_index}, "
            f"process_count={process_count}."
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size ({global_batch_size}) must be divisible by process_count "
            f"({process_count}); choose a batch size that is a multiple of {process_count}."
        )
    return global_batch_size // process_count


def _close_when_done(dataset: grain.IterDataset) -> Iterator[dict]:
    iterator = iter(dataset)
    try:
        yield from iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


class PartialLabelData:
    """Training and evaluation batches of a prepared dataset with partial training labels.

    Batches are dicts of numpy arrays: 'image' float32 (b, S, S, 3), or the cached backbone
    maps (b, h, w, F) after `use_feature_maps`; 'labels' float32 (b, C)
    (partial on the train split, complete on the test split); 'complete_labels' float32 (b, C);
    'index' int32 (b,) (reference index, -1 for padding); 'mask' float32 (b,) (0 = padding).
    Training images are augmented by `augmentation` (preprocessing.TRAIN_AUGMENTATIONS). The
    partial training labels come from the `label_drop` protocol (partial_labels.py,
    docs/methods/problem_and_data.md §1.3), seeded by `seed` except for 'elementwise'.
    """

    def __init__(
        self,
        *,
        dataset: str,
        data_dir: str,
        image_size: int,
        known_ratio: float,
        seed: int,
        num_workers: int = 0,
        augmentation: str = "reference",
        label_drop: str = "elementwise",
        labels_per_category: int = 0,
    ):
        if image_size <= 0:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}.")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = load in-process), got {num_workers}.")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}.")
        if augmentation not in preprocessing.TRAIN_AUGMENTATIONS:
            raise ValueError(f"Unknown training augmentation {augmentation!r}; valid: "
                             f"{', '.join(preprocessing.TRAIN_AUGMENTATIONS)}.")
        check_label_drop(label_drop, known_ratio, labels_per_category)
        spec = get_dataset_spec(dataset)
        self._builder_dir = find_builder_dir(spec, data_dir)
        spec = with_prepared_class_names(spec, self._builder_dir)
        self._image_size = image_size
        self._seed = seed
        self._num_workers = num_workers
        self._augmentation = augmentation
        self._feature_maps: dict[str, np.ndarray] = {}
        train_labels, self._train_records = read_split_labels(
            self._builder_dir, spec.train_split, spec.num_classes
        )
        test_labels, self._test_records = read_split_labels(
            self._builder_dir, spec.test_split, spec.num_classes
        )
        self.info = DataInfo(
            spec=spec,
            num_classes=spec.num_classes,
            num_train=len(train_labels),
            num_test=len(test_labels),
            train_complete_labels=train_labels,
            train_partial_labels=drop_labels(train_labels, label_drop, known_ratio=known_ratio,
                                             labels_per_category=labels_per_category, seed=seed),
            test_labels=test_labels,
        )

    @property
    def builder_dir(self) -> epath.Path:
        """Folder of the prepared dataset's version."""
        return self._builder_dir

    def use_feature_maps(self, maps: dict[str, np.ndarray]) -> None:
        """Serve `maps` ({'train', 'test'}: float32 (N, h, w, F) in reference order, from
        core/feature_cache.py) as the batches' 'image' from now on, unaugmented."""
        for split, num in (("train", self.info.num_train), ("test", self.info.num_test)):
            if len(maps[split]) != num:
                raise ValueError(f"{split} feature maps have {len(maps[split])} rows, the split "
                                 f"has {num} examples")
        self._feature_maps = dict(maps)

    def steps_per_epoch(self, global_batch_size: int) -> int:
        """Number of full global batches per epoch (the last partial one is dropped, §2.4)."""
        _local_batch_size(global_batch_size, 0, 1)
        return self.info.num_train // global_batch_size

    def num_eval_batches(self, global_batch_size: int, split: str = "test") -> int:
        """Global batches covering every example of `split` once (the last one padded)."""
        _local_batch_size(global_batch_size, 0, 1)
        return math.ceil(len(self._split_labels(split)[1]) / global_batch_size)

    def train_batches(
        self,
        epoch: int,
        global_batch_size: int,
        *,
        start_step: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[dict]:
        """This process's rows of epoch `epoch`'s global batches, from step `start_step` on."""
        local = _local_batch_size(global_batch_size, process_index, process_count)
        num_steps = self.steps_per_epoch(global_batch_size)
        if num_steps == 0:
            raise ValueError(
                f"global_batch_size {global_batch_size} exceeds the {self.info.num_train} "
                f"training examples; use a smaller batch."
            )
        if not 0 <= start_step <= num_steps:
            raise ValueError(f"start_step must be in [0, {num_steps}], got {start_step}.")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        loader = _ExampleLoader(
            builder_dir=str(self._builder_dir),
            split=self.info.spec.train_split,
            order=epoch_order(self._seed, epoch, self.info.num_train),
            record_of_index=self._train_records,
            labels=self.info.train_partial_labels,
            complete_labels=self.info.train_complete_labels,
            image_size=self._image_size,
            global_batch_size=global_batch_size,
            local_batch_size=local,
            process_index=process_index,
            augment=True,
            seed=self._seed,
            augmentation=self._augmentation,
            epoch=epoch,
            feature_maps=self._feature_maps.get("train"),
        )
        return self._batches(loader, start_step * local, num_steps * local)

    def eval_batches(
        self,
        global_batch_size: int,
        *,
        split: str = "test",
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[dict]:
        """This process's rows of `split` in reference order, unaugmented, last batch padded."""
        local = _local_batch_size(global_batch_size, process_index, process_count)
        labels, complete_labels, records = self._split_labels(split)
        loader = _ExampleLoader(
            builder_dir=str(self._builder_dir),
            split=self.info.spec.train_split if split == "train" else self.info.spec.test_split,
            order=np.arange(len(records)),
            record_of_index=records,
            labels=labels,
            complete_labels=complete_labels,
            image_size=self._image_size,
            global_batch_size=global_batch_size,
            local_batch_size=local,
            process_index=process_index,
            augment=False,
            seed=self._seed,
            augmentation=self._augmentation,
            epoch=0,
            feature_maps=self._feature_maps.get(split),
        )
        return self._batches(loader, 0, self.num_eval_batches(global_batch_size, split) * local)

    def _split_labels(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels a method may see, complete labels, record_of_index) of 'train' or 'test'."""
        if split == "train":
            info = self.info
            return info.train_partial_labels, info.train_complete_labels, self._train_records
        if split == "test":
            return self.info.test_labels, self.info.test_labels, self._test_records
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")

    def _batches(self, loader: _ExampleLoader, first_slot: int, end_slot: int) -> Iterator[dict]:
        dataset = (
            grain.MapDataset.range(first_slot, end_slot)
            .map(loader)
            .batch(loader.local_batch_size, drop_remainder=True)
            .to_iter_dataset(
                grain.ReadOptions(
                    num_threads=_THREADS_IN_PROCESS, prefetch_buffer_size=_PREFETCH_BATCHES
                )
            )
        )
        if self._num_workers > 0:
            if not flags.FLAGS.is_parsed():
                # grain reads its absl flags when starting workers; outside absl.app.run (e.g.
                # tests, notebooks) accept their defaults.
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=self._num_workers, per_worker_buffer_size=_PREFETCH_BATCHES
                )
            )
        return _close_when_done(dataset)
