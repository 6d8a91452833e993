"""benchmarks/satl_oracle_calibration.py: H± count the hidden labels of the unknown entries and
nothing else changes; the hidden labels reach the histograms through the diagnostics hook and no
loss before the pseudo labels start."""

import jax
import method_harness
import numpy as np
import satl_oracle_calibration as oracle

from mlrpl_jax.core import train
from mlrpl_jax.methods.base import StepContext

NUM_BINS = 10


def test_histograms_count_the_hidden_labels_of_unknown_entries():
    config = method_harness.tiny_config("satl", warmup_epochs=1, num_bins=NUM_BINS, min_count=2.0)
    data = method_harness.SyntheticTrainingData()
    method, _, host_state = method_harness.build(oracle.HiddenLabelCalibratedSATL, config, data)
    batch = data.batch(0)
    ctx = StepContext(
        epoch=np.int32(0),
        step_in_epoch=np.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )
    variables = host_state.variables()
    step_fn = jax.jit(
        lambda batch: train.loss_gradients_and_diagnostics(method, host_state, batch, ctx)
    )
    loss, aux, _ = step_fn(batch)

    # Before the warm-up ends the hidden labels reach no loss: flipping them changes nothing.
    flipped = {**batch, "complete_labels": -batch["complete_labels"]}
    assert float(step_fn(flipped)[0]) == float(loss)

    scores = np.asarray(
        jax.nn.sigmoid(
            jax.jit(
                lambda v, x: method.model.apply(v, x, train=True, mutable=["batch_stats"])[0].logits
            )(variables, batch["image"])
        )
    )  # (B, C)
    hidden = np.where(batch["labels"] == 0, batch["complete_labels"], 0)  # (B, C)
    assert np.any(hidden == 1) and np.any(hidden == -1)
    stats = jax.device_get(aux.method_state["satl"])
    for sign, key in ((1, "positive_histogram"), (-1, "negative_histogram")):
        chosen = hidden == sign
        counts = np.zeros((method_harness.NUM_CLASSES, NUM_BINS))
        bins = np.minimum(np.floor(scores[chosen] * NUM_BINS), NUM_BINS - 1).astype(int)
        np.add.at(counts, (np.nonzero(chosen)[1], bins), 1.0)
        np.testing.assert_allclose(stats[key], counts, rtol=1e-6)
