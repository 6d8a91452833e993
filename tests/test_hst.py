"""HST as a method plug-in (docs/methods/hst.md §7, §10.2, §13 item 16): one reference training step,
lazy margins, prototypes across devices and checkpoints. A real run of HST, its margins and
prototypes: tests/test_method_contract.py."""

import head_parity
import jax
import method_harness
import numpy as np
import pytest

from mlrpl_jax.core import checkpointing
from mlrpl_jax.methods.semantic_transfer.hst import HeterogeneousSemanticTransfer


def hst_section(v):
    section = HeterogeneousSemanticTransfer.default_config()
    section.update(
        generate_label_epoch=int(v["hp/generateLabelEpoch"]),
        intra_bce_weight=float(v["hp/intraBCEWeight"]),
        cooccurrence_weight=float(v["hp/intraCooccurrenceWeight"]),
        inter_bce_weight=float(v["hp/interBCEWeight"]),
        contrastive_weight=float(
            v["hp/interInstanceDistanceWeight"]
        ),  # 0: the recorded term is random
        prototype_weight=float(v["hp/interPrototypeDistanceWeight"]),
        num_prototypes=v["prototype"].shape[1],
    )
    return section


def hst_method_state(v):
    return {"prototypes": v["prototype"]}


def test_one_training_step_matches_the_reference(vectors):
    v = vectors("hst_head")
    config = head_parity.head_config("hst", hst_section(v))
    # Tolerances: float32 round-off measured against a float64 run of the same step (head_parity).
    runs = head_parity.reference_step_float32_and_float64(
        HeterogeneousSemanticTransfer, config, v, hst_method_state
    )

    head_parity.check_forward_grads_and_update(v, runs)
    criteria = {
        "bce": "BCELoss/0",
        "intra_bce": "BCELoss/1",
        "inter_bce": "BCELoss/2",
        "intra_score_bce": "BCELoss/3",
        "cooccurrence": "IntraCooccurrenceLoss/0",
        "inter_score_bce": "BCELoss/4",
        "prototype": "InterPrototypeDistanceLoss/0",
    }
    for metric, criterion in criteria.items():
        head_parity.assert_float32_close(
            runs,
            lambda result, metric=metric: result.metrics[metric],
            v[f"train/crit/{criterion}/out"],
            metric,
        )
    target = v["target"]
    for metric, criterion in (
        ("intra_pseudo_positives", "BCELoss/1"),
        ("inter_pseudo_positives", "BCELoss/2"),
    ):
        recorded = v[f"train/crit/{criterion}/arg1"]
        np.testing.assert_array_equal(recorded[target != 0], target[target != 0])
        assert (
            float(runs.ours.metrics[metric])
            == float(runs.exact.metrics[metric])
            == np.sum(recorded[target == 0] == 1)
            > 0
        )
    # The margins in force are the params; their Adam step is in the parameter check above.
    for which in ("intra", "inter"):
        assert float(runs.ours.metrics[f"{which}_margin"]) == float(v[f"param/{which}Margin"])
    np.testing.assert_array_equal(runs.ours.after.method_state["prototypes"], v["prototype"])


def test_learnable_margins_start_at_one_and_fixed_margins_are_constants():
    data = method_harness.SyntheticTrainingData()
    config = method_harness.tiny_config(
        "hst", intra_margin=0.4, inter_margin=0.6, inter_margin_learnable=False
    )
    method, _, state = method_harness.build(HeterogeneousSemanticTransfer, config, data)
    assert float(state.params["intra_margin"]) == 1.0  # the configured 0.4 is ignored (§7.1)
    assert "inter_margin" not in state.params
    assert {k: float(v) for k, v in method.margins(state.params).items()} == {
        "intra": 1.0,
        "inter": np.float32(0.6),
    }


@pytest.fixture(scope="module")
def hst_setup():
    config = method_harness.tiny_config(
        "hst", generate_label_epoch=1, prototype_interval=1, num_prototypes=2
    )
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(
        HeterogeneousSemanticTransfer, config, data
    )
    return method, optimizer, host_state, data


def _margin_adam_state(state):
    opt = jax.device_get(state.opt_state)
    return {
        name: (int(opt.leaf_counts[name]), float(opt.mu[name]), float(opt.nu[name]))
        for name in ("intra_margin", "inter_margin")
    }


def test_prototypes_margins_and_training_agree_on_one_and_eight_devices(hst_setup):
    method, optimizer, host_state, data = hst_setup
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        runner = method_harness.Runner(method, optimizer, data, devices)
        state = runner.replicate(host_state)
        state, _ = runner.run(state, 2)  # epoch 0: margins outside the graph, no prototypes
        assert float(state.params["intra_margin"]) == float(state.params["inter_margin"]) == 1.0
        assert _margin_adam_state(state) == {
            "intra_margin": (0, 0.0, 0.0),
            "inter_margin": (0, 0.0, 0.0),
        }
        assert not np.any(np.asarray(state.method_state["prototypes"]))
        assert (
            int(jax.device_get(state.opt_state.leaf_counts["head"]["ggnn"]["state_reset"]["bias"]))
            == 2
        )
        state, history = runner.run(state, 2)  # epoch 1: K-means at its start, margins move
        assert np.all(np.any(np.asarray(state.method_state["prototypes"]) != 0, axis=-1))
        assert all(count == 2 for count, _, _ in _margin_adam_state(state).values())
        assert (
            float(state.params["intra_margin"]) < 1.0 and float(state.params["inter_margin"]) < 1.0
        )
        results.append((state, history))
    (state_1, history_1), (state_8, history_8) = results
    # Layouts differ in the order of float32 sums only (method_harness): prototypes (K-means of
    # features, unless a point lies within round-off of a cluster boundary) and logged scalars to
    # reduction_rtol, the parameters (margins included) to the Adam displacement bound.
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


def test_prototypes_and_margins_survive_checkpoint_and_resume(hst_setup, tmp_path):
    method, optimizer, host_state, data = hst_setup
    runner = method_harness.Runner(method, optimizer, data, jax.devices())
    uninterrupted, history = runner.run(runner.replicate(host_state), 4)
    first_part, _ = runner.run(runner.replicate(host_state), 3)  # prototypes of epoch 1 computed
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    saver.save(3, first_part, {"step": 3})
    restored, _ = saver.restore(3, runner.replicate(host_state))
    saver.close()
    assert np.any(np.asarray(restored.method_state["prototypes"]))
    method_harness.assert_trees_close(restored, first_part, rtol=0, atol=0)
    resumed, resumed_history = runner.run(restored, 1)
    assert float(resumed_history[0]["loss"]) == float(history[3]["loss"])
    method_harness.assert_trees_close(resumed, uninterrupted, rtol=0, atol=0)


def test_prototype_epochs_and_loss_sign_option():
    config = method_harness.tiny_config("hst", generate_label_epoch=3, prototype_interval=5)
    data = method_harness.SyntheticTrainingData()
    method, _, _ = method_harness.build(HeterogeneousSemanticTransfer, config, data)
    assert [e for e in range(20) if method.is_prototype_epoch(e)] == [3, 8, 13, 18]
    config.hst.recompute_prototypes = False
    method, _, _ = method_harness.build(HeterogeneousSemanticTransfer, config, data)
    assert [e for e in range(20) if method.is_prototype_epoch(e)] == [3]
    config.hst.proto_loss_sign = "natural"
    with pytest.raises(ValueError, match="proto_loss_sign"):
        method_harness.build(HeterogeneousSemanticTransfer, config, data)


def test_paper_model_has_the_reference_parameter_count():
    # docs/methods/network.md §4.9, VOC (C = 20): SST's model plus the two margins.
    assert (
        method_harness.paper_trainable_parameter_count(HeterogeneousSemanticTransfer, 20)
        == 32_385_749
    )
