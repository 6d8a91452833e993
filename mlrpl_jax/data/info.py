"""DataInfo: what every method and the train loop need to know about a dataset's labels.

Its own module so that methods, models and tools can name the type without importing the
grain/TFDS input pipeline (data/pipeline.py), which builds it.
"""

import dataclasses

import numpy as np

from mlrpl_jax.data.datasets import DatasetSpec


@dataclasses.dataclass(frozen=True, eq=False)
class DataInfo:
    """Sizes and label matrices of a dataset, rows in reference ('index') order."""

    spec: DatasetSpec
    num_classes: int
    num_train: int
    num_test: int
    train_complete_labels: np.ndarray  # int8 (N_train, C) in {-1, +1}
    train_partial_labels: np.ndarray  # int8 (N_train, C) in {-1, 0, +1}, by config.data.label_drop
    test_labels: np.ndarray  # int8 (N_test, C) in {-1, +1}
