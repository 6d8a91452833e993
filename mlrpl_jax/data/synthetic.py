"""Synthetic label matrices and batches for the dry run, benchmarks and tests: no dataset on disk."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mlrpl_jax.data.datasets import DatasetSpec
from mlrpl_jax.data.info import DataInfo
from mlrpl_jax.data.partial_labels import drop_labels


def _not_preparable(data_dir: str, manual_dir: str | None = None) -> None:
    raise ValueError("the synthetic dataset exists only in memory and cannot be prepared")


def synthetic_data_info(num_classes: int, num_examples: int, known_ratio: float,
                        positive_rate: float = 0.2, seed: int = 0,
                        every_class_known: bool = False, label_drop: str = "elementwise",
                        labels_per_category: int = 0) -> DataInfo:
    """Random complete labels (at least one positive per class) and their partial labels by the
    `label_drop` protocol (data/partial_labels.py; 'elementwise' is the seed-0 mask).

    every_class_known: that guaranteed positive of each class is also known, as host passes
    that compute per-class prototypes need.
    """
    rng = np.random.default_rng(seed)
    complete = np.where(rng.random((num_examples, num_classes)) < positive_rate, 1, -1)
    guaranteed = (np.arange(num_classes) % num_examples, np.arange(num_classes))
    complete[guaranteed] = 1
    complete = complete.astype(np.int8)
    partial = drop_labels(complete, label_drop, known_ratio=known_ratio,
                          labels_per_category=labels_per_category, seed=seed)
    if every_class_known:
        partial[guaranteed] = 1
    spec = DatasetSpec(name="synthetic", tfds_name="synthetic",
                       class_names=tuple(f"class_{c}" for c in range(num_classes)),
                       train_split="train", test_split="test", prepare_command="",
                       prepare=_not_preparable)
    return DataInfo(spec=spec, num_classes=num_classes, num_train=num_examples,
                    num_test=num_examples, train_complete_labels=complete,
                    train_partial_labels=partial, test_labels=complete)


def batch_of_rows(info: DataInfo, rows: np.ndarray, image_size: int,
                  rng: np.random.Generator, input_shape: tuple[int, ...] | None = None
                  ) -> dict[str, np.ndarray]:
    """Gaussian inputs of `input_shape` per row (default: an image_size² RGB image) and the
    rows' labels."""
    shape = input_shape or (image_size, image_size, 3)
    return {"image": rng.standard_normal((len(rows), *shape), dtype=np.float32),
            "labels": info.train_partial_labels[rows].astype(np.float32),
            "complete_labels": info.train_complete_labels[rows].astype(np.float32),
            "index": rows.astype(np.int32), "mask": np.ones(len(rows), np.float32)}


class SyntheticData:
    """In-memory stand-in for PartialLabelData's training side (`info`, `train_batches`, and
    `eval_batches` of the training split).

    An epoch visits the info.num_train rows once, in order, with Gaussian images, so a host
    pass (e.g. prototypes) sees every row, and with `every_class_known` every class.
    """

    def __init__(self, info: DataInfo, image_size: int,
                 input_shape: tuple[int, ...] | None = None):
        self.info = info
        self.image_size = image_size
        self.input_shape = input_shape  # of one model input; None: an image_size² RGB image

    def train_batches(self, epoch: int, global_batch_size: int, *, start_step: int = 0,
                      process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
        """This process's rows of the epoch's global batches, from step `start_step` on."""
        local = global_batch_size // process_count
        for step in range(start_step, self.info.num_train // global_batch_size):
            first = step * global_batch_size + process_index * local
            yield batch_of_rows(self.info, np.arange(first, first + local), self.image_size,
                                np.random.default_rng([epoch, step, process_index]),
                                self.input_shape)

    def eval_batches(self, global_batch_size: int, *, split: str = "train", process_index: int = 0,
                     process_count: int = 1) -> Iterator[dict]:
        """This process's rows of every training row once, in order, the last global batch
        padded (index -1, mask 0), as PartialLabelData.eval_batches(split='train') yields them."""
        if split != "train":
            raise ValueError(f"synthetic data has only its training rows, got split={split!r}")
        local = global_batch_size // process_count
        for step in range(-(-self.info.num_train // global_batch_size)):
            first = step * global_batch_size + process_index * local
            rows = np.arange(first, first + local)
            batch = batch_of_rows(self.info, np.minimum(rows, self.info.num_train - 1),
                                  self.image_size, np.random.default_rng([step, process_index]),
                                  self.input_shape)
            padding = rows >= self.info.num_train
            batch["index"][padding] = -1
            batch["mask"][padding] = 0.0
            yield batch
