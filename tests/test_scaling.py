"""Scale-out beyond one device: checkpoints move between device counts, and bfloat16 compute.

The 1 vs 8 device equivalence of every registered method, on a real run's checkpoint, is in
test_method_contract.py; the tiny synthetic runs beside each method check it with what the
method keeps (baseline in test_training.py, SST/HST/SATL in test_sst.py, test_hst.py,
test_satl.py, SARB/DSRB in test_sarb.py, test_dsrb.py).
"""

import jax
import jax.numpy as jnp
import method_harness
import numpy as np
import pytest

from mlrpl_jax.core import checkpointing
from mlrpl_jax.methods import get_method_class

# The SST set-up of test_sst.py (same programs, so the compilation cache is shared).
SST_SECTION = dict(generate_label_epoch=1, bank_size=3, intra_margin=0.6, inter_margin=0.3)


def test_checkpoint_of_eight_devices_continues_on_one_device(tmp_path):
    config = method_harness.tiny_config("sst", **SST_SECTION)
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(get_method_class("sst"), config, data)
    eight = method_harness.Runner(method, optimizer, data, jax.devices())
    one = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    first_part, _ = eight.run(eight.replicate(host_state), 3)  # the bank has wrapped around
    uninterrupted, history = eight.run(first_part, 1)
    first_part, _ = eight.run(eight.replicate(host_state), 3)  # `uninterrupted` donated it

    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    saver.save(3, first_part, {"step": 3})
    saver.close()
    restorer = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    restored, _ = restorer.restore(3, one.replicate(host_state))
    restorer.close()
    assert all(leaf.sharding.device_set == {jax.devices()[0]} for leaf in jax.tree.leaves(restored))
    method_harness.assert_trees_close(restored, first_part, rtol=0, atol=0)

    # On one device the restored state continues exactly as the same state handed over in memory...
    in_memory, in_memory_history = one.run(one.replicate(jax.device_get(first_part)), 1)
    resumed, resumed_history = one.run(restored, 1)
    assert float(resumed_history[0]["loss"]) == float(in_memory_history[0]["loss"])
    method_harness.assert_trees_close(resumed, in_memory, rtol=0, atol=0)
    # ... and as the 8-device run continues, up to summation order (method_harness: one step from
    # the same state, so the parameters differ by at most twice the bound of step 4).
    num_terms = method_harness.longest_sum_of_loss(method, host_state, data.batch(0))
    method_harness.assert_layout_close(resumed_history, history, num_terms)
    method_harness.assert_layout_close(resumed.method_state, uninterrupted.method_state, num_terms)
    method_harness.assert_layout_close(resumed.batch_stats, uninterrupted.batch_stats, num_terms)
    method_harness.assert_params_within_adam_bound(
        resumed.params,
        uninterrupted.params,
        config.optim,
        method_harness.STEPS_PER_EPOCH,
        1,
        num_terms,
        start=3,
    )


# Pseudo labels, prototypes, blending and thresholds all start at epoch 1 (step 2).
BF16_SECTIONS = {
    "baseline": {},
    "sst": dict(generate_label_epoch=1, bank_size=3),
    "hst": dict(generate_label_epoch=1, prototype_interval=1, num_prototypes=2),
    "sarb": dict(mixup_epoch=1, num_prototypes=2),
    "dsrb": dict(mixup_epoch=1),
    "satl": dict(warmup_epochs=1, num_bins=10, min_count=2.0, min_precision=0.5),
}


def float_dtypes(tree):
    return {
        jnp.dtype(leaf.dtype)
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    }


@pytest.mark.parametrize("method_name", sorted(BF16_SECTIONS))
def test_bfloat16_compute_keeps_float32_state(method_name):
    config = method_harness.tiny_config(method_name, **BF16_SECTIONS[method_name])
    config.model.dtype = "bfloat16"
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(
        get_method_class(method_name), config, data
    )
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    state, history = runner.run(runner.replicate(host_state), 3)  # epoch 1 starts at step 2

    logits = jax.jit(method.predict)(state.variables(), state.method_state, data.batch(0)["image"])
    assert logits.dtype == jnp.bfloat16  # the compute dtype reaches the head
    for part in ("params", "frozen_params", "batch_stats", "opt_state", "method_state"):
        assert float_dtypes(getattr(state, part)) <= {jnp.dtype(jnp.float32)}, part
    assert float_dtypes(history) == {jnp.dtype(jnp.float32)}
    assert all(np.isfinite(h["loss"]) for h in history)
