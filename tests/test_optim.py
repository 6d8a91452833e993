"""The reference Adam against PyTorch's recorded steps and a NumPy PyTorch-Adam loop."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from mlrpl_jax.core.optim import (
    ReferenceAdamState,
    build_optimizer,
    reference_adam,
    step_learning_rate,
)

HEAD_FILES = ("sst_head", "hst_head", "sarb_head")
LAZY_SCALARS = {"hst_head": ("intraMargin", "interMargin"), "sarb_head": ("alpha", "beta")}


def _recorded_step(v: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """(params, grads, params_after) for every parameter the recorded torch Adam step saw."""
    names = [key.removeprefix("param_after/") for key in v if key.startswith("param_after/")]
    kinds = ("param", "grad", "param_after")
    return tuple({name: v[f"{kind}/{name}"] for name in names} for kind in kinds)


def _adam_from_vectors(v: dict[str, np.ndarray]) -> optax.GradientTransformationExtraArgs:
    b1, b2 = (float(beta) for beta in v["adam_betas"])
    return reference_adam(
        float(v["adam_lr"]),
        b1=b1,
        b2=b2,
        eps=float(v["adam_eps"]),
        weight_decay=float(v["adam_weight_decay"]),
    )


@pytest.mark.parametrize("head", HEAD_FILES)
def test_one_step_matches_torch_adam(vectors, head):
    v = vectors(head)
    params, grads, expected = _recorded_step(v)
    # Every parameter with a recorded step also had a gradient and moved: the vectors were taken
    # at epoch 5, where α, β (SARB) and the HST margins already take part (docs/methods/training.md §10.2).
    for name in LAZY_SCALARS.get(head, ()):
        assert name in grads and float(expected[name]) != float(params[name])
    active = jax.tree.map(lambda _: True, params)
    tx = _adam_from_vectors(v)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params, active=active)
    after = optax.apply_updates(params, updates)
    for name, value in expected.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
        # Within a few float32 ulps of the larger of |θ| and |θ'| (PyTorch divides by the
        # bias-correction scalar, XLA multiplies by its reciprocal; step sizes are rounded once).
        ulp = np.spacing(np.maximum(np.abs(params[name]), np.abs(value)))
        assert np.all(np.abs(np.asarray(after[name]) - value) <= 4 * ulp), name
    assert all(int(count) == 1 for count in jax.tree.leaves(state.leaf_counts))


def _torch_adam_numpy(params, grad_steps, lr, b1, b2, eps, weight_decay):
    """PyTorch-1.7 Adam in float64; a gradient of None skips the parameter for that step."""
    params = {name: np.asarray(value, np.float64) for name, value in params.items()}
    state = {}
    for grads in grad_steps:
        for name, grad in grads.items():
            if grad is None:
                continue
            m, v, k = state.get(name, (0.0, 0.0, 0))
            grad = np.asarray(grad, np.float64) + weight_decay * params[name]
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            k += 1
            denom = np.sqrt(v) / np.sqrt(1 - b2**k) + eps
            params[name] = params[name] - lr / (1 - b1**k) * m / denom
            state[name] = (m, v, k)
    return params


def _run_reference_adam(tx, params, grad_steps):
    """Applies tx step by step; a gradient of None is fed as zeros with active=False."""
    state = tx.init(params)
    step = jax.jit(tx.update)
    for grads in grad_steps:
        active = {name: grad is not None for name, grad in grads.items()}
        dense = {
            name: jnp.zeros_like(params[name]) if grad is None else grad
            for name, grad in grads.items()
        }
        updates, state = step(dense, state, params, active=active)
        params = optax.apply_updates(params, updates)
    return params, state


def test_leaf_activated_late_starts_its_bias_correction_at_one():
    rng = np.random.default_rng(0)
    params = {"weights": rng.normal(size=(3, 4)).astype(np.float32), "alpha": np.float32(0.5)}
    grad_steps = [
        {
            "weights": rng.normal(size=(3, 4)).astype(np.float32),
            "alpha": None if step < 3 else np.float32(rng.normal()),
        }
        for step in range(6)
    ]
    hyper = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=5e-4)
    expected = _torch_adam_numpy(params, grad_steps, **hyper)
    lr = hyper.pop("lr")
    got, state = _run_reference_adam(reference_adam(lr, **hyper), params, grad_steps)
    for name in params:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert int(state.count) == 6
    assert int(state.leaf_counts["weights"]) == 6 and int(state.leaf_counts["alpha"]) == 3
    # Its first active step (step 3) is Adam's first step, |Δθ| = lr up to eps, whereas a shared
    # counter (k = 4) would give lr (1 - b1) / (1 - b1^4) / sqrt(...) ≈ 0.55 lr.
    before, _ = _run_reference_adam(reference_adam(lr, **hyper), params, grad_steps[:3])
    first, _ = _run_reference_adam(reference_adam(lr, **hyper), params, grad_steps[:4])
    assert float(before["alpha"]) == float(params["alpha"])
    np.testing.assert_allclose(abs(float(first["alpha"]) - float(before["alpha"])), lr, rtol=1e-5)


def test_inactive_leaf_is_untouched_even_with_weight_decay():
    params = {"w": jnp.ones((2,)), "alpha": jnp.float32(0.5)}
    tx = reference_adam(1e-2)
    state = tx.init(params)
    grads = {"w": jnp.ones((2,)), "alpha": jnp.float32(3.0)}
    updates, state = tx.update(grads, state, params, active={"w": True, "alpha": False})
    assert float(updates["alpha"]) == 0.0
    assert float(state.mu["alpha"]) == 0.0 and float(state.nu["alpha"]) == 0.0
    assert int(state.leaf_counts["alpha"]) == 0 and int(state.count) == 1


def test_active_leaf_with_zero_gradient_still_decays_and_moves():
    params = {"w": np.array([0.5, -2.0], np.float32)}
    grad_steps = [{"w": np.array([0.3, 0.1], np.float32)}] + [{"w": np.zeros(2, np.float32)}] * 3
    expected = _torch_adam_numpy(
        params, grad_steps, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=5e-4
    )
    tx = reference_adam(1e-2)
    got, state = _run_reference_adam(tx, params, grad_steps)
    np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-6)
    after_first, _ = _run_reference_adam(tx, params, grad_steps[:1])
    assert np.all(np.asarray(got["w"]) != np.asarray(after_first["w"]))
    assert int(state.leaf_counts["w"]) == 4
    # From the start, a zero gradient still moves θ through the L2 term alone.
    zero_only, _ = _run_reference_adam(tx, params, [{"w": np.zeros(2, np.float32)}])
    np.testing.assert_allclose(zero_only["w"], params["w"] - 1e-2 * np.sign(params["w"]), rtol=1e-6)


def test_step_learning_rate_at_epoch_boundaries():
    schedule = step_learning_rate(1e-5, steps_per_epoch=7, decay_epochs=10, decay_factor=0.1)
    steps = jnp.array([0, 69, 70, 139, 140, 209, 210])
    expected = np.array([1e-5, 1e-5, 1e-6, 1e-6, 1e-7, 1e-7, 1e-8], np.float32)
    np.testing.assert_allclose(jax.jit(schedule)(steps), expected, rtol=1e-6)
    assert jax.jit(schedule)(jnp.int32(69)).dtype == jnp.float32
    with pytest.raises(ValueError, match="positive"):
        step_learning_rate(1e-5, steps_per_epoch=0)


def test_schedule_follows_the_global_call_count():
    """The LR decays with every call, including calls where the leaf was inactive."""
    params = {"a": jnp.float32(1.0)}
    tx = reference_adam(
        step_learning_rate(1e-2, 1, decay_epochs=1, decay_factor=0.5), weight_decay=0.0
    )
    state = tx.init(params)
    _, state = tx.update({"a": jnp.float32(0.0)}, state, params, active={"a": False})
    updates, state = tx.update({"a": jnp.float32(2.0)}, state, params)
    # First active step: |update| = lr(count=1) · |m̂| / (sqrt(v̂) + eps) ≈ 0.5 · 1e-2.
    np.testing.assert_allclose(updates["a"], -5e-3, rtol=1e-6)


def test_update_is_jittable_with_donation_replication_and_traced_flags():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    params = {"w": jnp.arange(8.0).reshape(2, 4), "alpha": jnp.float32(0.5)}
    tx = reference_adam(1e-3)
    state = tx.init(params)
    assert isinstance(state, ReferenceAdamState)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))
    params, state = jax.device_put((params, state), replicated)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, state, grads, epoch):
        active = {"w": jnp.bool_(True), "alpha": epoch >= 5}  # α joins at epoch 5 (§10.2)
        updates, state = tx.update(grads, state, params, active=active)
        return optax.apply_updates(params, updates), state

    grads = {"w": jnp.ones((2, 4)), "alpha": jnp.float32(1.0)}
    params, state = train_step(params, state, grads, jnp.int32(4))
    assert float(params["alpha"]) == 0.5
    params, state = train_step(params, state, grads, jnp.int32(5))
    assert float(params["alpha"]) != 0.5
    assert int(state.leaf_counts["alpha"]) == 1 and int(state.leaf_counts["w"]) == 2
    assert params["w"].sharding.is_equivalent_to(replicated, 2)


def test_update_rejects_bad_arguments():
    params = {"w": jnp.ones((2,)), "b": jnp.ones(())}
    tx = reference_adam(1e-3)
    state = tx.init(params)
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, state)
    with pytest.raises(ValueError, match="same tree structure"):
        tx.update(params, state, params, active={"w": True})
    with pytest.raises(ValueError, match="scalar bool"):
        tx.update(params, state, params, active={"w": jnp.ones((2,), bool), "b": True})
    with pytest.raises(ValueError, match="b2"):
        reference_adam(1e-3, b2=1.0)


def _optim_config(**overrides) -> ml_collections.ConfigDict:
    fields = dict(
        name="adam",
        lr=1e-5,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=5e-4,
        lr_decay_epochs=10,
        lr_decay_factor=0.1,
    )
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def test_build_optimizer_is_the_reference_adam_with_step_decay():
    params = {"w": jnp.array([0.5, -1.0])}
    grads = {"w": jnp.array([0.2, 0.3])}
    built = build_optimizer(_optim_config(lr_decay_epochs=1), steps_per_epoch=1)
    direct = reference_adam(step_learning_rate(1e-5, 1, decay_epochs=1))
    built_state, direct_state = built.init(params), direct.init(params)
    for _ in range(3):
        built_updates, built_state = built.update(grads, built_state, params)
        direct_updates, direct_state = direct.update(grads, direct_state, params)
        np.testing.assert_array_equal(built_updates["w"], direct_updates["w"])
    # Third call is in epoch 2: lr = 1e-7.
    assert np.all(np.abs(np.asarray(built_updates["w"])) < 2e-7)


def test_build_optimizer_rejects_unknown_name_and_missing_fields():
    with pytest.raises(ValueError, match=r"unknown optimiser name 'sgd'.*\['adam'\]"):
        build_optimizer(_optim_config(name="sgd"), steps_per_epoch=10)
    config = _optim_config()
    del config["weight_decay"]
    with pytest.raises(ValueError, match="weight_decay"):
        build_optimizer(config, steps_per_epoch=10)


def test_state_round_trips_through_orbax(tmp_path):
    params = {"w": jnp.ones((2, 3)), "alpha": jnp.float32(0.5)}
    tx = reference_adam(1e-3)
    _, state = tx.update(params, tx.init(params), params, active={"w": True, "alpha": False})
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = manager.restore(
            1, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        ).state
    assert isinstance(restored, ReferenceAdamState)
    for got, expected in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(got, expected)
