"""DSRB (docs/methods/dsrb.md §9): the vector-level loss against a map-level one, each repair D5-D12, devices, resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures_blending import (
    NUM_CLASSES,
    FakeHost,
    check_checkpoint_round_trip,
    check_config_file,
    check_devices_and_schedule,
    check_fixed_blend_weights,
    check_known_label_loss,
    tiny_method,
    training_batches,
)

from mlrpl_jax import losses
from mlrpl_jax.contrastive import contrastive_loss
from mlrpl_jax.core import optim, train
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.blending.dsrb import DSRB
from mlrpl_jax.methods.blending.quadrant_prototypes import QuadrantPrototypeAccumulator

GRID = 4


def tiny_dsrb(**options):
    method, info = tiny_method(DSRB, **options)
    variables = method.init_variables(jax.random.PRNGKey(0), (1, GRID, GRID, 3))
    variables["params"].update(alpha=jnp.float32(0.7), beta=jnp.float32(0.4))
    return method, info, variables


def step_inputs(info, epoch=5, seed=3):
    batch = training_batches(info, seed + 1)[seed]
    ctx = StepContext(
        epoch=jnp.int32(epoch),
        step_in_epoch=jnp.int32(0),
        rng=jax.random.PRNGKey(seed),
        steps_per_epoch=4,
    )
    return {k: jnp.asarray(v) for k, v in batch.items()}, ctx


def map_level_loss(method, variables, prototype_maps, batch, ctx):
    """The repaired reference loss on the attention-weighted maps Φ (B, HW, C, D) (§9.1), unknown-only top-K."""
    opts = method.options
    alpha, beta = variables["params"]["alpha"], variables["params"]["beta"]
    out, _ = method.model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    features, targets = out.features, batch["labels"]
    weighted = features.attention[..., None] * features.reduced[:, :, None, :]  # Φ (B, HW, C, D)
    contrastive_rng, blend_rng = jax.random.split(ctx.rng)
    offset_rng, class_rng = jax.random.split(blend_rng)
    batch_size, positions, classes, _ = weighted.shape

    partner = targets[::-1]
    mix = jnp.where((targets == 0) & (partner == 1), alpha, 1.0)  # Λ (B, C)
    instance_maps = mix[:, None, :, None] * weighted + (1 - mix[:, None, :, None]) * weighted[::-1]
    instance_targets = mix * targets + (1 - mix) * partner

    peak_map = weighted.sum(-1).reshape(batch_size, GRID, GRID, classes)  # G (B, h, w, C)
    row = jnp.argmax(peak_map.max(axis=2), axis=1)
    col = jnp.argmax(peak_map.max(axis=1), axis=1)
    peak = 2 * (row >= GRID // 2) + (col >= GRID // 2)
    other = (peak - jax.random.randint(offset_rng, peak.shape, 1, 4)) % 4  # (B, C)
    unknown = targets == 0
    scores = jax.random.uniform(class_rng, targets.shape) * unknown
    ranks = jnp.argsort(jnp.argsort(-scores, axis=1, stable=True), axis=1, stable=True)
    chosen = ((ranks < opts.top_k) & unknown).astype(jnp.float32)  # μ (B, C)
    prototypes = prototype_maps[jnp.arange(classes)[None, :], other]  # Ψ_{c,q'} (B, C, HW, D)
    prototypes = prototypes.transpose(0, 2, 1, 3)  # (B, HW, C, D)
    towards = beta * weighted + (1 - beta) * prototypes
    prototype_maps_blended = (
        chosen[:, None, :, None] * towards + (1 - chosen[:, None, :, None]) * weighted
    )
    prototype_targets = (1 - chosen) * targets + chosen * (1 - beta)

    def classify(maps):
        return method.model.apply(variables, maps.sum(axis=1), method="classify")

    warmup = losses.warmup_factor(ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)
    return (
        losses.partial_bce(out.logits, targets)
        + opts.contrastive_weight
        * warmup
        * contrastive_loss(features.semantic, targets, contrastive_rng)
        + opts.instance_weight * losses.partial_bce(classify(instance_maps), instance_targets)
        + opts.prototype_weight
        * losses.partial_bce(classify(prototype_maps_blended), prototype_targets)
    )


def test_loss_and_gradients_equal_the_map_level_loss():
    method, info, variables = tiny_dsrb(top_k=2, instance_weight=0.7, prototype_weight=1.3)
    prototype_maps = jax.random.normal(
        jax.random.PRNGKey(9), (NUM_CLASSES, 4, GRID * GRID, 16)
    )  # Ψ
    method_state = {"prototypes": prototype_maps.sum(axis=2), "prototype_epoch": jnp.int32(5)}
    batch, ctx = step_inputs(info)
    ours, ours_grads = jax.value_and_grad(
        lambda p: method.loss({**variables, "params": p}, method_state, batch, ctx)[0]
    )(variables["params"])
    theirs, their_grads = jax.value_and_grad(
        lambda p: map_level_loss(method, {**variables, "params": p}, prototype_maps, batch, ctx)
    )(variables["params"])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ours_grads, their_grads
    )
    assert float(ours_grads["alpha"]) != 0.0 and float(ours_grads["beta"]) != 0.0


def test_d5_blended_branches_use_the_ggnn():
    method, info, variables = tiny_dsrb()
    batch, ctx = step_inputs(info)
    state = method.init_method_state()

    def blended_only(params):
        out = method.forward({**variables, "params": params}, state, batch, ctx.epoch, ctx.rng)
        return losses.partial_bce(out.prototype_logits, out.prototype_targets)

    ggnn_grads = jax.grad(blended_only)(variables["params"])["ggnn"]
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(ggnn_grads))


def test_d10_known_classes_are_blended_only_with_the_parity_flag():
    targets = jnp.asarray(
        [[0, 1, -1, 1, -1, -1], [1, -1, 1, -1, 1, -1]] * 4, jnp.float32
    )  # 1 and 0 unknowns
    for flag in (False, True):
        method, info, variables = tiny_dsrb(top_k=2, blend_known_when_few_unknown=flag)
        batch, ctx = step_inputs(info)
        out = method.forward(
            variables, method.init_method_state(), {**batch, "labels": targets}, ctx.epoch, ctx.rng
        )
        relabelled = np.isclose(np.asarray(out.prototype_targets), 0.6)  # 1 - β
        assert relabelled[0::2, 0].all()  # the one unknown class
        assert relabelled.sum(axis=1).tolist() == ([2, 2] if flag else [1, 0]) * 4


def test_d11_blending_starts_at_mixup_epoch():
    method, info, variables = tiny_dsrb(mixup_epoch=3)
    batch, _ = step_inputs(info)
    for epoch, active in ((2, False), (3, True)):
        out = method.forward(
            variables, method.init_method_state(), batch, jnp.int32(epoch), jax.random.PRNGKey(0)
        )
        assert bool(np.any(np.asarray(out.instance_targets) != 0)) == active
        assert bool(np.any(np.asarray(out.prototype_logits) != 0)) == active


def test_d12_branch_weights_enter_the_total():
    method, info, variables = tiny_dsrb(instance_weight=0.25, prototype_weight=2.0)
    batch, ctx = step_inputs(info, epoch=5)
    total, aux = method.loss(variables, method.init_method_state(), batch, ctx)
    m = aux.metrics
    np.testing.assert_allclose(
        total,
        m["bce"] + 0.05 * m["contrastive"] + 0.25 * m["instance_bce"] + 2.0 * m["prototype_bce"],
        rtol=1e-6,
    )


def test_d8_and_d9_quadrant_prototypes_from_the_epoch_hook():
    batches = training_batches(tiny_method(DSRB)[1], 6, grid=GRID)
    prototypes = {}
    for placeholder in (True, False):
        method, _ = tiny_method(DSRB, quadrant_placeholder=placeholder, samples_per_quadrant=3)
        state = train.create_train_state(
            method, optim.build_optimizer(method.config.optim, 4), method.config
        )
        host = FakeHost(batches)
        # D8: blending active at a resumed epoch (7) without prototypes -> computed now.
        state = method.on_epoch_start(state, 7, host)
        assert host.passes == [7] and int(state.method_state["prototype_epoch"]) == 7
        accumulator = QuadrantPrototypeAccumulator(
            NUM_CLASSES, 16, cap=3, reference_placeholder=placeholder
        )
        for batch in batches:
            outputs = method.prototype_features(
                state.variables(), state.method_state, batch["image"]
            )
            accumulator.add(
                np.asarray(outputs["semantic"]), np.asarray(outputs["quadrants"]), batch["labels"]
            )
        np.testing.assert_allclose(
            state.method_state["prototypes"], accumulator.prototypes(), rtol=1e-5, atol=1e-6
        )
        prototypes[placeholder] = np.asarray(state.method_state["prototypes"])
        counts = accumulator.counts
    assert counts.max() == 3 and (counts > 0).sum() > NUM_CLASSES  # several quadrants in use
    filled = counts > 0
    shrink = (counts / (counts + 1))[..., None]  # D9: the placeholder shrinks ψ by n / (n + 1)
    np.testing.assert_allclose(
        prototypes[True][filled], (shrink * prototypes[False])[filled], rtol=1e-5, atol=1e-6
    )


def test_one_and_eight_devices_and_frozen_alpha_beta():
    check_devices_and_schedule(DSRB)


def test_fixed_alpha_beta_blend_at_their_initial_values():
    check_fixed_blend_weights(DSRB)


def test_main_term_can_be_partial_asl():
    check_known_label_loss(DSRB)


def test_method_state_and_alpha_beta_survive_checkpoints(tmp_path):
    check_checkpoint_round_trip(DSRB, tmp_path)


@pytest.mark.parametrize("name", ["dsrb_coco", "dsrb_vg", "dsrb_voc", "dsrb_digits"])
def test_configs_validate(name):
    check_config_file(name)
