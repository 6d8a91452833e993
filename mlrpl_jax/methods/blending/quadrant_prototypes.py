"""DSRB's quadrant prototypes ψ (C, 4, D): per (class, peak quadrant) means of the known
positives' semantic features over a prototype pass (docs/methods/dsrb.md §9.3). NumPy only."""

import numpy as np

from mlrpl_jax.class_prototypes import check_feature_batch, classes_without_samples
from mlrpl_jax.methods.blending.blend import NUM_QUADRANTS


class QuadrantPrototypeAccumulator:
    """DSRB quadrant prototypes ψ (C, 4, D) from sums and counts (docs/methods/dsrb.md §9.3).

    Samples arrive in loader order; list (c, q) accepts a known positive only while it holds
    fewer than ``cap`` real samples (the reference's "≤ 100 entries counting one zero
    placeholder"). ψ_{c,q} = Σ s / (n_{cq} + 1) with the reference's placeholder (D9), or
    Σ s / n_{cq} when ``reference_placeholder`` is False; an empty (c, q) takes the mean of all
    collected samples of class c.
    """

    def __init__(
        self, num_classes: int, dim: int, cap: int = 100, reference_placeholder: bool = True
    ) -> None:
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
        check_feature_batch(semantic, quadrants, self.num_classes, self.dim, "quadrants")
        check_feature_batch(semantic, targets, self.num_classes, self.dim, "targets")
        positive = targets == 1  # (b, C)
        if np.any(positive & ((quadrants < 0) | (quadrants >= NUM_QUADRANTS))):
            raise ValueError("quadrants of known positives must lie in 0..3.")
        candidates = positive[..., None] & (
            quadrants[..., None] == np.arange(NUM_QUADRANTS)
        )  # (b, C, 4)
        rank = np.cumsum(candidates, axis=0)  # 1-based position within the batch per (c, q)
        accepted = candidates & (self._counts[None] + rank <= self.cap)  # (b, C, 4)
        self._sums += np.einsum("bcq,bcd->cqd", accepted.astype(np.float64), semantic)
        self._counts += accepted.sum(axis=0)

    def prototypes(self) -> np.ndarray:
        """ψ (C, 4, D) float32; ValueError if a class has no collected known positive."""
        class_counts = self._counts.sum(axis=1)  # (C,)
        missing = classes_without_samples(class_counts)
        if missing:
            raise ValueError(
                f"classes {missing} have no known positive sample in this pass, so they have no "
                "quadrant prototypes; keep the previous prototypes or skip blending for them."
            )
        class_means = self._sums.sum(axis=1) / class_counts[:, None]  # (C, D)
        denominators = (
            self._counts + 1 if self.reference_placeholder else np.maximum(self._counts, 1)
        )
        quadrant_means = self._sums / denominators[..., None]  # (C, 4, D)
        filled = (self._counts > 0)[..., None]
        return np.where(filled, quadrant_means, class_means[:, None]).astype(np.float32)
