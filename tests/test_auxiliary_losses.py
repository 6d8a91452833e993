"""Pair asymmetric focal loss (docs/methods/losses.md §5.2) and cross-image contrastive loss (§5.3, §13 items 11-12)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cosine_oracle import cosine_similarity

from mlrpl_jax.contrastive import (
    contrastive_categories,
    contrastive_loss,
    contrastive_loss_with_priorities,
    contrastive_terms_and_weights,
    image_pair_cosines,
)
from mlrpl_jax.methods.semantic_transfer.cooccurrence_loss import (
    pair_asymmetric_loss,
    pair_asymmetric_loss_elementwise,
    pair_positive_targets,
)
from mlrpl_jax.pairs import num_pairs, pair_indices


def test_pair_targets_are_both_known_positive(vectors):
    targets = vectors("intra_asymmetric_loss")["target"]
    first, second = pair_indices(6)
    expected = ((targets[:, first] == 1) & (targets[:, second] == 1)).astype(np.float32)
    np.testing.assert_array_equal(pair_positive_targets(jnp.asarray(targets)), expected)
    assert expected.sum() > 0 and (expected == 0).any()


@pytest.mark.parametrize("gamma_neg", [2, 4])
def test_pair_asymmetric_loss_matches_reference(vectors, gamma_neg):
    v = vectors("intra_asymmetric_loss")
    logits, targets = jnp.asarray(v["input"]), jnp.asarray(v["target"])
    suffix = f"gneg{gamma_neg}_gpos1"
    hyper = dict(gamma_neg=float(gamma_neg), gamma_pos=1.0, clip=0.05, eps=1e-8)
    elementwise = pair_asymmetric_loss_elementwise(logits, targets, **hyper)
    np.testing.assert_allclose(elementwise, v[f"loss_elem_{suffix}"], rtol=1e-5, atol=1e-6)

    mean, grad_mean = jax.value_and_grad(lambda x: pair_asymmetric_loss(x, targets, **hyper))(
        logits
    )
    np.testing.assert_allclose(mean, v[f"loss_mean_{suffix}"], rtol=1e-5)
    np.testing.assert_allclose(grad_mean, v[f"grad_mean_{suffix}"], rtol=1e-5, atol=1e-7)

    total, grad_sum = jax.value_and_grad(
        lambda x: jnp.sum(pair_asymmetric_loss_elementwise(x, targets, **hyper))
    )(logits)
    np.testing.assert_allclose(total, v[f"loss_sum_{suffix}"], rtol=1e-5)
    np.testing.assert_allclose(grad_sum, v[f"grad_sum_{suffix}"], rtol=1e-5, atol=1e-6)


def test_pair_asymmetric_loss_defaults_are_the_training_settings(vectors):
    v = vectors("intra_asymmetric_loss")
    np.testing.assert_allclose(
        pair_asymmetric_loss(v["input"], v["target"]), v["loss_mean_gneg2_gpos1"], rtol=1e-5
    )
    with pytest.raises(ValueError, match="pairs"):
        pair_asymmetric_loss(v["input"][:, :-1], v["target"])


def test_negative_clamp_passes_gradient_at_its_boundary():
    # p = 0.5 and clip 0.5 put 1 - p + clip exactly on the clamp's upper bound 1, where PyTorch
    # passes the gradient: d(-log p⁻)/dx = σ(x)(1 - σ(x)) / p⁻ = 0.25 (jnp.minimum would give half).
    targets = jnp.zeros((1, 2))  # one pair, target 0
    grad = jax.grad(lambda x: pair_asymmetric_loss(x, targets, clip=0.5, gamma_neg=0.0))(
        jnp.zeros((1, 1))
    )
    np.testing.assert_allclose(grad, [[0.25]], rtol=1e-6)


def test_image_pair_cosines_match_reference_and_pytorch_convention(vectors):
    v = vectors("contrastive_loss")
    cosines = image_pair_cosines(jnp.asarray(v["feature"]))
    np.testing.assert_allclose(cosines, v["cosine_pairs"], rtol=1e-5, atol=1e-6)
    features = v["feature"].copy()
    features[1, 2] = 0.0  # a zero vector has similarity exactly 0
    first, second = pair_indices(4)
    oracle = cosine_similarity(features[first], features[second])
    cosines = image_pair_cosines(jnp.asarray(features))
    np.testing.assert_allclose(cosines, oracle, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(cosines)[[0, 3, 4], 2] == 0.0)


@pytest.mark.parametrize("regime", ["A_no_pos2pos", "B_all_selected"])
def test_contrastive_loss_matches_reference_in_deterministic_regimes(vectors, regime):
    v = vectors("contrastive_loss")
    features, targets = jnp.asarray(v["feature"]), jnp.asarray(v[f"{regime}/target"])
    counts = [int(jnp.sum(mask)) for mask in contrastive_categories(targets)]
    np.testing.assert_array_equal(counts, v[f"{regime}/counts_pos2pos_pos2neg_neg2neg"])
    for seed in range(3):  # the selection does not depend on the priorities here
        priorities = jax.random.uniform(jax.random.key(seed), (6, 5))
        loss, grad = jax.value_and_grad(contrastive_loss_with_priorities)(
            features, targets, priorities
        )
        np.testing.assert_allclose(loss, v[f"{regime}/loss_mean"], rtol=1e-5)
        np.testing.assert_allclose(grad, v[f"{regime}/grad_mean"], rtol=1e-4, atol=1e-6)

    def weighted_sum(f):
        terms, weights = contrastive_terms_and_weights(f, targets, priorities)
        return jnp.sum(terms * weights)

    total, grad_sum = jax.value_and_grad(weighted_sum)(features)
    np.testing.assert_allclose(total, v[f"{regime}/loss_sum"], rtol=1e-5)
    np.testing.assert_allclose(grad_sum, v[f"{regime}/grad_sum"], rtol=1e-4, atol=1e-6)
    random_key_loss = contrastive_loss(features, targets, jax.random.key(7))
    np.testing.assert_allclose(random_key_loss, v[f"{regime}/loss_mean"], rtol=1e-5)


def _random_problem(seed: int, batch: int = 6, classes: int = 7, dim: int = 4):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, classes, dim)).astype(np.float32)
    targets = rng.choice(
        [-1.0, 0.0, 1.0], p=rng.dirichlet(np.ones(3)), size=(batch, classes)
    ).astype(np.float32)
    return jnp.asarray(features), jnp.asarray(targets)


def _top_terms_mask(terms: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """Independent oracle: the `count` masked entries with the largest terms."""
    flat = np.where(mask, terms, -np.inf).ravel()
    chosen = np.zeros(flat.shape, bool)
    chosen[np.argsort(-flat, kind="stable")[:count]] = True
    return chosen.reshape(mask.shape) & mask


@pytest.mark.parametrize("seed", range(8))
def test_kept_count_and_composition_on_random_targets(seed):
    features, targets = _random_problem(seed)
    priorities = jax.random.uniform(jax.random.key(seed), (num_pairs(6), 7))
    terms, weights = jax.jit(contrastive_terms_and_weights)(features, targets, priorities)
    terms, weights = np.asarray(terms), np.asarray(weights)
    pp, pn, nn = (np.asarray(m) for m in contrastive_categories(targets))
    k, n_pn, n_nn = int(pp.sum()), int(pn.sum()), int(nn.sum())
    if k > 0:
        expected = k + min(n_pn, 2 * k) + min(n_pn, k) + min(n_nn, 2 * k) + min(n_nn, k)
    else:
        expected = n_pn + n_nn
    assert weights.sum() == expected
    assert np.all(weights[~(pp | pn | nn)] == 0) and np.all(weights[pp] == 1)
    for mask in (pn, nn):
        hardest = _top_terms_mask(terms, mask, k) if k > 0 else np.zeros_like(mask)
        random_part = weights * mask - hardest
        assert set(np.unique(random_part[mask])) <= {0.0, 1.0}
        assert random_part[mask].sum() == (min(mask.sum(), 2 * k) if k > 0 else mask.sum())
    loss = contrastive_loss_with_priorities(features, targets, priorities)
    np.testing.assert_allclose(loss, (weights * terms).sum() / max(weights.sum(), 1), rtol=1e-5)


def test_random_subset_is_uniform_and_follows_the_key():
    features, _ = _random_problem(0, batch=5, classes=3)
    targets = (
        jnp.full((5, 3), -1.0).at[0, 0].set(1.0).at[1, 0].set(1.0)
    )  # K = 1: PP at pair (0, 1), class 0
    pp, pn, nn = (np.asarray(m) for m in contrastive_categories(targets))
    assert (pp.sum(), pn.sum(), nn.sum()) == (1, 6, 23)
    terms, _ = contrastive_terms_and_weights(features, targets, jnp.zeros((10, 3)))
    hardest = _top_terms_mask(np.asarray(terms), nn, 1)

    @jax.jit
    @functools.partial(jax.vmap, in_axes=0)
    def nn_random_part(key):
        priorities = jax.random.uniform(key, (10, 3))
        _, weights = contrastive_terms_and_weights(features, targets, priorities)
        return jnp.where(jnp.asarray(nn), weights, 0.0) - hardest

    draws = np.asarray(nn_random_part(jax.random.split(jax.random.key(0), 4000)))  # (4000, 10, 3)
    assert np.all(draws.reshape(4000, -1).sum(axis=1) == 2)  # min(|NN|, 2K) = 2 each time
    frequency = draws.mean(axis=0)[nn]
    np.testing.assert_allclose(frequency, 2 / 23, atol=0.025)  # binomial std ≈ 0.0045
    assert len({tuple(np.flatnonzero(d)) for d in draws[:20]}) > 10

    first = contrastive_loss(features, targets, jax.random.key(1))
    assert first == contrastive_loss(features, targets, jax.random.key(1))
    losses = {float(contrastive_loss(features, targets, jax.random.key(s))) for s in range(10)}
    assert len(losses) > 1


def test_no_positive_pair_keeps_everything_and_empty_selection_is_zero():
    features, _ = _random_problem(3, batch=4, classes=2)
    targets = jnp.asarray([[1.0, -1.0], [-1.0, 0.0], [-1.0, -1.0], [0.0, 0.0]])
    _, weights = contrastive_terms_and_weights(features, targets, jnp.zeros((6, 2)))
    _, pn, nn = contrastive_categories(targets)
    np.testing.assert_array_equal(weights, (pn | nn).astype(np.float32))

    unknown = jnp.zeros((4, 2)).at[0, 0].set(1.0)
    loss, grad = jax.value_and_grad(contrastive_loss, argnums=0)(
        features, unknown, jax.random.key(0)
    )
    assert loss == 0.0 and not np.any(np.asarray(grad)) and np.all(np.isfinite(grad))
