"""The jitted data-parallel train step: device-count invariance and exact checkpoint resume."""

import subprocess
import sys
import types

import jax
import method_harness
import numpy as np
import pytest
from method_harness import assert_trees_close, synthetic_batch

from mlrpl_jax.core import checkpointing, optim, parallel
from mlrpl_jax.core.train import (
    INIT_IMAGE_SIZE,
    create_train_state,
    jit_predict,
)
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.synthetic import synthetic_data_info
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.baseline import PartialBCEBaseline

NUM_CLASSES = 6
IMAGE_SIZE = 32
BATCH_SIZE = 8
STEPS_PER_EPOCH = 10


@pytest.fixture(scope="module")
def setup():
    config = method_harness.tiny_config("baseline")
    info = synthetic_data_info(NUM_CLASSES, 64, known_ratio=0.5)
    method = PartialBCEBaseline(
        config, info, random_embeddings(NUM_CLASSES, 12), label_adjacency(info.train_partial_labels)
    )
    optimizer = optim.build_optimizer(config.optim, STEPS_PER_EPOCH)
    host_state = create_train_state(method, optimizer, config)
    batches = [synthetic_batch(info, BATCH_SIZE, IMAGE_SIZE, seed=k) for k in range(4)]
    return method, optimizer, host_state, batches


def run_steps(setup, devices, num_steps, state=None):
    method, optimizer, host_state, batches = setup
    data = types.SimpleNamespace(batch=batches.__getitem__)
    runner = method_harness.Runner(
        method, optimizer, data, devices, steps_per_epoch=STEPS_PER_EPOCH
    )
    state, history = runner.run(runner.replicate(host_state if state is None else state), num_steps)
    return state, [float(scalars["loss"]) for scalars in history]


def test_one_and_eight_devices_give_the_same_training(setup):
    """The same step on 1 and 8 devices differs only in the order of its float32 sums
    (method_harness: tolerances of a change of execution layout)."""
    assert jax.device_count() == 8
    method, _, host_state, batches = setup
    num_terms = method_harness.longest_sum_of_loss(method, host_state, batches[0], STEPS_PER_EPOCH)
    state_1, losses_1 = run_steps(setup, jax.devices()[:1], 3)
    state_8, losses_8 = run_steps(setup, jax.devices(), 3)
    method_harness.assert_layout_close(losses_1, losses_8, num_terms)
    method_harness.assert_layout_close(state_1.batch_stats, state_8.batch_stats, num_terms)
    optim_config = method.config.optim
    method_harness.assert_params_within_adam_bound(
        state_1.params, state_8.params, optim_config, STEPS_PER_EPOCH, 3, num_terms
    )
    method_harness.assert_adam_moments_within_bound(
        state_1.opt_state, state_8.opt_state, optim_config, STEPS_PER_EPOCH, 3, num_terms
    )
    assert int(state_8.step) == 3


def test_training_changes_trainable_but_not_frozen_parameters(setup):
    _, _, host_state, _ = setup
    state, losses = run_steps(setup, jax.devices()[:1], 2)
    assert all(np.isfinite(losses))
    assert_trees_close(state.frozen_params, host_state.frozen_params, rtol=0, atol=0)
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)),
        jax.device_get(state.params),
        host_state.params,
    )
    assert all(jax.tree.leaves(changed))
    layer3_stats = jax.device_get(state.batch_stats["backbone"]["layer3"])
    assert_trees_close(layer3_stats, host_state.batch_stats["backbone"]["layer3"], rtol=0, atol=0)


def test_save_restore_continue_equals_uninterrupted(setup, tmp_path):
    devices = jax.devices()
    uninterrupted, losses = run_steps(setup, devices, 4)

    first_half, _ = run_steps(setup, devices, 2)
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=2, keep_best=1, async_save=True)
    saver.save(2, first_half, {"note": "mid-run"})
    saver.wait()
    saver.close()

    _, _, host_state, _ = setup
    template = parallel.replicate(host_state, parallel.create_mesh(devices))
    restorer = checkpointing.Checkpointer(str(tmp_path), keep_last=2, keep_best=1, async_save=True)
    assert restorer.latest_step() == 2
    restored, record = restorer.restore(2, template)
    restorer.close()
    assert record == {"note": "mid-run"}
    resumed, resumed_losses = run_steps(setup, devices, 2, state=restored)
    assert resumed_losses == losses[2:]
    assert_trees_close(resumed, uninterrupted, rtol=0, atol=0)


def test_checkpoint_keeps_latest_and_best(setup, tmp_path):
    _, _, host_state, _ = setup
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=1, async_save=False)
    for step, value in zip([1, 2, 3, 4], [50.0, 90.0, 70.0, 60.0]):
        saver.save(step, host_state, {"step": step}, metrics={"mAP": value})
    saver.wait()
    assert sorted(saver.all_steps()) == [2, 4]
    assert saver.best_step() == 2
    saver.close()


def test_predict_is_inference_mode_and_device_count_invariant(setup):
    method, _, host_state, batches = setup
    outputs = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = parallel.create_mesh(devices)
        state = parallel.replicate(host_state, mesh)
        images = parallel.to_global({"image": batches[0]["image"]}, mesh)["image"]
        outputs.append(np.asarray(jit_predict(method, mesh)(state, images)))
    assert outputs[0].shape == (BATCH_SIZE, NUM_CLASSES)
    # The same parameters, per-example computation: only the blocking of the sums may change.
    num_terms = method_harness.longest_float32_sum(
        lambda state, images: method.predict(state.variables(), state.method_state, images),
        host_state,
        batches[0]["image"],
    )
    method_harness.assert_layout_close(outputs[0], outputs[1], num_terms)


@pytest.mark.parametrize(
    "method_name, backbone",
    [("sst", "resnet"), ("dsrb", "resnet"), ("baseline", "efficientnet_lite0")],
)
def test_initial_variables_do_not_depend_on_the_image_size(method_name, backbone):
    """create_train_state initialises at INIT_IMAGE_SIZE instead of the configured side
    (core/train.py): that is right only if no variable's shape or value depends on it."""
    config = method_harness.tiny_config(method_name)
    config.model.update(backbone=backbone, extra_pool=True)
    data = method_harness.SyntheticTrainingData()
    method = get_method_class(method_name)(
        config,
        data.info,
        random_embeddings(method_harness.NUM_CLASSES, 12),
        label_adjacency(data.info.train_partial_labels),
    )
    key = jax.random.PRNGKey(3)
    at_init_size = method.init_variables(key, (1, INIT_IMAGE_SIZE, INIT_IMAGE_SIZE, 3))
    at_larger_size = method.init_variables(
        key, (1, 2 * INIT_IMAGE_SIZE, 3 * INIT_IMAGE_SIZE // 2, 3)
    )
    assert jax.tree.structure(at_init_size) == jax.tree.structure(at_larger_size)
    for a, b in zip(jax.tree.leaves(at_init_size), jax.tree.leaves(at_larger_size)):
        np.testing.assert_array_equal(a, b)


def test_importing_the_training_loop_imports_neither_torch_nor_tensorboardx():
    """tensorboardX imports torch whenever it is installed (≈180 MB of resident memory); only a
    process that writes metrics may pay for it (core/metric_writer.py)."""
    code = (
        "import sys; import mlrpl_jax.core.train, mlrpl_jax.core.dry_run; "
        "print(sorted(m for m in ('torch', 'tensorboardX') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
