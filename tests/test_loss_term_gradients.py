"""benchmarks/loss_term_gradients.py: the four weighted terms of SARB's loss and their shares of
its gradient, against each term differentiated on its own."""

import jax
import jax.numpy as jnp
import loss_term_gradients
import numpy as np
import pytest
from fixtures_blending import prepared_state, tiny_method, training_batches

from mlrpl_jax.core import train
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.blending.network import BLEND_PARAMS
from mlrpl_jax.methods.blending.sarb import SARB

EPS = float(np.finfo(np.float32).eps)


def test_terms_sum_to_the_loss_and_shares_match_each_term_on_its_own():
    method, info = tiny_method(SARB, mixup_epoch=0, known_label_loss="asl")
    state = prepared_state(method, info)
    batch = train.without_hidden_labels(training_batches(info, 1)[0])
    ctx = StepContext(
        epoch=jnp.int32(1), step_in_epoch=jnp.int32(0), rng=jax.random.PRNGKey(3),
        steps_per_epoch=2,
    )  # fmt: skip
    variables = state.variables()
    result = jax.device_get(
        loss_term_gradients.make_term_gradients(method)(variables, state.method_state, batch, ctx)
    )
    # Four float32 terms summed in another order than the loss's: at most 3 roundings.
    assert np.sum(result["value"]) == pytest.approx(float(result["loss"]), rel=4 * EPS)
    assert np.all(result["value"][[0, 2, 3]] > 0)

    trained = {k: v for k, v in variables["params"].items() if k not in BLEND_PARAMS}

    def term(params, k):
        full = {**variables, "params": {**variables["params"], **params}}
        _, aux = method.loss(full, state.method_state, batch, ctx)
        return loss_term_gradients.weighted_terms(method, aux.metrics, ctx)[k]

    term_gradient = jax.jit(jax.grad(term))  # one program for the four terms (k traced)
    rows = np.stack(
        [
            np.concatenate(
                [np.ravel(g) for g in jax.tree.leaves(term_gradient(trained, jnp.int32(k)))]
            ).astype(np.float64)
            for k in range(len(loss_term_gradients.TERMS))
        ]
    )  # (4, P)
    gradient = rows.sum(axis=0)
    shares = rows @ gradient / (gradient @ gradient)
    # The script's rows come from one vmapped backward pass instead of four: the same float32
    # products in another association, a few eps relative per entry; a share's dot product over
    # P entries then moves by at most P eps |g_t| |g| / |g|^2.
    bound = rows.shape[1] * EPS * np.linalg.norm(rows, axis=1) / np.linalg.norm(gradient)
    np.testing.assert_array_less(np.abs(result["share"] - shares), bound)
    np.testing.assert_allclose(
        result["gradient_norm"], np.linalg.norm(rows, axis=1), rtol=rows.shape[1] * EPS
    )
    assert np.sum(shares) == pytest.approx(1.0, rel=1e-9)
