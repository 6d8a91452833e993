"""Host-side class prototypes computed between epochs from an inference-mode training pass.

HST and SARB cluster the semantic features of every known positive per class with K-means
(docs/methods/hst.md §7.3, §8.3). Fed batch by batch in loader order, the collector keeps only the
positive rows per class. NumPy and scikit-learn only.
"""

import numpy as np
from sklearn.cluster import KMeans


def check_feature_batch(
    semantic: np.ndarray, per_entry: np.ndarray, num_classes: int, dim: int, name: str
) -> None:
    if semantic.ndim != 3 or semantic.shape[1:] != (num_classes, dim):
        raise ValueError(
            f"semantic must have shape (b, {num_classes}, {dim}), got {semantic.shape}."
        )
    if per_entry.shape != semantic.shape[:2]:
        raise ValueError(
            f"{name} must have shape {semantic.shape[:2]} (b, C), got {per_entry.shape}."
        )


def classes_without_samples(counts: np.ndarray) -> list[int]:
    return [int(c) for c in np.flatnonzero(counts == 0)]


def _class_kmeans(
    samples: np.ndarray, num_prototypes: int, seed: int, class_index: int
) -> np.ndarray:
    """Cluster centres (K, D) of one class; with n < K samples n centres are repeated cyclically."""
    num_clusters = min(num_prototypes, samples.shape[0])
    random_state = int(np.random.SeedSequence([seed, class_index]).generate_state(1)[0])
    kmeans = KMeans(
        n_clusters=num_clusters,
        init="k-means++",
        n_init=10,
        max_iter=300,
        tol=1e-4,
        algorithm="lloyd",
        random_state=random_state,
    ).fit(samples)
    centres = kmeans.cluster_centers_.astype(np.float32)  # (num_clusters, D)
    return centres[np.arange(num_prototypes) % num_clusters]


class PositiveFeatureCollector:
    """Semantic features of the known positives (t = +1) of a training pass, grouped by class.

    Stores only the positive rows, so a pass never holds the dense (N, C, D) array; within a
    class the rows keep loader order.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        self.num_classes = num_classes
        self.dim = dim
        self._features: list[np.ndarray] = []  # chunks (n_i, D)
        self._classes: list[np.ndarray] = []  # chunks (n_i,)

    def add(self, semantic: np.ndarray, targets: np.ndarray) -> None:
        """Appends s_{n,c} (b, C, D) of every entry with t_{n,c} = +1 (targets (b, C))."""
        semantic = np.asarray(semantic, dtype=np.float32)
        targets = np.asarray(targets)
        check_feature_batch(semantic, targets, self.num_classes, self.dim, "targets")
        rows, classes = np.nonzero(targets == 1)  # sample-major, so loader order per class
        self._features.append(semantic[rows, classes])
        self._classes.append(classes)

    @property
    def counts(self) -> np.ndarray:
        """Number of collected positives per class (C,)."""
        classes = np.concatenate(self._classes) if self._classes else np.zeros(0, np.int64)
        return np.bincount(classes, minlength=self.num_classes)

    def class_features(self) -> list[np.ndarray]:
        """Per class the collected features (n_c, D) in loader order."""
        if not self._features:
            return [np.zeros((0, self.dim), np.float32) for _ in range(self.num_classes)]
        features = np.concatenate(self._features)  # (n, D)
        classes = np.concatenate(self._classes)  # (n,)
        order = np.argsort(classes, kind="stable")
        boundaries = np.cumsum(np.bincount(classes, minlength=self.num_classes))[:-1]
        return np.split(features[order], boundaries)

    def kmeans(self, num_prototypes: int, seed: int) -> np.ndarray:
        """Per-class K-means centres Π (C, K, D) float32 (docs/methods/hst.md §7.3, §8.3).

        scikit-learn KMeans with the pinned-era defaults (k-means++, n_init = 10, max_iter = 300,
        tol = 1e-4, Lloyd), class c seeded from (seed, c). A class with n < K positives gets
        n clusters whose centres fill the K slots cyclically (clean decision of §12.3; the
        reference fails). A class without any known positive raises ValueError.
        """
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be at least 1, got {num_prototypes}.")
        missing = classes_without_samples(self.counts)
        if missing:
            raise ValueError(
                f"classes {missing} have no known positive sample in this pass, so they have no "
                "K-means prototypes; keep the previous prototypes or skip blending for them."
            )
        return np.stack(
            [
                _class_kmeans(samples, num_prototypes, seed, class_index)
                for class_index, samples in enumerate(self.class_features())
            ]
        )


def kmeans_prototypes(
    features: np.ndarray, positives: np.ndarray, num_prototypes: int, seed: int
) -> np.ndarray:
    """Per-class K-means prototypes (C, K, D) of features (N, C, D) at the positives (N, C) (§7.3, §8.3)."""
    features = np.asarray(features, dtype=np.float32)
    collector = PositiveFeatureCollector(features.shape[1], features.shape[2])
    collector.add(features, np.asarray(positives, dtype=bool).astype(np.int8))
    return collector.kmeans(num_prototypes, seed)
