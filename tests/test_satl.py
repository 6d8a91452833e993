"""SATL as a method plug-in (docs/methods/satl.md §4, our design): histograms in the jitted step against NumPy,
1 vs 8 devices, complete labels only in diagnostics, checkpoints, composition with SST and DSRB.
A real run of SATL, its per-epoch thresholds and premise monitor: tests/test_method_contract.py;
the threshold designs outside the package: tests/test_satl_threshold_designs.py."""

import math
import os

import jax
import method_harness
import numpy as np
import pytest

from mlrpl_jax.config import (
    digit_scenes_config,
    validate_config,
    with_method_sections,
)
from mlrpl_jax.core import checkpointing, train
from mlrpl_jax.core.train_state import split_params
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.semantic_transfer.sst import StructuredSemanticTransfer
from mlrpl_jax.methods.thresholds.satl import SemanticAwareThresholdLearning, base_method_config

SATL_OPTIONS = dict(warmup_epochs=1, num_bins=10, min_count=2.0, min_precision=0.5)


def build_satl(
    base_section=None, ema_decay=0.0, method_class=SemanticAwareThresholdLearning, **options
):
    """SATL, or its subclass `method_class`, with SATL_OPTIONS and `options` in `config.satl`."""
    config = method_harness.tiny_config("satl", **{**SATL_OPTIONS, **options})
    config.ema.decay = ema_decay
    if base_section is not None:
        config[options["base_method"]] = base_section
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(method_class, config, data)
    return method, optimizer, host_state, data


@pytest.fixture(scope="module")
def satl_setup():
    return build_satl()


def train_mode_scores(method, state, batch):
    """sigmoid of the train-mode logits the step sees for `batch` (B, C)."""
    apply = jax.jit(
        lambda variables, images: method.model.apply(
            variables, images, train=True, mutable=["batch_stats"]
        )[0].logits
    )
    return np.asarray(jax.nn.sigmoid(apply(jax.device_get(state).variables(), batch["image"])))


def histogram_counts(scores, labels, signs):
    """NumPy counts (len(signs), C, 10) of the `scores` (B, C) of the entries labelled each sign."""
    bins = np.minimum(np.floor(scores * 10).astype(int), 9)
    counts = np.zeros((len(signs), method_harness.NUM_CLASSES, 10))
    for index, sign in enumerate(signs):
        np.add.at(counts[index], (np.nonzero(labels == sign)[1], bins[labels == sign]), 1.0)
    return counts


HISTOGRAM_SIGNS = {"positive": 1, "negative": -1, "unknown": 0}


def check_histograms_in_the_step(method, optimizer, host_state, data, names):
    """Two steps: each histogram `<name>_histogram` of the state against a NumPy recomputation
    from the train-mode scores, and non-empty."""
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    decay = math.exp(-1.0 / method_harness.STEPS_PER_EPOCH)  # memory_epochs = 1
    state = runner.replicate(host_state)
    expected = 0.0
    for step in range(2):
        batch = data.batch(step)
        scores = train_mode_scores(method, state, batch)
        counts = histogram_counts(scores, batch["labels"], [HISTOGRAM_SIGNS[n] for n in names])
        expected = decay * expected + counts
        state, _ = runner.run(state, 1)
    stats = jax.device_get(state.method_state["satl"])
    for index, name in enumerate(names):
        np.testing.assert_allclose(stats[f"{name}_histogram"], expected[index], rtol=1e-6)
        assert stats[f"{name}_histogram"].sum() > 0


def test_histograms_in_the_step_equal_a_numpy_recomputation(satl_setup):
    check_histograms_in_the_step(*satl_setup, names=("positive", "negative"))


def with_other_ema(method, state, seed):
    """`state` whose model EMA holds the trainable parameters of another initialisation (and the
    state's BN statistics), so that the EMA's scores differ from the student's."""
    variables = method.init_variables(
        jax.random.PRNGKey(seed), (1, method_harness.IMAGE_SIZE, method_harness.IMAGE_SIZE, 3)
    )
    params, _ = split_params(variables["params"], method.config.model.freeze_early_stages)
    return state.replace(ema={"params": jax.device_get(params), "batch_stats": state.batch_stats})


def check_step_ignores_the_model_ema(method, host_state, data):
    """The step's loss, gradients and state are the same, bit for bit, whatever the EMA holds."""
    assert method.model_ema_in_loss(method.config) == ""
    ctx = StepContext(
        epoch=np.int32(1),
        step_in_epoch=np.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )
    step = jax.jit(
        lambda state, batch: train.loss_gradients_and_diagnostics(method, state, batch, ctx)
    )
    batch = data.batch(0)
    results = [step(host_state, batch), step(with_other_ema(method, host_state, seed=1), batch)]
    method_harness.assert_trees_close(results[0], results[1], rtol=0, atol=0)


def test_satl_reads_no_model_ema():
    """SATL scores with the student (§4.1): a kept model EMA changes nothing in its step."""
    method, _, host_state, data = build_satl(ema_decay=0.5)
    check_step_ignores_the_model_ema(method, host_state, data)


def test_state_and_training_agree_on_one_and_eight_devices(satl_setup):
    method, optimizer, host_state, data = satl_setup
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        runner = method_harness.Runner(method, optimizer, data, devices)
        results.append(runner.run(runner.replicate(host_state), 4))
    (state_1, history_1), (state_8, history_8) = results
    # Epoch 1 uses pseudo labels (8 devices hold one example each: per-device statistics would differ).
    assert all(h["satl/pseudo_on"] == 1.0 for h in history_8[2:])
    assert sum(h["satl/pseudo_positives"] + h["satl/pseudo_negatives"] for h in history_8[2:]) > 0
    # Layouts differ in the order of float32 sums only (method_harness): the score histograms
    # (counts: exact unless a score lies within round-off of a bin edge) and logged scalars to
    # reduction_rtol, the parameters to the Adam displacement bound.
    num_terms = method_harness.longest_sum_of_loss(method, host_state, data.batch(0))
    method_harness.assert_layout_close(state_1.method_state, state_8.method_state, num_terms)
    method_harness.assert_layout_close(history_1, history_8, num_terms)
    method_harness.assert_params_within_adam_bound(
        state_1.params,
        state_8.params,
        method.config.optim,
        method_harness.STEPS_PER_EPOCH,
        4,
        num_terms,
    )


def test_loss_and_gradients_do_not_depend_on_complete_labels(satl_setup):
    method, optimizer, host_state, data = satl_setup
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    state, _ = runner.run(runner.replicate(host_state), 3)
    state = jax.device_get(state)
    batch = data.batch(3)
    flipped = {**batch, "complete_labels": -batch["complete_labels"]}
    ctx = StepContext(
        epoch=np.int32(1),
        step_in_epoch=np.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )

    @jax.jit
    def loss_and_grads(params, batch):
        return train.loss_gradients_and_diagnostics(
            method, state.replace(params=params), batch, ctx
        )

    loss_a, aux_a, grads_a = loss_and_grads(state.params, batch)
    loss_b, aux_b, grads_b = loss_and_grads(state.params, flipped)
    assert (
        float(aux_a.metrics["satl/pseudo_positives"] + aux_a.metrics["satl/pseudo_negatives"]) > 0
    )
    assert float(loss_a) == float(loss_b)
    method_harness.assert_trees_close(grads_a, grads_b, rtol=0, atol=0)
    # ... while the diagnostics (reset at step_in_epoch 0, so this batch only) do use them.
    counts_a, counts_b = aux_a.method_state["satl"]["counts"], aux_b.method_state["satl"]["counts"]
    np.testing.assert_array_equal(counts_a["hidden_positives"], counts_b["hidden_negatives"])
    for sign in (
        "positives",
        "negatives",
    ):  # each pseudo label is true under exactly one of the two
        np.testing.assert_array_equal(
            counts_a[f"true_pseudo_{sign}"] + counts_b[f"true_pseudo_{sign}"],
            counts_a[f"pseudo_{sign}"],
        )
    # The premise monitor's hidden groups swap; the known ones stay.
    premise_a = aux_a.method_state["satl"]["premise"]
    premise_b = aux_b.method_state["satl"]["premise"]
    np.testing.assert_array_equal(premise_a["hidden_positive"], premise_b["hidden_negative"])
    np.testing.assert_array_equal(premise_a["known_positive"], premise_b["known_positive"])
    assert float(premise_a["hidden_positive"].sum()) > 0
    assert float(premise_a["known_negative"].sum()) > 0


def test_state_survives_checkpoint_and_resume(satl_setup, tmp_path):
    method, optimizer, host_state, data = satl_setup
    runner = method_harness.Runner(method, optimizer, data, jax.devices())
    uninterrupted, history = runner.run(runner.replicate(host_state), 4)
    first_part, _ = runner.run(runner.replicate(host_state), 3)
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    saver.save(3, first_part, {"step": 3})
    restored, _ = saver.restore(3, runner.replicate(host_state))
    saver.close()
    method_harness.assert_trees_close(
        restored.method_state, first_part.method_state, rtol=0, atol=0
    )
    resumed, resumed_history = runner.run(restored, 1)
    assert float(resumed_history[0]["loss"]) == float(history[3]["loss"])
    method_harness.assert_trees_close(resumed, uninterrupted, rtol=0, atol=0)


def test_with_zero_weights_satl_is_its_base_method():
    method, _, host_state, data = build_satl(
        base_method="sst", replace_base_pseudo_labels=False, ranking_weight=0.0, pseudo_weight=0.0
    )
    config = method_harness.tiny_config("sst")
    sst, _, _ = method_harness.build(StructuredSemanticTransfer, config, data)
    ctx = StepContext(
        epoch=np.int32(1),
        step_in_epoch=np.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )
    variables, batch = host_state.variables(), data.batch(0)
    loss, aux = jax.jit(method.loss)(variables, host_state.method_state, batch, ctx)
    sst_loss, sst_aux = jax.jit(sst.loss)(variables, host_state.method_state["base"], batch, ctx)
    assert float(loss) == float(sst_loss)
    method_harness.assert_trees_close(
        aux.method_state["base"], sst_aux.method_state, rtol=0, atol=0
    )
    assert {"intra_bce", "satl/ranking"} <= set(aux.metrics)


def test_around_the_ema_teacher_the_base_trains_on_its_pseudo_labels():
    """SATL completes its base's labels with the base's `training_labels` (the EMA teacher's
    pseudo labels) as the step does for the base alone: with zero weights, the same loss and
    diagnostics as the EMA teacher in the step."""
    config = method_harness.tiny_config(
        "satl",
        **SATL_OPTIONS,
        base_method="ema_teacher",
        replace_base_pseudo_labels=False,
        ranking_weight=0.0,
        pseudo_weight=0.0,
    )
    config.ema.decay = 0.999  # the teacher's
    data = method_harness.SyntheticTrainingData()
    method, _, host_state = method_harness.build(SemanticAwareThresholdLearning, config, data)
    teacher = method.base
    table = np.random.default_rng(0).integers(-1, 2, data.info.train_partial_labels.shape)
    method_state = {**host_state.method_state, "base": {"pseudo_labels": table.astype(np.int8)}}
    ctx = StepContext(
        epoch=np.int32(1),
        step_in_epoch=np.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )

    def loss_and_diagnostics(method, method_state, batch):
        state = host_state.replace(method_state=method_state)
        batch = train.training_batch(method, method_state, batch)
        return train.loss_gradients_and_diagnostics(method, state, batch, ctx)[:2]

    batch = data.batch(0)
    loss, aux = jax.jit(loss_and_diagnostics, static_argnums=0)(method, method_state, batch)
    teacher_loss, teacher_aux = jax.jit(loss_and_diagnostics, static_argnums=0)(
        teacher, method_state["base"], batch
    )
    assert float(loss) == float(teacher_loss)
    assert float(teacher_aux.metrics["pseudo_positives"]) > 0
    for key in ("pseudo_positives", "pseudo_negatives_true", "unknown_hidden_negatives"):
        assert float(aux.metrics[key]) == float(teacher_aux.metrics[key]), key
    plain_loss, _ = jax.jit(teacher.loss)(host_state.variables(), method_state["base"], batch, ctx)
    assert float(loss) != float(plain_loss)  # the pseudo labels count


@pytest.mark.parametrize("ranking_weight,pseudo_weight", [(0.3, 0.0), (0.0, 0.7)])
def test_ranking_loss_and_pseudo_labels_switch_on_their_own(ranking_weight, pseudo_weight):
    """Each of SATL's two terms can be measured alone: the loss is L_base + λ_r r L_rank +
    λ_p BCE(z, ŷ) (§4.7) with the other weight 0."""
    method, _, host_state, data = build_satl(
        ranking_weight=ranking_weight, pseudo_weight=pseudo_weight
    )
    low = np.tile(np.float32([5, 5, 5, 5, 5, 1, 1, 1, 1, 1]), (method_harness.NUM_CLASSES, 1))
    # Negatives mostly low, positives mostly high: tail precision >= ρ+ = 0.5 everywhere, so
    # every unknown entry becomes a pseudo positive.
    stats = {
        **host_state.method_state["satl"],
        "positive_histogram": low[:, ::-1].copy(),
        "negative_histogram": low,
    }
    method_state = {**host_state.method_state, "satl": stats}
    ctx = StepContext(
        epoch=np.int32(1),
        step_in_epoch=np.int32(3),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )  # after warm-up and ramp
    variables, batch = host_state.variables(), data.batch(0)
    loss, aux = jax.jit(method.loss)(variables, method_state, batch, ctx)
    base_loss, _ = jax.jit(method.base.loss)(variables, method_state["base"], batch, ctx)
    metrics = aux.metrics
    assert float(metrics["satl/ranking"]) > 0 and float(metrics["satl/pseudo_bce"]) > 0
    expected = (
        float(base_loss)
        + ranking_weight * float(metrics["satl/ranking"])
        + pseudo_weight * float(metrics["satl/pseudo_bce"])
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)  # three float32 terms of ~1


def test_sst_margins_are_replaced_and_dsrb_hooks_run():
    method, optimizer, host_state, data = build_satl(base_method="sst")
    assert method.base.options.intra_bce_weight == method.base.options.inter_bce_weight == 0.0
    assert method.base.options.cooccurrence_weight == 10.0  # the rest of SST is unchanged

    method, optimizer, host_state, data = build_satl(
        base_method="dsrb", base_section={"mixup_epoch": 1, "samples_per_quadrant": 4}
    )
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    state, history = runner.run(runner.replicate(host_state), 3)
    assert int(state.method_state["base"]["prototype_epoch"]) == 1  # DSRB's hook ran at epoch 1
    assert np.any(np.asarray(state.method_state["base"]["prototypes"]) != 0)
    assert history[2]["prototype_bce"] > 0 and history[2]["satl/pseudo_on"] == 1.0
    assert np.all(np.isfinite([h["loss"] for h in history]))


@pytest.mark.parametrize("base_name", ["baseline", "sst", "hst", "sarb", "dsrb"])
def test_replacing_pseudo_labels_zeroes_exactly_the_weights_the_base_declares(base_name):
    config = method_harness.tiny_config("satl", base_method=base_name)
    config = with_method_sections(config)
    options = SemanticAwareThresholdLearning.method_options(config)
    base_class = get_method_class(base_name)
    base_config = base_method_config(config, options)
    defaults = base_class.method_options(config)
    replaced = base_class.replaced_pseudo_label_weights
    assert base_config.method == base_name and replaced is not None
    assert {"sst": 2, "hst": 2}.get(base_name, 0) == len(replaced)
    for key, value in defaults.items():
        assert base_config[base_name][key] == (0.0 if key in replaced else value), key


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="cannot be 'satl'"):
        build_satl(base_method="satl")
    with pytest.raises(ValueError, match="threshold_rule must be one of precision, pos_only"):
        build_satl(threshold_rule="prior")
    with pytest.raises(ValueError, match=r"min_precision must be in \(0, 1\]"):
        build_satl(min_precision=0.0)
    with pytest.raises(ValueError, match="premise_bins must be >= 2"):
        build_satl(premise_bins=1)


def test_configs_validate_and_name_the_base_section():
    for name in ("coco", "vg", "digits"):
        module = {}
        with open(
            os.path.join(os.path.dirname(__file__), "..", "configs", f"satl_{name}.py"),
            encoding="utf-8",
        ) as f:
            exec(f.read(), module)  # noqa: S102 (our own config files)
        config = module["get_config"]()
        validate_config(config)
        assert config.satl.base_method == "baseline"
        config.satl.base_method = "sst"
        assert set(SemanticAwareThresholdLearning.config_sections(config)) == {"satl", "sst"}


def test_with_method_sections_adds_the_chosen_base_section_and_keeps_the_rest():
    config = digit_scenes_config("satl")
    config.satl.warmup_epochs = 3
    config.satl.base_method = "dsrb"
    config = with_method_sections(config)
    assert config.satl.base_method == "dsrb" and config.satl.warmup_epochs == 3
    assert config.dsrb.to_dict() == get_method_class("dsrb").default_config().to_dict()
    validate_config(config)
