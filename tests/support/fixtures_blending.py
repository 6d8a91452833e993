"""Shared set-up of the SARB and DSRB tests: tiny head-only methods, a fake host, step runners.

The head-only variants feed (B, h, w, C_in) "feature maps" straight into SharedHead, so the
train step, the hooks and the checkpoints run without compiling a ResNet.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from head_parity import head_only
from method_harness import (
    assert_layout_close,
    assert_params_within_adam_bound,
    assert_trees_close,
    longest_sum_of_loss,
    synthetic_batch,
)

from mlrpl_jax import losses
from mlrpl_jax.config import base_config, validate_config
from mlrpl_jax.core import optim, parallel, train
from mlrpl_jax.core.checkpointing import Checkpointer
from mlrpl_jax.core.train import jit_train_step, make_train_step
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.synthetic import synthetic_data_info
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.blending.sarb import SARB
from mlrpl_jax.methods.partial_losses import loss_functions

NUM_CLASSES = 6


def tiny_config(method_class, grid=4, **options):
    """Config of a tiny head-only run; the 'image' is a (grid, grid, 3) feature map."""
    config = base_config()
    config.method = method_class.name
    config.batch_size = 8
    config.data.image_size = grid
    config.embeddings.kind = "random"
    config.embeddings.dim = 12
    config.model.update(feature_dim=16, attention_dim=8, output_dim=16)
    config.optim.lr = 1e-2
    section = method_class.default_config()
    section.update(options)
    config[method_class.name] = section
    return config


class FakeHost:
    """The part of HostContext the prototype hooks use, over fixed local batches on one device."""

    def __init__(self, batches):
        self.batches = batches
        self.passes = []  # epochs of the inference passes run

    def inference_pass(self, state, features_fn, epoch):
        self.passes.append(epoch)
        apply = jax.jit(lambda st, images: features_fn(st.variables(), st.method_state, images))
        for batch in self.batches:
            outputs = apply(state, batch["image"])
            yield {key: np.asarray(value) for key, value in outputs.items()}, batch["labels"]

    def replicate(self, tree):
        return jax.tree.map(np.asarray, tree)


def run_steps(method, host_state, batches, devices, num_steps, steps_per_epoch, state=None):
    """Trains `num_steps` steps from `state` (default host_state) on a mesh over `devices`."""
    optimizer = optim.build_optimizer(method.config.optim, steps_per_epoch)
    mesh = parallel.create_mesh(devices)
    state = parallel.replicate(host_state if state is None else state, mesh)
    step = jit_train_step(make_train_step(method, optimizer, steps_per_epoch), mesh)
    start = int(jax.device_get(state.step))
    scalars = []
    for k in range(start, start + num_steps):
        state, values = step(state, parallel.to_global(batches[k % len(batches)], mesh))
        scalars.append(jax.device_get(values))
    return state, scalars


def training_batches(info, num_batches, grid=4, batch_size=8):
    """Training batches of random (grid, grid, 3) feature maps in the pipeline's format."""
    return [
        {
            key: value
            for key, value in synthetic_batch(info, batch_size, grid, seed=k).items()
            if key in ("image", "labels", "complete_labels")
        }
        for k in range(num_batches)
    ]


def tiny_method(method_class=SARB, **options):
    info = synthetic_data_info(NUM_CLASSES, 64, known_ratio=0.5, positive_rate=0.4)
    config = tiny_config(method_class, **options)
    method = head_only(method_class)(
        config, info, random_embeddings(NUM_CLASSES, 12), label_adjacency(info.train_partial_labels)
    )
    return method, info


def prepared_state(method, info):
    """A fresh host state with random prototypes, as after the first prototype pass."""
    state = train.create_train_state(
        method, optim.build_optimizer(method.config.optim, 2), method.config
    )
    shape = method.prototype_table_shape()
    prototypes = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return state.replace(method_state={"prototypes": prototypes, "prototype_epoch": np.int32(1)})


def check_devices_and_schedule(method_class):
    """1 vs 8 devices over e_m = 1 (2 steps per epoch); α, β frozen at 0.5 before, moving after."""
    method, info = tiny_method(method_class, mixup_epoch=1)
    host_state = prepared_state(method, info)
    batches = training_batches(info, 4)
    single, scalars_1 = run_steps(
        method, host_state, batches, jax.devices()[:1], 4, steps_per_epoch=2
    )
    multi, scalars_8 = run_steps(method, host_state, batches, jax.devices(), 4, steps_per_epoch=2)
    # The layouts differ in the order of float32 sums only (method_harness): logged scalars and
    # BN statistics to reduction_rtol, parameters (α, β included) to the Adam displacement bound;
    # the steps leave the prototypes alone (set by the host hook), so those are bit-identical.
    num_terms = longest_sum_of_loss(method, host_state, batches[0], steps_per_epoch=2)
    assert_layout_close(scalars_1, scalars_8, num_terms)
    assert_params_within_adam_bound(
        single.params, multi.params, method.config.optim, 2, 4, num_terms
    )
    assert_trees_close(single.method_state, multi.method_state, rtol=0, atol=0)
    assert_layout_close(single.batch_stats, multi.batch_stats, num_terms)

    before, _ = run_steps(method, host_state, batches, jax.devices(), 2, steps_per_epoch=2)
    counts = jax.device_get(before.opt_state.leaf_counts)
    for name in ("alpha", "beta"):
        assert float(before.params[name]) == 0.5 and int(counts[name]) == 0
        assert int(multi.opt_state.leaf_counts[name]) == 2 and float(multi.params[name]) != 0.5
    assert [s["instance_bce"] for s in scalars_8[:2]] == [0.0, 0.0]
    assert all(s["instance_bce"] > 0 and s["prototype_bce"] > 0 for s in scalars_8[2:])


def check_fixed_blend_weights(method_class):
    """learn_alpha / learn_beta = False (the reference's isAlphaLearnable / isBetaLearnable):
    blending runs at the initial α, β, which no step moves, while the network trains."""
    method, info = tiny_method(
        method_class, mixup_epoch=0, alpha_init=0.3, beta_init=0.7, learn_alpha=False,
        learn_beta=False,
    )  # fmt: skip
    host_state = prepared_state(method, info)
    state, scalars = run_steps(
        method, host_state, training_batches(info, 2), jax.devices()[:1], 3, steps_per_epoch=2
    )
    counts = jax.device_get(state.opt_state.leaf_counts)
    assert float(state.params["alpha"]) == np.float32(0.3)
    assert float(state.params["beta"]) == np.float32(0.7)
    assert int(counts["alpha"]) == 0 and int(counts["beta"]) == 0
    assert all(s["instance_bce"] > 0 and s["prototype_bce"] > 0 for s in scalars)
    moved = jax.tree.map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
        {k: v for k, v in state.params.items() if k not in ("alpha", "beta")},
        {k: v for k, v in host_state.params.items() if k not in ("alpha", "beta")},
    )
    assert any(jax.tree.leaves(moved))

    # Only α fixed: β learns from the same start.
    only_beta, _ = run_steps(
        tiny_method(method_class, mixup_epoch=0, learn_alpha=False)[0],
        host_state,
        training_batches(info, 2),
        jax.devices()[:1],
        2,
        steps_per_epoch=2,
    )
    assert float(only_beta.params["alpha"]) == np.float32(0.3)
    assert float(only_beta.params["beta"]) != np.float32(0.7)


def check_known_label_loss(method_class):
    """known_label_loss / blended_loss = 'asl': partial ASL (the ASL paper's γ+ = 0, γ- = 4,
    m = 0.05) replaces the BCE of the main term / of the blended branches (soft targets); an
    unknown name is refused."""
    batch = training_batches(tiny_method(method_class)[1], 1)[0]
    asl = dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)
    ctx = StepContext(
        epoch=jnp.int32(0), step_in_epoch=jnp.int32(0), rng=jax.random.PRNGKey(0),
        steps_per_epoch=2,
    )  # fmt: skip
    metrics = {}
    for main, blended in (("bce", "bce"), ("asl", "bce"), ("asl", "asl")):
        method, info = tiny_method(
            method_class, mixup_epoch=0, known_label_loss=main, blended_loss=blended
        )
        state = prepared_state(method, info)
        _, aux = method.loss(state.variables(), state.method_state, batch, ctx)
        metrics[main, blended] = aux.metrics
    # Same parameters, batch and key in all three: one forward, so every term is the same float32
    # computation as its reference function and equal to the bit.
    out = method.forward(
        state.variables(), state.method_state, batch, ctx.epoch, jax.random.split(ctx.rng)[1]
    )
    labels = batch["labels"]
    assert float(metrics["bce", "bce"]["bce"]) == float(losses.partial_bce(out.logits, labels))
    main_asl = loss_functions.partial_asymmetric_loss(
        out.logits, labels, **asl, assume_negative=False
    )
    assert (
        float(metrics["asl", "bce"]["bce"])
        == float(main_asl)
        != float(metrics["bce", "bce"]["bce"])
    )
    assert float(metrics["asl", "asl"]["bce"]) == float(main_asl)
    for branch, logits, targets in (
        ("instance_bce", out.instance_logits, out.instance_targets),
        ("prototype_bce", out.prototype_logits, out.prototype_targets),
    ):
        assert float(metrics["asl", "bce"][branch]) == float(metrics["bce", "bce"][branch]) > 0
        assert float(metrics["bce", "bce"][branch]) == float(losses.partial_bce(logits, targets))
        soft_asl = loss_functions.soft_partial_asymmetric_loss(logits, targets, **asl)
        assert float(metrics["asl", "asl"][branch]) == float(soft_asl) > 0
    for name in ("known_label_loss", "blended_loss"):
        with pytest.raises(ValueError, match=f"{name} must be one of"):
            tiny_method(method_class, **{name: "focal"})


def check_checkpoint_round_trip(method_class, tmp_path):
    method, info = tiny_method(method_class, mixup_epoch=0)
    state, _ = run_steps(
        method,
        prepared_state(method, info),
        training_batches(info, 1),
        jax.devices(),
        1,
        steps_per_epoch=2,
    )
    saver = Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    saver.save(1, state, {"note": "blending"})
    saver.wait()
    template = parallel.replicate(
        train.create_train_state(
            method, optim.build_optimizer(method.config.optim, 2), method.config
        ),
        parallel.create_mesh(),
    )
    restored, _ = saver.restore(1, template)
    saver.close()
    assert_trees_close(restored, state, rtol=0, atol=0)
    assert int(restored.method_state["prototype_epoch"]) == 1


def check_config_file(name):
    """configs/<name>.py validates and its docstring holds its launch command."""
    path = pathlib.Path(__file__).resolve().parents[2] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert f"--config=configs/{name}.py" in module.__doc__
    config = module.get_config()
    validate_config(config)
    assert (
        config.data.name
        == {"coco": "coco2014", "vg": "vg200", "voc": "voc2007", "digits": "digit_scenes/small"}[
            name.split("_")[1]
        ]
    )
