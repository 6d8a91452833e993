"""SARB/DSRB blending blocks: parity with the reference and equality with the map-level DSRB."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlrpl_jax.methods.blending import blend

SAMPLES = 3000  # keys per statistical test; binomial sd of a 1/3 share is ~0.9 %


def mix_labels(label1, label2, alpha):
    """Λ label1 + (1 - Λ) label2 with Λ = label_mixing_matrix(label1, label2, alpha): the
    reference's label mix (docs/methods/sarb.md §8.2), which instance_blend applies to batch partners."""
    matrix = blend.label_mixing_matrix(label1, label2, alpha)
    return matrix * label1 + (1.0 - matrix) * label2


def _partial_targets(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size=shape)


def _keys(count: int, seed: int = 0) -> jax.Array:
    return jax.random.split(jax.random.key(seed), count)


# ---------------------------------------------------------------------------------------------
# ILRB / IPRB


def test_mix_labels_matches_reference(vectors):
    v = vectors("sarb_mixup_label")
    matrix = blend.label_mixing_matrix(v["label1"], v["label2"], v["alpha"])
    mixed = mix_labels(v["label1"], v["label2"], v["alpha"])
    np.testing.assert_array_equal(matrix, v["matrix"])
    np.testing.assert_allclose(mixed, v["mixed"], rtol=1e-6, atol=1e-7)

    def objective(alpha):
        return jnp.sum(mix_labels(v["label1"], v["label2"], alpha) * v["cot/mixed"])

    np.testing.assert_allclose(
        jax.grad(objective)(jnp.float32(v["alpha"])), v["grad/alpha"], rtol=1e-6
    )


def test_instance_blend_pairs_with_reversed_batch(vectors):
    v = vectors("sarb_mixup_label")
    np.testing.assert_array_equal(
        v["label2"], v["label1"][::-1]
    )  # the file's label2 is the partner
    np.testing.assert_array_equal(
        blend.instance_blend_coefficients(v["label1"], v["alpha"]), v["matrix"]
    )
    semantic = np.random.default_rng(0).normal(size=v["label1"].shape + (5,)).astype(np.float32)
    blended, blended_targets = blend.instance_blend(semantic, v["label1"], v["alpha"])
    np.testing.assert_allclose(blended_targets, v["mixed"], rtol=1e-6, atol=1e-7)
    weights = v["matrix"][..., None]
    np.testing.assert_allclose(
        blended, weights * semantic + (1 - weights) * semantic[::-1], rtol=1e-6, atol=1e-6
    )


def test_head_targets_match_reference(vectors):
    """Both blended targets of the reference's SARB training forward (odd batch, class-0 row)."""
    v = vectors("sarb_head")
    targets, semantic = v["target"], v["train/forward/semantic_feature"]
    _, instance_targets = blend.instance_blend(semantic, targets, v["param/alpha"])
    np.testing.assert_allclose(
        instance_targets, v["train/forward/mixed_target_1"], rtol=1e-6, atol=1e-7
    )
    prototypes = blend.sarb_prototypes_for_step(v["prototype"], jax.random.key(3))  # (C, D)
    for key in _keys(4):
        mask = blend.choose_blend_classes(targets, key)
        _, prototype_targets = blend.prototype_blend(
            semantic, targets, prototypes, mask, v["param/beta"]
        )
        np.testing.assert_allclose(
            prototype_targets, v["train/forward/mixed_target_2"], rtol=1e-6, atol=1e-7
        )


def test_instance_blend_on_maps_equals_vector_blend():
    """IPRB (§9.1): Λ applied to Φ_b, Φ_b' at every position and summed equals ILRB on s = ΣΦ."""
    rng = np.random.default_rng(1)
    batch, height, width, num_classes, dim = 4, 3, 2, 5, 6
    maps = rng.normal(size=(batch, height, width, num_classes, dim)).astype(np.float32)  # Φ
    targets = _partial_targets(rng, (batch, num_classes))
    alpha = np.float32(0.35)
    partner_targets = targets[::-1]
    coefficient = np.where(
        (targets == 0) & (partner_targets == 1), alpha, np.float32(1.0)
    )  # (B, C)
    weight = coefficient[:, None, None, :, None]
    direct = (weight * maps + (1 - weight) * maps[::-1]).sum(axis=(1, 2))
    blended, blended_targets = blend.instance_blend(maps.sum(axis=(1, 2)), targets, alpha)
    np.testing.assert_allclose(blended, direct, rtol=1e-5, atol=1e-5)
    expected_targets = coefficient * targets + (1 - coefficient) * partner_targets
    np.testing.assert_allclose(blended_targets, expected_targets, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gradients in alpha and beta


def _finite_difference(fn, x: float, step: float = 1e-2) -> float:
    return (float(fn(jnp.float32(x + step))) - float(fn(jnp.float32(x - step)))) / (2 * step)


def _blend_objectives(blend):
    """Scalar objectives that read only the blended features, only the targets, or both."""
    rng = np.random.default_rng(2)
    feature_cotangent = rng.normal(size=(4, 5, 3)).astype(np.float32)
    target_cotangent = rng.normal(size=(4, 5)).astype(np.float32)
    return {
        "features": lambda x: jnp.sum(blend(x)[0] * feature_cotangent),
        "targets": lambda x: jnp.sum(blend(x)[1] * target_cotangent),
        "both": lambda x: jnp.sum(blend(x)[0] * feature_cotangent)
        + jnp.sum(blend(x)[1] * target_cotangent),
    }


def _check_gradients(blend, at: float) -> None:
    for name, objective in _blend_objectives(blend).items():
        analytic = float(jax.grad(objective)(jnp.float32(at)))
        assert abs(analytic) > 1e-3, name
        np.testing.assert_allclose(
            analytic, _finite_difference(objective, at), rtol=2e-3, err_msg=name
        )


def test_alpha_gradient_flows_through_features_and_targets():
    rng = np.random.default_rng(3)
    semantic = rng.normal(size=(4, 5, 3)).astype(np.float32)
    targets = np.array(
        [[0, 0, 1, -1, 0], [1, 0, 0, 1, -1], [0, 1, -1, 1, 0], [1, 1, 0, 0, 1]], np.float32
    )
    assert np.any((targets == 0) & (targets[::-1] == 1))
    _check_gradients(lambda alpha: blend.instance_blend(semantic, targets, alpha), 0.4)


def test_beta_gradient_flows_through_features_and_targets():
    rng = np.random.default_rng(4)
    semantic = rng.normal(size=(4, 5, 3)).astype(np.float32)
    targets = _partial_targets(rng, (4, 5))
    prototypes = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.eye(4, 5, dtype=np.float32)
    _check_gradients(
        lambda beta: blend.prototype_blend(semantic, targets, prototypes, mask, beta), 0.6
    )


def test_prototypes_receive_no_gradient():
    semantic = jnp.ones((2, 3, 4))
    mask = jnp.ones((2, 3))
    grad = jax.grad(
        lambda p: jnp.sum(blend.prototype_blend(semantic, jnp.zeros((2, 3)), p, mask, 0.5)[0])
    )(jnp.ones((3, 4)))
    np.testing.assert_array_equal(grad, 0.0)


# ---------------------------------------------------------------------------------------------
# Class choice


def _choices(targets: np.ndarray, **kwargs) -> np.ndarray:
    choose = jax.jit(jax.vmap(lambda key: blend.choose_blend_classes(targets, key, **kwargs)))
    return np.asarray(choose(_keys(SAMPLES)))  # (SAMPLES, B, C)


def test_class_choice_is_uniform_over_unknown_classes():
    targets = np.array([[1, 0, -1, 0, 0, -1], [0, 0, 0, 0, 1, -1]], np.float32)
    single = _choices(targets)
    np.testing.assert_array_equal(single.sum(axis=-1), 1.0)
    assert np.all(single[..., targets != 0] == 0)
    shares = single.mean(axis=0)
    np.testing.assert_allclose(shares[0, [1, 3, 4]], 1 / 3, atol=0.04)
    np.testing.assert_allclose(shares[1, :4], 1 / 4, atol=0.04)

    pairs = _choices(targets, top_k=2)
    np.testing.assert_array_equal(pairs.sum(axis=-1), 2.0)
    assert np.all(pairs[..., targets != 0] == 0)
    shares = pairs.mean(axis=0)
    np.testing.assert_allclose(shares[0, [1, 3, 4]], 2 / 3, atol=0.04)
    np.testing.assert_allclose(shares[1, :4], 1 / 2, atol=0.04)


def test_class_choice_reference_mode_picks_known_classes():
    """Parity: no unknown -> class 0 (SARB, §12.3); too few unknowns -> lowest known classes (D10)."""
    targets = np.array([[-1, 1, -1, 1, -1], [1, -1, 0, 1, -1]], np.float32)
    key = jax.random.key(5)
    single = blend.choose_blend_classes(targets, key)
    np.testing.assert_array_equal(single, [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    triple = blend.choose_blend_classes(targets, key, top_k=3)
    np.testing.assert_array_equal(triple, [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])


def test_class_choice_clean_mode_selects_only_unknown_classes():
    targets = np.array([[-1, 1, -1, 1, -1], [1, -1, 0, 1, -1]], np.float32)
    key = jax.random.key(5)
    expected = [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0]]
    np.testing.assert_array_equal(
        blend.choose_blend_classes(targets, key, unknown_only=True), expected
    )
    np.testing.assert_array_equal(
        blend.choose_blend_classes(targets, key, top_k=3, unknown_only=True), expected
    )


def test_class_choice_rejects_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        blend.choose_blend_classes(jnp.zeros((2, 3)), jax.random.key(0), top_k=4)


# ---------------------------------------------------------------------------------------------
# Prototype lookups


def test_sarb_prototype_index_is_shared_and_uniform():
    num_classes, num_prototypes, dim = 3, 4, 2
    codes = 100 * np.arange(num_classes)[:, None] + np.arange(num_prototypes)[None, :]  # (C, K)
    prototypes = np.repeat(codes[..., None], dim, axis=-1).astype(np.float32)  # (C, K, D)
    pick = jax.vmap(lambda key: blend.sarb_prototypes_for_step(prototypes, key))
    picked = np.asarray(pick(_keys(SAMPLES)))  # (SAMPLES, C, D)
    indices = picked - 100 * np.arange(num_classes)[None, :, None]  # (SAMPLES, C, D) = κ everywhere
    np.testing.assert_array_equal(indices, indices[:, :1, :1] * np.ones_like(indices))
    shares = np.bincount(indices[:, 0, 0].astype(int), minlength=num_prototypes) / SAMPLES
    np.testing.assert_allclose(shares, 1 / num_prototypes, atol=0.04)


def test_dsrb_prototypes_for_entries_is_an_exact_gather():
    rng = np.random.default_rng(6)
    table = rng.normal(size=(5, 4, 7)).astype(np.float32)
    quadrants = rng.integers(0, 4, size=(3, 5))
    gathered = blend.dsrb_prototypes_for_entries(table, quadrants)
    np.testing.assert_array_equal(gathered, table[np.arange(5)[None, :], quadrants])


# ---------------------------------------------------------------------------------------------
# DSRB quadrants and the exact map -> vector reduction


def test_peak_quadrant_split_of_the_grid():
    """A single peak at (r, c) of a 7x7 grid maps to 2[r >= 3] + [c >= 3] (3/4 split, §9.1.1)."""
    height = width = 7
    positions = height * width
    attention = (np.eye(positions, dtype=np.float32) + 0.01)[
        ..., None
    ]  # (B, HW, C = 1): image n peaks at cell n
    reduced = np.ones((positions, positions, 3), np.float32)
    quadrants = np.asarray(blend.peak_quadrants(attention, reduced, (height, width)))[:, 0]
    rows, cols = np.divmod(np.arange(positions), width)
    np.testing.assert_array_equal(quadrants, 2 * (rows >= 3) + (cols >= 3))
    assert np.bincount(quadrants).tolist() == [9, 12, 12, 16]


def _reference_peak_quadrants(maps: np.ndarray) -> np.ndarray:
    """Peak quadrants straight from Φ (B, h, w, C, D): G = Φ summed over channels."""
    peak_map = maps.sum(axis=-1)  # (B, h, w, C)
    height, width = peak_map.shape[1:3]
    row = np.argmax(peak_map.max(axis=2), axis=1)
    col = np.argmax(peak_map.max(axis=1), axis=1)
    return 2 * (row >= height // 2) + (col >= width // 2)


@pytest.mark.parametrize("grid", [(7, 7), (4, 5)])
def test_prototype_blend_on_maps_equals_vector_blend(grid):
    """PPRB on Φ with prototype maps Ψ, summed over space, equals the vector path with ψ = ΣΨ (§9.2)."""
    height, width = grid
    batch, num_classes, dim, top_k = 4, 6, 5, 2
    rng = np.random.default_rng(height * width)
    logits = rng.normal(size=(batch, height * width, num_classes)).astype(np.float32)
    attention = np.asarray(jax.nn.softmax(logits, axis=1))  # (B, HW, C)
    reduced = rng.normal(size=(batch, height * width, dim)).astype(np.float32)  # (B, HW, D)
    maps = (attention[..., None] * reduced[:, :, None, :]).reshape(
        batch, height, width, num_classes, dim
    )
    prototype_maps = rng.normal(size=(num_classes, 4, height, width, dim)).astype(np.float32)  # Ψ
    targets = _partial_targets(rng, (batch, num_classes))
    beta = np.float32(0.3)
    quadrant_key, class_key = jax.random.split(jax.random.key(7))

    @jax.jit
    def vector_path(attention, reduced, targets, table, beta):
        peaks = blend.peak_quadrants(attention, reduced, grid)
        others = blend.other_quadrants(peaks, quadrant_key)
        mask = blend.choose_blend_classes(targets, class_key, top_k=top_k)
        semantic = jnp.einsum(
            "bhc,bhd->bcd", attention, reduced, precision=jax.lax.Precision.HIGHEST
        )
        prototypes = blend.dsrb_prototypes_for_entries(table, others)
        return (peaks, others, mask) + blend.prototype_blend(
            semantic, targets, prototypes, mask, beta
        )

    peaks, others, mask, blended, blended_targets = map(
        np.asarray, vector_path(attention, reduced, targets, prototype_maps.sum(axis=(2, 3)), beta)
    )

    np.testing.assert_array_equal(peaks, _reference_peak_quadrants(maps))
    assert np.all(others != peaks)
    np.testing.assert_array_equal(mask.sum(axis=-1), top_k)
    selected_maps = prototype_maps[np.arange(num_classes)[None, :], others]  # (B, C, h, w, D)
    selected_maps = selected_maps.transpose(0, 2, 3, 1, 4)  # (B, h, w, C, D)
    weight = mask[:, None, None, :, None]
    direct = (weight * (beta * maps + (1 - beta) * selected_maps) + (1 - weight) * maps).sum(
        axis=(1, 2)
    )
    np.testing.assert_allclose(blended, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blended_targets, (1 - mask) * targets + mask * (1 - beta), rtol=1e-6)


def test_other_quadrants_differ_and_are_uniform():
    quadrants = np.tile(np.arange(4, dtype=np.int32), (2, 1))  # (2, 4): every peak quadrant
    others = np.asarray(jax.vmap(lambda key: blend.other_quadrants(quadrants, key))(_keys(SAMPLES)))
    assert np.all(others != quadrants)
    assert others.min() >= 0 and others.max() <= 3
    for row in range(2):
        for peak in range(4):
            shares = np.bincount(others[:, row, peak], minlength=4) / SAMPLES
            expected = np.where(np.arange(4) == peak, 0.0, 1 / 3)
            np.testing.assert_allclose(shares, expected, atol=0.04)


def test_clamp_unit_interval():
    values = jnp.array([-0.5, 0.0, 0.3, 1.0, 1.7], jnp.float32)
    clamped = blend.clamp_unit_interval(values)
    assert clamped.dtype == jnp.float32
    np.testing.assert_array_equal(clamped, np.array([0.0, 0.0, 0.3, 1.0, 1.0], np.float32))
