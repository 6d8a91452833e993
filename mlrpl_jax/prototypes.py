"""Host-side class prototypes computed between epochs from an inference-mode training pass.

SARB (and HST) cluster the semantic features of every known positive per class with K-means
(METHODS.md §7.3, §8.3); DSRB averages them per (class, peak quadrant) (§9.3). Both are fed
batch by batch in loader order and keep only what the result needs: the positive rows per
class for K-means, sums and counts for the quadrant means. NumPy and scikit-learn only.
"""
import numpy as np
from sklearn.cluster import KMeans

NUM_QUADRANTS = 4


def _check_batch(semantic: np.ndarray, per_entry: np.ndarray, num_classes: int, dim: int, name: str) -> None:
    if semantic.ndim != 3 or semantic.shape[1:] != (num_classes, dim):
        raise ValueError(f"semantic must have shape (b, {num_classes}, {dim}), got {semantic.shape}.")
    if per_entry.shape != semantic.shape[:2]:
        raise ValueError(f"{name} must have shape {semantic.shape[:2]} (b, C), got {per_entry.shape}.")


def _classes_without_samples(counts: np.ndarray) -> list[int]:
    return [int(c) for c in np.flatnonzero(counts == 0)]


def _class_kmeans(samples: np.ndarray, num_prototypes: int, seed: int, class_index: int) -> np.ndarray:
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
        _check_batch(semantic, targets, self.num_classes, self.dim, "targets")
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
        """Per-class K-means centres Π (C, K, D) float32 (METHODS.md §7.3, §8.3).

        scikit-learn KMeans with the pinned-era defaults (k-means++, n_init = 10, max_iter = 300,
        tol = 1e-4, Lloyd), class c seeded from (seed, c). A class with n < K positives gets
        n clusters whose centres fill the K slots cyclically (clean decision of §12.3; the
        reference fails). A class without any known positive raises ValueError.
        """
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be at least 1, got {num_prototypes}.")
        missing = _classes_without_samples(self.counts)
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


def kmeans_prototypes(features: np.ndarray, positives: np.ndarray, num_prototypes: int, seed: int) -> np.ndarray:
    """Per-class K-means prototypes (C, K, D) of features (N, C, D) at the positives (N, C) (§7.3, §8.3)."""
    features = np.asarray(features, dtype=np.float32)
    collector = PositiveFeatureCollector(features.shape[1], features.shape[2])
    collector.add(features, np.asarray(positives, dtype=bool).astype(np.int8))
    return collector.kmeans(num_prototypes, seed)


class QuadrantPrototypeAccumulator:
    """DSRB quadrant prototypes ψ (C, 4, D) from sums and counts (METHODS.md §9.3).

    Samples arrive in loader order; list (c, q) accepts a known positive only while it holds
    fewer than ``cap`` real samples (the reference's "≤ 100 entries counting one zero
    placeholder"). ψ_{c,q} = Σ s / (n_{cq} + 1) with the reference's placeholder (D9), or
    Σ s / n_{cq} when ``reference_placeholder`` is False; an empty (c, q) takes the mean of all
    collected samples of class c.
    """

    def __init__(self, num_classes: int, dim: int, cap: int = 100, reference_placeholder: bool = True) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}.")
        self.num_classes = num_classes
        self.dim = dim
        self.cap = cap
        self.reference_placeholder = reference_placeholder
        self._sums = np.zeros((num_classes, NUM_QUADRANTS, dim), np.float64)  # (C, 4, D)
        self._counts = np.zeros((num_classes, NUM_QUADRANTS), np.int64)  # (C, 4)

    @property
    def counts(self) -> np.ndarray:
        """Real samples accepted per (class, quadrant) (C, 4)."""
        return self._counts.copy()

    def add(self, semantic: np.ndarray, quadrants: np.ndarray, targets: np.ndarray) -> None:
        """Accumulates s_{n,c} (b, C, D) of the known positives (targets (b, C)) at their quadrants (b, C)."""
        semantic = np.asarray(semantic, dtype=np.float64)
        quadrants = np.asarray(quadrants)
        targets = np.asarray(targets)
        _check_batch(semantic, quadrants, self.num_classes, self.dim, "quadrants")
        _check_batch(semantic, targets, self.num_classes, self.dim, "targets")
        positive = targets == 1  # (b, C)
        if np.any(positive & ((quadrants < 0) | (quadrants >= NUM_QUADRANTS))):
            raise ValueError("quadrants of known positives must lie in 0..3.")
        candidates = positive[..., None] & (quadrants[..., None] == np.arange(NUM_QUADRANTS))  # (b, C, 4)
        rank = np.cumsum(candidates, axis=0)  # 1-based position within the batch per (c, q)
        accepted = candidates & (self._counts[None] + rank <= self.cap)  # (b, C, 4)
        self._sums += np.einsum("bcq,bcd->cqd", accepted.astype(np.float64), semantic)
        self._counts += accepted.sum(axis=0)

    def prototypes(self) -> np.ndarray:
        """ψ (C, 4, D) float32; ValueError if a class has no collected known positive."""
        class_counts = self._counts.sum(axis=1)  # (C,)
        missing = _classes_without_samples(class_counts)
        if missing:
            raise ValueError(
                f"classes {missing} have no known positive sample in this pass, so they have no "
                "quadrant prototypes; keep the previous prototypes or skip blending for them."
            )
        class_means = self._sums.sum(axis=1) / class_counts[:, None]  # (C, D)
        denominators = self._counts + 1 if self.reference_placeholder else np.maximum(self._counts, 1)
        quadrant_means = self._sums / denominators[..., None]  # (C, 4, D)
        filled = (self._counts > 0)[..., None]
        return np.where(filled, quadrant_means, class_means[:, None]).astype(np.float32)
