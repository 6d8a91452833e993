"""Synthetic label matrices and batches for benchmarks and tests that need no dataset on disk."""

from __future__ import annotations

import numpy as np

from mlrpl_jax.data.datasets import DatasetSpec
from mlrpl_jax.data.partial_labels import make_partial_labels
from mlrpl_jax.data.pipeline import DataInfo


def _not_preparable(data_dir: str, manual_dir: str | None = None) -> None:
    raise ValueError("the synthetic dataset exists only in memory and cannot be prepared")


def synthetic_data_info(num_classes: int, num_examples: int, known_ratio: float,
                        positive_rate: float = 0.2, seed: int = 0) -> DataInfo:
    """Random complete labels (at least one positive per class) and their seed-0 partial labels."""
    rng = np.random.default_rng(seed)
    complete = np.where(rng.random((num_examples, num_classes)) < positive_rate, 1, -1)
    complete[np.arange(num_classes) % num_examples, np.arange(num_classes)] = 1
    complete = complete.astype(np.int8)
    spec = DatasetSpec(name="synthetic", tfds_name="synthetic",
                       class_names=tuple(f"class_{c}" for c in range(num_classes)),
                       train_split="train", test_split="test", prepare_command="",
                       prepare=_not_preparable)
    return DataInfo(spec=spec, num_classes=num_classes, num_train=num_examples,
                    num_test=num_examples, train_complete_labels=complete,
                    train_partial_labels=make_partial_labels(complete, known_ratio),
                    test_labels=complete)


def synthetic_batch(info: DataInfo, batch_size: int, image_size: int,
                    seed: int) -> dict[str, np.ndarray]:
    """A training batch in the pipeline's format: Gaussian images, rows of the label matrices."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, info.num_train, batch_size)
    return {"image": rng.standard_normal((batch_size, image_size, image_size, 3), dtype=np.float32),
            "labels": info.train_partial_labels[rows].astype(np.float32),
            "complete_labels": info.train_complete_labels[rows].astype(np.float32),
            "index": rows.astype(np.int32), "mask": np.ones(batch_size, np.float32)}
