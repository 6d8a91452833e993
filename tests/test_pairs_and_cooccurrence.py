"""Pair indexing Π_n and the co-occurrence head (docs/methods/problem_and_data.md §0, §4.6, §4.8.3, §13 item 9)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_torch_layout import cooccurrence_variables_from_torch

from mlrpl_jax.methods.semantic_transfer.cooccurrence_head import (
    CooccurrenceHead,
)
from mlrpl_jax.pairs import num_pairs, pair_indices, pair_position, pairs_to_symmetric


@pytest.mark.parametrize("n", [0, 1, 2, 6, 9])
def test_pair_indices_enumerate_pi_n_in_order(n):
    first, second = pair_indices(n)
    expected = [(i, j) for i in range(n) for j in range(i + 1, n)]
    assert first.dtype == np.int32 and second.dtype == np.int32
    assert list(zip(first.tolist(), second.tolist())) == expected
    assert len(expected) == num_pairs(n)


def test_pair_indices_match_the_reference_pair_index(vectors):
    reference = vectors("intra_asymmetric_loss")["pair_index"]
    np.testing.assert_array_equal(np.stack(pair_indices(6)), reference)
    reference = vectors("contrastive_loss")["pair_index"]
    np.testing.assert_array_equal(np.stack(pair_indices(4)), reference)


@pytest.mark.parametrize("n", [2, 7, 80])
def test_pair_position_inverts_pair_indices(n):
    first, second = pair_indices(n)
    positions = np.arange(num_pairs(n))
    np.testing.assert_array_equal(pair_position(first, second, n), positions)
    np.testing.assert_array_equal(
        np.asarray(pair_position(jnp.asarray(first), jnp.asarray(second), n)), positions
    )
    assert [pair_position(int(i), int(j), n) for i, j in zip(first[:5], second[:5])] == list(
        range(min(5, len(first)))
    )


def test_pairs_to_symmetric_against_a_loop_and_its_gradient():
    n = 5
    values = np.random.default_rng(0).normal(size=(3, num_pairs(n))).astype(np.float32)
    matrix = np.asarray(pairs_to_symmetric(values, n, diagonal=-2.0))
    first, second = pair_indices(n)
    expected = np.full((3, n, n), -2.0, np.float32)
    for k, (i, j) in enumerate(zip(first, second)):
        expected[:, i, j] = expected[:, j, i] = values[:, k]
    np.testing.assert_array_equal(matrix, expected)

    cotangent = np.random.default_rng(1).normal(size=(3, n, n)).astype(np.float32)
    grad = jax.grad(lambda x: jnp.sum(pairs_to_symmetric(x, n) * cotangent))(jnp.asarray(values))
    np.testing.assert_allclose(
        grad, cotangent[:, first, second] + cotangent[:, second, first], rtol=1e-6
    )
    with pytest.raises(ValueError, match="pair values"):
        pairs_to_symmetric(values[:, :-1], n)


def _naive_cooccurrence(params: dict, semantic: jax.Array) -> jax.Array:
    """The reference's computation: concatenate [q_i ; q_j] per pair, then two full linear layers."""
    q = (
        semantic @ params["class_projection"]["kernel"] + params["class_projection"]["bias"]
    )  # (B, C, D_a)
    first, second = pair_indices(semantic.shape[1])
    concatenated = jnp.concatenate([q[:, first], q[:, second]], axis=-1)  # (B, P, 2 D_a)
    rho = jax.nn.relu(
        concatenated @ params["pair_hidden"]["kernel"] + params["pair_hidden"]["bias"]
    )
    v = rho @ params["pair_output"]["kernel"] + params["pair_output"]["bias"]  # (B, P, H)
    classifier = params["pair_classifiers"]
    return jnp.einsum("bph,ph->bp", v, classifier["kernel"]) + classifier["bias"]


def test_reassociated_head_equals_the_naive_one_in_value_and_gradients():
    num_classes, feature_dim, pair_dim, hidden_dim = 5, 6, 3, 4
    head = CooccurrenceHead(num_classes, pair_dim=pair_dim, hidden_dim=hidden_dim)
    semantic = jax.random.normal(jax.random.key(0), (2, num_classes, feature_dim))
    params = head.init(jax.random.key(1), semantic)["params"]
    cotangent = jax.random.normal(jax.random.key(2), (2, num_pairs(num_classes)))

    def objective(forward):
        return lambda p, s: jnp.sum(forward(p, s) * cotangent)

    ours = objective(lambda p, s: head.apply({"params": p}, s))
    naive = objective(_naive_cooccurrence)
    np.testing.assert_allclose(
        head.apply({"params": params}, semantic),
        _naive_cooccurrence(params, semantic),
        rtol=1e-5,
        atol=1e-6,
    )
    grads_ours = jax.grad(ours, argnums=(0, 1))(params, semantic)
    grads_naive = jax.grad(naive, argnums=(0, 1))(params, semantic)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads_ours, grads_naive
    )


def test_head_uses_pytorch_default_initialisation():
    num_classes, feature_dim, pair_dim, hidden_dim = 6, 40, 24, 32
    head = CooccurrenceHead(num_classes, pair_dim=pair_dim, hidden_dim=hidden_dim)
    params = head.init(jax.random.key(0), jnp.zeros((1, num_classes, feature_dim)))["params"]
    pairs = num_pairs(num_classes)
    # name -> (kernel shape, bias shape, fan_in): every bound is 1/sqrt(fan_in)
    expected = {
        "class_projection": ((feature_dim, pair_dim), (pair_dim,), feature_dim),
        "pair_hidden": ((2 * pair_dim, hidden_dim), (hidden_dim,), 2 * pair_dim),
        "pair_output": ((hidden_dim, hidden_dim), (hidden_dim,), hidden_dim),
        "pair_classifiers": ((pairs, hidden_dim), (pairs,), hidden_dim),
    }
    for name, (kernel_shape, bias_shape, fan_in) in expected.items():
        bound = 1.0 / math.sqrt(fan_in)
        kernel, bias = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
        assert kernel.shape == kernel_shape and bias.shape == bias_shape
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.9 * bound and abs(kernel.mean()) < 0.1 * bound


def _torch_state_dict(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        key.removeprefix("param/"): value
        for key, value in arrays.items()
        if key.startswith("param/")
    }


def test_converter_transposes_linear_weights_and_keeps_the_pair_classifier(vectors):
    state_dict = _torch_state_dict(vectors("sst_head"))
    params = cooccurrence_variables_from_torch(state_dict)
    np.testing.assert_array_equal(
        params["class_projection"]["kernel"], state_dict["intra_fc_1.weight"].T
    )
    np.testing.assert_array_equal(
        params["pair_hidden"]["kernel"], state_dict["intra_fc_2.weight"].T
    )
    np.testing.assert_array_equal(params["pair_output"]["bias"], state_dict["intra_fc_3.bias"])
    np.testing.assert_array_equal(
        params["pair_classifiers"]["kernel"], state_dict["intra_classifiers.weight"]
    )
    head = CooccurrenceHead(80, pair_dim=16, hidden_dim=32)
    initialised = head.init(jax.random.key(0), jnp.zeros((1, 80, 32)))["params"]
    assert jax.tree.map(np.shape, initialised) == jax.tree.map(np.shape, params)
    del state_dict["intra_fc_3.bias"]
    with pytest.raises(KeyError, match="intra_fc_3.bias"):
        cooccurrence_variables_from_torch(state_dict)


@pytest.mark.parametrize("mode", ["train/forward", "eval"])
@pytest.mark.parametrize("file", ["sst_head", "hst_head"])
def test_head_matches_the_reference_forward(vectors, file, mode):
    arrays = vectors(file)
    params = cooccurrence_variables_from_torch(_torch_state_dict(arrays))
    head = CooccurrenceHead(80, pair_dim=16, hidden_dim=32)
    pair_logits = jax.jit(head.apply)({"params": params}, arrays[f"{mode}/semantic_feature"])
    assert pair_logits.shape == (3, 3160)
    np.testing.assert_allclose(
        pair_logits, arrays[f"{mode}/intra_cooccurrence"], rtol=1e-4, atol=1e-5
    )
