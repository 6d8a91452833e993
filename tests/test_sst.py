"""SST as a method plug-in (docs/methods/sst.md §6, §13 items 13-15): one reference training step, the
margin schedule, the bank across devices and checkpoints. A real run of SST, its pseudo labels
and bank: tests/test_method_contract.py."""

import head_parity
import jax
import method_harness
import numpy as np
import pytest
import reference_torch_layout

from mlrpl_jax.core import checkpointing
from mlrpl_jax.methods.semantic_transfer.sst import StructuredSemanticTransfer, margin_schedule


def sst_section(v):
    section = StructuredSemanticTransfer.default_config()
    section.update(
        generate_label_epoch=int(v["hp/generateLabelEpoch"]),
        intra_margin=float(v["hp/intraBCEMargin"]),
        inter_margin=float(v["hp/interBCEMargin"]),
        intra_bce_weight=float(v["hp/intraBCEWeight"]),
        cooccurrence_weight=float(v["hp/intraCooccurrenceWeight"]),
        inter_bce_weight=float(v["hp/interBCEWeight"]),
        contrastive_weight=float(v["hp/interDistanceWeight"]),  # 0: the recorded term is random
        bank_size=int(v["hp/interExampleNumber"]),
    )
    return section


def sst_method_state(v):
    return {"bank": reference_torch_layout.positive_bank_from_newest_first(v["posFeature_before"])}


def test_one_training_step_matches_the_reference(vectors):
    v = vectors("sst_head")
    config = head_parity.head_config("sst", sst_section(v))
    # Tolerances: float32 round-off measured against a float64 run of the same step (head_parity).
    runs = head_parity.reference_step_float32_and_float64(
        StructuredSemanticTransfer, config, v, sst_method_state
    )

    head_parity.check_forward_grads_and_update(v, runs)
    for metric, criterion in (
        ("bce", "BCELoss"),
        ("intra_bce", "IntraBCELoss"),
        ("cooccurrence", "IntraCooccurrenceLoss"),
        ("inter_bce", "InterBCELoss"),
    ):
        head_parity.assert_float32_close(
            runs,
            lambda result, metric=metric: result.metrics[metric],
            v[f"train/crit/{criterion}/0/out"],
            metric,
        )
    # The pseudo targets themselves are exact (hard thresholds): count the new positives.
    target = v["target"]
    for metric, criterion in (
        ("intra_pseudo_positives", "IntraBCELoss"),
        ("inter_pseudo_positives", "InterBCELoss"),
    ):
        recorded = v[f"train/crit/{criterion}/0/arg1"]
        np.testing.assert_array_equal(recorded[target != 0], target[target != 0])
        assert (
            float(runs.ours.metrics[metric])
            == float(runs.exact.metrics[metric])
            == np.sum(recorded[target == 0] == 1)
            > 0
        )
    head_parity.assert_float32_close(
        runs,
        lambda result: reference_torch_layout.bank_rows_newest_first(
            result.after.method_state["bank"]
        ),
        v["posFeature_after"],
        "bank",
    )


def test_margin_schedule_is_the_reference_table():
    # docs/methods/sst.md §6.4: margins in force during epochs 0..19 for the script values.
    expected = [0.95] * 6 + [0.925, 0.9, 0.875, 0.85, 0.825, 0.8, 0.775] + [0.75] * 7
    table = margin_schedule(0.95, 0.025, 0.75, start_epoch=5, num_epochs=20)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table, np.asarray(expected, np.float32))
    config = method_harness.tiny_config("sst", **StructuredSemanticTransfer.default_config())
    method, _, _ = method_harness.build(
        StructuredSemanticTransfer, config, method_harness.SyntheticTrainingData()
    )
    margins_at = jax.jit(method.margins_at)
    for epoch, margin in enumerate(expected):
        assert float(margins_at(np.int32(epoch))["intra"]) == np.float32(margin)
    assert float(margins_at(np.int32(25))["inter"]) == np.float32(0.75)  # past the last epoch


@pytest.fixture(scope="module")
def sst_setup():
    config = method_harness.tiny_config(
        "sst", generate_label_epoch=1, bank_size=3, intra_margin=0.6, inter_margin=0.3
    )
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(StructuredSemanticTransfer, config, data)
    return method, optimizer, host_state, data


def test_bank_and_training_agree_on_one_and_eight_devices(sst_setup):
    method, optimizer, host_state, data = sst_setup
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        runner = method_harness.Runner(method, optimizer, data, devices)
        results.append(runner.run(runner.replicate(host_state), 4))
    (state_1, history_1), (state_8, history_8) = results
    # Epoch 1 uses pseudo labels; the bank (N_Q = 3) has wrapped around by then.
    assert sum(h["intra_pseudo_positives"] + h["inter_pseudo_positives"] for h in history_8[2:]) > 0
    assert int(np.min(state_8.method_state["bank"]["next_slot"])) >= 0
    assert np.count_nonzero(np.abs(state_8.method_state["bank"]["rows"]).sum(-1)) > 0
    np.testing.assert_array_equal(
        state_1.method_state["bank"]["next_slot"], state_8.method_state["bank"]["next_slot"]
    )
    # Layouts differ in the order of float32 sums only (method_harness): the bank's features and
    # every logged scalar to reduction_rtol, the parameters to the Adam displacement bound.
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


def test_bank_survives_checkpoint_and_resume(sst_setup, tmp_path):
    method, optimizer, host_state, data = sst_setup
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


def test_paper_model_has_the_reference_parameter_count():
    # docs/methods/network.md §4.9, VOC (C = 20): shared network + co-occurrence head.
    assert (
        method_harness.paper_trainable_parameter_count(StructuredSemanticTransfer, 20) == 32_385_747
    )
