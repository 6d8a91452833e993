"""benchmarks/satl_calibration_split.py: the held-out known labels feed only SATL's histograms,
never a loss, and are a fixed, per-image share of the known entries."""

import jax
import method_harness
import numpy as np
import pytest
import satl_calibration_split as split
from test_satl import SATL_OPTIONS, train_mode_scores

from mlrpl_jax.core import train
from mlrpl_jax.methods.base import StepContext


def build(fraction):
    config = method_harness.tiny_config("satl", **SATL_OPTIONS, calibration_fraction=fraction)
    data = method_harness.SyntheticTrainingData()
    method, _, host_state = method_harness.build(split.CalibrationSplitSATL, config, data)
    return method, host_state, data


def test_calibration_split_feeds_only_the_histograms_and_never_the_losses():
    fraction = 0.5
    method, host_state, data = build(fraction)
    batch = {key: value for key, value in data.batch(0).items() if key != train.HIDDEN_LABELS}
    calibration = np.asarray(
        split.calibration_entries(batch["labels"], batch["index"], fraction, seed=0)
    )
    known = batch["labels"] != 0
    assert not np.any(calibration & ~known)
    assert 0.3 < calibration.sum() / known.sum() < 0.7  # a fair share of the known entries
    again = split.calibration_entries(batch["labels"][::-1], batch["index"][::-1], fraction, seed=0)
    np.testing.assert_array_equal(np.asarray(again)[::-1], calibration)  # per image, not per slot

    ctx = StepContext(
        epoch=np.int32(1),
        step_in_epoch=np.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=method_harness.STEPS_PER_EPOCH,
    )
    variables = host_state.variables()
    loss_fn = jax.jit(method.loss)
    loss, aux = loss_fn(variables, host_state.method_state, batch, ctx)
    # The held-out labels change no loss: flipping them leaves the loss as it is ...
    flipped = {**batch, "labels": np.where(calibration, -batch["labels"], batch["labels"])}
    assert float(loss_fn(variables, host_state.method_state, flipped, ctx)[0]) == float(loss)
    # ... and the histograms count exactly the held-out entries, at their train-mode scores.
    scores = train_mode_scores(method, host_state, batch)
    stats = jax.device_get(aux.method_state["satl"])
    for sign, key in ((1, "positive_histogram"), (-1, "negative_histogram")):
        chosen = calibration & (batch["labels"] == sign)
        counts = np.zeros((method_harness.NUM_CLASSES, 10))
        np.add.at(
            counts,
            (np.nonzero(chosen)[1], np.minimum(np.floor(scores[chosen] * 10), 9).astype(int)),
            1,
        )
        np.testing.assert_allclose(stats[key], counts, rtol=1e-6)


def test_rejects_a_fraction_outside_zero_one():
    with pytest.raises(ValueError, match="calibration_fraction must be in"):
        build(1.0)
