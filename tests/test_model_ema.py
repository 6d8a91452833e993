"""Model EMA (core/model_ema.py, docs/methods/ema.md §1): the step's arithmetic against a hand
computation, exact resume with it, evaluation on it, and its config errors."""

import jax
import method_harness
import numpy as np
import pytest
from method_harness import assert_trees_close, synthetic_batch

from mlrpl_jax.config import ConfigError, base_config, validate_config
from mlrpl_jax.core import checkpointing, model_ema, optim, parallel
from mlrpl_jax.core.train import create_train_state, jit_predict, jit_train_step, make_train_step
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.synthetic import synthetic_data_info
from mlrpl_jax.methods.baseline import PartialBCEBaseline

DECAY = 0.75  # far from 1, so that every step moves the EMA visibly
NUM_STEPS = 4
U = 2.0**-24  # unit round-off of float32


@pytest.fixture(scope="module")
def setup():
    config = method_harness.tiny_config("baseline")
    config.ema.decay = DECAY
    info = synthetic_data_info(method_harness.NUM_CLASSES, 64, known_ratio=0.5)
    method = PartialBCEBaseline(
        config,
        info,
        random_embeddings(method_harness.NUM_CLASSES, 12),
        label_adjacency(info.train_partial_labels),
    )
    optimizer = optim.build_optimizer(config.optim, method_harness.STEPS_PER_EPOCH)
    host_state = create_train_state(method, optimizer, config)
    batches = [
        synthetic_batch(info, method_harness.BATCH_SIZE, method_harness.IMAGE_SIZE, seed=k)
        for k in range(NUM_STEPS)
    ]
    return method, optimizer, host_state, batches


def run_steps(setup, num_steps, state=None):
    """(final state, host copies of the state after each step)."""
    method, optimizer, host_state, batches = setup
    mesh = parallel.create_mesh()
    state = parallel.replicate(host_state if state is None else state, mesh)
    step = jit_train_step(make_train_step(method, optimizer, method_harness.STEPS_PER_EPOCH), mesh)
    start, after = int(jax.device_get(state.step)), []
    for k in range(start, start + num_steps):
        state, _ = step(state, parallel.to_global(batches[k], mesh))
        after.append(jax.device_get(state))
    return state, after


def test_the_step_moves_the_ema_as_the_hand_computed_average(setup):
    """e_0 = w_0, e_k = d e_(k-1) + (1 - d) w_k over the trained parameters and BN statistics,
    computed in float64 from the steps' float32 weights. Tolerance: one float32 update is three
    roundings (w - e, times 1 - d, plus e), each within u of a value <= m = max(|e|, |w|) of the
    leaf, and the earlier error shrinks by d < 1 each step, so after k steps
    |float32 - exact| <= 3 k u m."""
    _, _, host_state, _ = setup
    _, after = run_steps(setup, NUM_STEPS)
    expected = jax.tree.map(
        lambda x: np.asarray(x, np.float64),
        {"params": host_state.params, "batch_stats": host_state.batch_stats},
    )
    scale = jax.tree.map(lambda e: np.max(np.abs(e), initial=0.0), expected)  # m so far, per leaf
    for k, state in enumerate(after, start=1):
        trained = {"params": state.params, "batch_stats": state.batch_stats}
        expected = jax.tree.map(
            lambda e, w: DECAY * e + (1 - DECAY) * np.asarray(w, np.float64), expected, trained
        )
        scale = jax.tree.map(
            lambda m, e, w: max(m, np.max(np.abs(e), initial=0.0), np.max(np.abs(w), initial=0.0)),
            scale,
            expected,
            trained,
        )
        for (path, got, want), m in zip(
            method_harness.paired_leaves(state.ema, expected), jax.tree.leaves(scale)
        ):
            error = np.max(np.abs(got - want), initial=0.0)
            assert error <= 3 * k * U * m, (jax.tree_util.keystr(path), k, error, m)
    last = after[-1]
    # The EMA lags the trained weights, and frozen stages' statistics stay bit-identical.
    lagging = jax.tree.map(lambda e, w: not np.array_equal(e, w), last.ema["params"], last.params)
    assert all(jax.tree.leaves(lagging))
    assert_trees_close(
        last.ema["batch_stats"]["backbone"]["layer3"],
        host_state.batch_stats["backbone"]["layer3"],
        rtol=0,
        atol=0,
    )


def test_resume_with_the_ema_is_bit_exact(setup, tmp_path):
    uninterrupted, _ = run_steps(setup, NUM_STEPS)
    first_half, _ = run_steps(setup, NUM_STEPS // 2)
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=True)
    saver.save(NUM_STEPS // 2, first_half, {})
    saver.wait()
    saver.close()
    _, _, host_state, _ = setup
    restorer = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    restored, _ = restorer.restore(
        NUM_STEPS // 2, parallel.replicate(host_state, parallel.create_mesh())
    )
    restorer.close()
    resumed, _ = run_steps(setup, NUM_STEPS - NUM_STEPS // 2, state=restored)
    assert_trees_close(resumed.ema, uninterrupted.ema, rtol=0, atol=0)
    assert_trees_close(resumed, uninterrupted, rtol=0, atol=0)


def test_evaluation_runs_the_ema_weights(setup):
    method, _, _, batches = setup
    state, _ = run_steps(setup, 2)
    mesh = parallel.create_mesh()
    images = parallel.to_global({"image": batches[0]["image"]}, mesh)["image"]
    evaluated = np.asarray(jit_predict(method, mesh)(state, images))
    host = jax.device_get(state)
    predict = jax.jit(method.predict)
    ema_logits = np.asarray(predict(host.ema_variables(), host.method_state, batches[0]["image"]))
    trained_logits = np.asarray(predict(host.variables(), host.method_state, batches[0]["image"]))
    # Same weights, another device layout: only the blocking of the sums may differ.
    num_terms = method_harness.longest_float32_sum(
        lambda variables, images: method.predict(variables, {}, images),
        host.ema_variables(),
        batches[0]["image"],
    )
    method_harness.assert_layout_close(evaluated, ema_logits, num_terms)
    assert np.max(np.abs(evaluated - trained_logits)) > 100 * method_harness.reduction_rtol(
        num_terms
    ) * np.max(np.abs(trained_logits))
    assert model_ema.evaluated_weights(method.config) == model_ema.EMA_WEIGHTS


def test_without_ema_the_state_keeps_none_and_evaluates_the_trained_weights():
    config = method_harness.tiny_config("baseline")
    assert config.ema.decay == 0.0 and model_ema.evaluated_weights(config) == "trained"
    data = method_harness.SyntheticTrainingData()
    _, _, state = method_harness.build(PartialBCEBaseline, config, data)
    assert state.ema == {}
    assert_trees_close(state.evaluated_variables(), state.variables(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="keeps no model EMA; set config.ema.decay > 0"):
        state.ema_variables()


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_a_decay_outside_zero_to_one_is_a_config_error(decay):
    config = base_config()
    config.ema.decay = decay
    with pytest.raises(ConfigError, match=r"ema.decay must be in \[0, 1\)"):
        validate_config(config)
