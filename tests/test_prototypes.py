"""Host-side prototypes: per-class K-means (SARB/HST) and DSRB quadrant means against direct oracles."""

import numpy as np
import pytest

from mlrpl_jax.class_prototypes import PositiveFeatureCollector, kmeans_prototypes
from mlrpl_jax.methods.blending.quadrant_prototypes import QuadrantPrototypeAccumulator


def _partial_targets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size=shape)


# ---------------------------------------------------------------------------------------------
# K-means prototypes


def _blob_features(
    rng: np.random.Generator, centres: np.ndarray, per_blob: int
) -> tuple[np.ndarray, np.ndarray]:
    """features (N, C, D) whose positives of class c are tight blobs around centres[c] (C, K, D)."""
    num_classes, num_blobs, dim = centres.shape
    count = num_blobs * per_blob
    features = rng.normal(size=(count, num_classes, dim)).astype(np.float32) * 50.0  # far-off noise
    positives = np.zeros((count, num_classes), bool)
    for c in range(num_classes):
        rows = rng.permutation(count)
        blob = np.repeat(np.arange(num_blobs), per_blob)
        features[rows, c] = centres[c, blob] + 0.01 * rng.normal(size=(count, dim))
        positives[rows, c] = True
    return features, positives


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4, 5)).astype(np.float32) * 10.0  # (C, K, D)
    features, positives = _blob_features(rng, centres, per_blob=6)
    prototypes = kmeans_prototypes(features, positives, num_prototypes=4, seed=1)
    assert prototypes.shape == (3, 4, 5) and prototypes.dtype == np.float32
    for c in range(3):
        distances = np.linalg.norm(prototypes[c][:, None] - centres[c][None], axis=-1)  # (K, K)
        assert np.all(distances.min(axis=1) < 0.05)
        assert sorted(distances.argmin(axis=1).tolist()) == [0, 1, 2, 3]


def test_kmeans_uses_only_known_positives():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(12, 2, 3)).astype(np.float32)
    targets = _partial_targets(rng, (12, 2))
    targets[:2] = 1.0
    collector = PositiveFeatureCollector(2, 3)
    collector.add(features, targets)
    prototypes = collector.kmeans(num_prototypes=1, seed=0)
    for c in range(2):
        class_mean = features[targets[:, c] == 1, c].mean(axis=0)
        np.testing.assert_allclose(prototypes[c, 0], class_mean, rtol=1e-5, atol=1e-6)


def test_collector_streams_batches_in_loader_order():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(20, 3, 4)).astype(np.float32)
    targets = _partial_targets(rng, (20, 3))
    targets[0] = 1.0
    collector = PositiveFeatureCollector(3, 4)
    for start in range(0, 20, 6):
        collector.add(features[start : start + 6], targets[start : start + 6])
    grouped = collector.class_features()
    for c in range(3):
        np.testing.assert_array_equal(grouped[c], features[targets[:, c] == 1, c])
    np.testing.assert_array_equal(collector.counts, (targets == 1).sum(axis=0))
    streamed = collector.kmeans(num_prototypes=2, seed=3)
    np.testing.assert_array_equal(
        streamed, kmeans_prototypes(features, targets == 1, num_prototypes=2, seed=3)
    )
    np.testing.assert_array_equal(streamed, collector.kmeans(num_prototypes=2, seed=3))


def test_kmeans_caps_clusters_at_the_sample_count():
    """A class with n < K positives gets its n samples as centres, repeated cyclically to K slots."""
    rng = np.random.default_rng(4)
    features = rng.normal(size=(6, 2, 3)).astype(np.float32)
    positives = np.zeros((6, 2), bool)
    positives[:, 0] = True
    positives[[1, 4], 1] = True
    prototypes = kmeans_prototypes(features, positives, num_prototypes=3, seed=0)
    rare = prototypes[1]  # (K, D)
    np.testing.assert_array_equal(rare[2], rare[0])
    found = {tuple(np.round(row, 5)) for row in rare}
    assert found == {tuple(np.round(features[i, 1], 5)) for i in (1, 4)}


def test_kmeans_rejects_a_class_without_positives():
    features = np.zeros((4, 3, 2), np.float32)
    positives = np.ones((4, 3), bool)
    positives[:, 1] = False
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        kmeans_prototypes(features, positives, num_prototypes=2, seed=0)


# ---------------------------------------------------------------------------------------------
# DSRB quadrant prototypes


def _reference_quadrant_prototypes(
    batches, num_classes: int, dim: int, cap: int, placeholder: bool
) -> np.ndarray:
    """Direct list implementation of §9.3: per (class, quadrant) a list seeded with a zero vector."""
    lists = [[[np.zeros(dim)] for _ in range(4)] for _ in range(num_classes)]
    for semantic, quadrants, targets in batches:
        for c in range(num_classes):
            for n in range(targets.shape[0]):
                if targets[n, c] != 1:
                    continue
                chosen = lists[c][quadrants[n, c]]
                if len(chosen) <= cap:  # placeholder included
                    chosen.append(semantic[n, c].astype(np.float64))
    prototypes = np.zeros((num_classes, 4, dim))
    for c in range(num_classes):
        real = [sample for q in range(4) for sample in lists[c][q][1:]]
        class_mean = np.mean(real, axis=0)
        for q in range(4):
            entries = lists[c][q] if placeholder else lists[c][q][1:]
            prototypes[c, q] = class_mean if len(lists[c][q]) == 1 else np.mean(entries, axis=0)
    return prototypes


def _random_batches(seed: int, count: int, batch: int, num_classes: int, dim: int):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        semantic = rng.normal(size=(batch, num_classes, dim)).astype(np.float32)
        quadrants = rng.integers(0, 4, size=(batch, num_classes))
        quadrants[:, 2] = rng.integers(0, 2, size=batch)  # class 2 never peaks in quadrants 2, 3
        targets = _partial_targets(rng, (batch, num_classes))
        targets[0] = 1.0
        batches.append((semantic, quadrants, targets))
    return batches


@pytest.mark.parametrize("placeholder", [True, False])
def test_quadrant_prototypes_match_list_procedure(placeholder):
    num_classes, dim, cap = 4, 3, 3
    batches = _random_batches(5, count=6, batch=5, num_classes=num_classes, dim=dim)
    accumulator = QuadrantPrototypeAccumulator(
        num_classes, dim, cap=cap, reference_placeholder=placeholder
    )
    for batch in batches:
        accumulator.add(*batch)
    expected = _reference_quadrant_prototypes(batches, num_classes, dim, cap, placeholder)
    assert accumulator.counts.max() == cap and np.all(accumulator.counts[2, 2:] == 0)
    prototypes = accumulator.prototypes()
    assert prototypes.shape == (num_classes, 4, dim) and prototypes.dtype == np.float32
    np.testing.assert_allclose(prototypes, expected, rtol=1e-6, atol=1e-6)


def test_quadrant_list_keeps_the_first_hundred_in_loader_order():
    rng = np.random.default_rng(6)
    semantic = rng.normal(size=(130, 1, 2)).astype(np.float32)
    accumulator = QuadrantPrototypeAccumulator(1, 2)
    for start in range(0, 130, 8):
        chunk = semantic[start : start + 8]
        accumulator.add(chunk, np.zeros((len(chunk), 1), int), np.ones((len(chunk), 1)))
    np.testing.assert_array_equal(accumulator.counts, [[100, 0, 0, 0]])
    prototypes = accumulator.prototypes()
    first_hundred = semantic[:100, 0].astype(np.float64)
    np.testing.assert_allclose(prototypes[0, 0], first_hundred.sum(axis=0) / 101, rtol=1e-6)
    np.testing.assert_allclose(
        prototypes[0, 1:], np.broadcast_to(first_hundred.mean(axis=0), (3, 2)), rtol=1e-6
    )


def test_single_sample_quadrant_is_halved_by_the_placeholder():
    semantic = np.array([[[2.0, -4.0]]], np.float32)
    accumulator = QuadrantPrototypeAccumulator(1, 2)
    accumulator.add(semantic, np.array([[3]]), np.array([[1.0]]))
    np.testing.assert_array_equal(accumulator.prototypes()[0], [[2.0, -4.0]] * 3 + [[1.0, -2.0]])


def test_quadrant_prototypes_reject_a_class_without_positives():
    accumulator = QuadrantPrototypeAccumulator(3, 2)
    targets = np.array([[1.0, 0.0, 1.0], [-1.0, -1.0, 1.0]])
    accumulator.add(np.ones((2, 3, 2)), np.zeros((2, 3), int), targets)
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        accumulator.prototypes()
