"""Shared loss blocks against the reference's parity vectors and independent oracles, and the
cosine oracle (tests/support/cosine_oracle.py) against the reference's vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cosine_oracle import cosine_similarity

from mlrpl_jax.losses import (
    clip_with_boundary_gradient,
    partial_bce,
    partial_bce_elementwise,
    warmup_factor,
)

TOL = dict(rtol=1e-5, atol=1e-6)
MARGINS = {"m000": 0.0, "m095": 0.95}
TARGET_KINDS = ("hard", "soft", "allzero")


def _summed_bce(logits, targets, margin):
    return jnp.sum(partial_bce_elementwise(logits, targets, margin=margin))


@pytest.mark.parametrize("margin_tag", MARGINS)
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_partial_bce_matches_reference_in_every_reduction(vectors, margin_tag, kind):
    v = vectors("bce_loss")
    margin = MARGINS[margin_tag]
    logits, targets = v["input"], v[f"target_{kind}"]
    suffix = f"{margin_tag}_{kind}"

    elementwise = partial_bce_elementwise(logits, targets, margin=margin)
    np.testing.assert_allclose(elementwise, v[f"loss_elem_{suffix}"], **TOL)

    mean, mean_grad = jax.value_and_grad(lambda x: partial_bce(x, targets, margin=margin))(logits)
    np.testing.assert_allclose(mean, v[f"loss_mean_{suffix}"], **TOL)
    np.testing.assert_allclose(mean_grad, v[f"grad_mean_{suffix}"], **TOL)

    total, total_grad = jax.value_and_grad(_summed_bce)(logits, targets, margin)
    np.testing.assert_allclose(total, v[f"loss_sum_{suffix}"], **TOL)
    np.testing.assert_allclose(total_grad, v[f"grad_sum_{suffix}"], **TOL)


@pytest.mark.parametrize("margin", MARGINS.values())
def test_partial_bce_without_selected_entries_is_zero_with_zero_gradient(vectors, margin):
    v = vectors("bce_loss")
    loss, (logit_grad, target_grad) = jax.value_and_grad(partial_bce, argnums=(0, 1))(
        v["input"], v["target_allzero"], margin=margin
    )
    assert float(loss) == 0.0
    assert not np.any(np.asarray(logit_grad))
    assert not np.any(np.asarray(target_grad))


def test_partial_bce_margin_comparison_is_strict_in_float32(vectors):
    v = vectors("bce_loss")
    elementwise = np.asarray(partial_bce_elementwise(v["input"], v["target_soft"], margin=0.95))
    # target_soft[0, 3:5] = ±0.95 exactly: on the margin, hence unselected; ±0.96 are selected.
    assert np.all(elementwise[0, 3:5] == 0.0)
    assert np.all(elementwise[0, 5:7] != 0.0)


def test_partial_bce_is_stable_for_saturated_logits():
    logits = jnp.array([[80.0, -80.0, 80.0, -80.0]])
    targets = jnp.array([[1.0, 1.0, -1.0, -1.0]])
    elementwise = np.asarray(partial_bce_elementwise(logits, targets))
    np.testing.assert_allclose(elementwise, [[0.0, 80.0, 80.0, 0.0]], atol=1e-30)
    grad = np.asarray(jax.grad(partial_bce)(logits, targets))
    np.testing.assert_allclose(grad, [[0.0, -0.25, 0.25, 0.0]], atol=1e-30)


def test_partial_bce_target_gradient_matches_finite_differences(vectors):
    v = vectors("bce_loss")
    logits, targets, margin = v["input"], v["target_soft"], 0.95
    grad = np.asarray(jax.grad(partial_bce, argnums=1)(logits, targets, margin=margin))
    loss = jax.jit(lambda t: partial_bce(logits, t, margin=margin))
    step = 1e-3
    # Probe only entries that a step of that size moves neither across ±margin nor across 0.
    distance = np.minimum(np.abs(np.abs(targets) - margin), np.abs(targets))
    probes = np.argwhere(distance > 2 * step)
    assert len(probes) > 20
    for row, col in probes:
        bump = np.zeros_like(targets)
        bump[row, col] = step
        estimate = (float(loss(targets + bump)) - float(loss(targets - bump))) / (2 * step)
        np.testing.assert_allclose(grad[row, col], estimate, rtol=1e-2, atol=2e-4)
    # The loss is linear in the targets: d/dy = -x / |P ∪ N| on selected entries, 0 elsewhere.
    selected = np.abs(targets) > np.float32(margin)
    np.testing.assert_allclose(grad, np.where(selected, -logits / selected.sum(), 0.0), **TOL)


def test_partial_bce_where_mask_drops_padded_examples(vectors):
    v = vectors("bce_loss")
    logits, targets = v["input"], v["target_hard"]
    keep = np.array([[1.0], [0.0], [1.0], [0.0]], np.float32)  # (B, 1): examples 1 and 3 padded
    masked = jax.value_and_grad(lambda x: partial_bce(x, targets, where=keep))
    loss, grad = masked(logits)
    kept_loss, kept_grad = jax.value_and_grad(partial_bce)(logits[::2], targets[::2])
    np.testing.assert_allclose(loss, kept_loss, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad)[::2], kept_grad, rtol=1e-6)
    assert not np.any(np.asarray(grad)[1::2])
    bool_loss = partial_bce(logits, targets, where=keep.astype(bool))
    np.testing.assert_allclose(bool_loss, loss, rtol=0)


def test_partial_bce_accepts_a_traced_margin_under_jit(vectors):
    v = vectors("bce_loss")
    loss = jax.jit(partial_bce)(v["input"], v["target_soft"], margin=jnp.float32(0.95))
    np.testing.assert_allclose(loss, v["loss_mean_m095_soft"], **TOL)


def test_partial_bce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        partial_bce(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="does not broadcast"):
        partial_bce(jnp.zeros((2, 3)), jnp.zeros((2, 3)), where=jnp.ones((3, 1)))


def test_cosine_similarity_matches_reference_pairs(vectors):
    v = vectors("contrastive_loss")
    first, second = v["pair_index"]
    features = v["feature"]  # (B, C, D)
    cosines = cosine_similarity(features[first], features[second])  # (pairs, C)
    np.testing.assert_allclose(cosines, v["cosine_pairs"], **TOL)


def test_cosine_similarity_mean_over_bank_matches_reference(vectors):
    v = vectors("sst_pseudo_labels")
    features = v["inter_feature"][:, :, None, :]  # (B, C, 1, D)
    bank = v["inter_pos_feature"][None]  # (1, C, E, D)
    mean_cosine = jnp.mean(cosine_similarity(features, bank), axis=-1)  # (B, C)
    np.testing.assert_allclose(mean_cosine, v["inter_mean_cos_helper"], **TOL)


def test_cosine_similarity_of_zero_vector_is_zero_with_finite_gradient():
    a = jnp.zeros((2, 4))
    b = jnp.array([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]])
    assert not np.any(np.asarray(cosine_similarity(a, b)))
    grads = jax.grad(lambda a, b: jnp.sum(cosine_similarity(a, b)), argnums=(0, 1))(a, b)
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))
    # The eps floor makes d cos / d a = b / eps at a = 0 (PyTorch 1.7), and 0 if both are zero.
    np.testing.assert_allclose(grads[0], np.asarray(b) / 1e-9, rtol=1e-6)


def test_cosine_similarity_along_other_axis_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 3)).astype(np.float32)
    expected = np.sum(a * b, 0) / np.sqrt(np.sum(a * a, 0) * np.sum(b * b, 0))
    np.testing.assert_allclose(cosine_similarity(a, b, axis=0), expected, rtol=1e-6)


def test_clip_with_boundary_gradient_values_and_derivative():
    x = jnp.array([-0.5, 0.0, 0.3, 1.0, 1.5])
    np.testing.assert_array_equal(clip_with_boundary_gradient(x, 0.0, 1.0), np.clip(x, 0.0, 1.0))
    derivative = jax.vmap(jax.grad(clip_with_boundary_gradient), (0, None, None))(x, 0.0, 1.0)
    np.testing.assert_array_equal(derivative, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_clip_with_boundary_gradient_with_array_and_traced_bounds():
    x = jnp.array([[0.2, 0.5, 0.9]])
    lo = jnp.array([[0.2], [0.6]])  # (2, 1): broadcasts against x
    hi = jnp.float32(0.8)
    out, pullback = jax.vjp(clip_with_boundary_gradient, x, lo, hi)
    np.testing.assert_array_equal(out, np.clip(np.asarray(x), np.asarray(lo), 0.8))
    dx, dlo, dhi = pullback(jnp.ones_like(out))
    np.testing.assert_array_equal(dx, [[1.0, 1.0, 0.0]])  # x=0.2 on lo[0]; x=0.9 above hi
    np.testing.assert_array_equal(dlo, [[0.0], [2.0]])  # lo[1]=0.6 is above x=0.2 and 0.5
    np.testing.assert_array_equal(dhi, 2.0)  # x=0.9 clipped to hi in both rows


def test_clip_with_boundary_gradient_matches_reference_hst_inter_scores(vectors):
    """clip(mean_e cos(s_bc, Π_ce) - m, 0, 1) with a learnable m (docs/methods/hst.md §7.2)."""
    v = vectors("hst_losses")

    def scores(features, margin):
        mean_cosine = jnp.mean(
            cosine_similarity(features[:, :, None, :], v["inter_prototype"][None]), axis=-1
        )  # (B, C)
        return clip_with_boundary_gradient(mean_cosine - margin, 0.0, 1.0)

    out, pullback = jax.vjp(scores, v["inter_feature"], jnp.float32(0.35))
    np.testing.assert_allclose(out, v["inter_pseudo_mtensor035"], **TOL)
    feature_grad, margin_grad = pullback(jnp.asarray(v["cot/inter"]))
    np.testing.assert_allclose(feature_grad, v["grad/inter_feature"], **TOL)
    np.testing.assert_allclose(margin_grad, v["grad/inter_margin"], **TOL)


def test_clip_boundary_passes_margin_gradient_at_zero():
    """At m = 1 and p̄ = 1 the score sits on the lower bound; the margin still gets -1 (§7.2)."""
    grad = jax.grad(lambda m: clip_with_boundary_gradient(jnp.float32(1.0) - m, 0.0, 1.0))(1.0)
    assert float(grad) == -1.0


def test_warmup_factor_ramps_in_epoch_zero_only():
    assert float(warmup_factor(0, 0, 4)) == 0.0
    assert float(warmup_factor(0, 3, 4)) == 0.75
    assert float(warmup_factor(1, 0, 4)) == 1.0
    assert float(warmup_factor(7, 2, 4)) == 1.0
    traced = jax.jit(warmup_factor)(jnp.int32(0), jnp.int32(5), jnp.int32(8))
    assert traced.dtype == jnp.float32 and float(traced) == 0.625
    ramp = warmup_factor(0, jnp.arange(4), 4)
    np.testing.assert_array_equal(ramp, [0.0, 0.25, 0.5, 0.75])
