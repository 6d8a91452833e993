"""EMA-teacher curriculum pseudo labels (mlrpl_jax/methods/ema_teacher.py, docs/methods/ema.md §2):
the thresholds, known labels winning, the teacher's pass over the training set against an
independent scoring, the diagnostics' counts, the pseudo labels joining each image's labels
before LogicMix mixes them (ema.md §2.6) and the option errors. A real run, its pseudo-label
table and its results.json naming the EMA weights, and that neither the training labels nor the
loss read the hidden labels are in the contract of every registered method
(tests/test_method_contract.py, tests/test_hidden_labels.py)."""

import jax
import jax.numpy as jnp
import method_harness
import numpy as np
import pytest
from tiny_config import tiny_digit_config

from mlrpl_jax import logicmix, losses
from mlrpl_jax.config import with_method_sections
from mlrpl_jax.core import dry_run, train
from mlrpl_jax.data.synthetic import SyntheticData, synthetic_data_info
from mlrpl_jax.methods.base import PARTIAL_LABELS, StepContext
from mlrpl_jax.methods.ema_teacher import (
    EMATeacherPseudoLabels,
    teacher_pseudo_labels,
    with_pseudo_labels,
)

CTX = StepContext(
    epoch=jnp.int32(1),
    step_in_epoch=jnp.int32(0),
    rng=jax.random.PRNGKey(0),
    steps_per_epoch=method_harness.STEPS_PER_EPOCH,
)


def test_thresholds_are_strict_and_known_labels_win():
    logits = np.array([[4.0, 4.01, -4.0, -4.01, 0.0]], np.float32)
    assert teacher_pseudo_labels(logits, -4.0, 4.0).tolist() == [[0, 1, 0, -1, 0]]
    table = np.array([[1, -1, 1], [-1, 0, 1], [0, 0, 0]], np.int8)  # (N, C) pseudo labels
    labels = np.array([[0, 0, -1], [1, 0, 0]], np.float32)  # rows 1 and 0 of the table
    filled = with_pseudo_labels(jnp.asarray(labels), jnp.asarray(table), jnp.array([1, 0]))
    assert np.asarray(filled).tolist() == [[-1, 0, -1], [1, -1, 1]]


def test_synthetic_training_pass_pads_the_last_batch():
    data = SyntheticData(synthetic_data_info(3, 10, known_ratio=0.5), image_size=8)
    batches = list(data.eval_batches(8))
    assert [b["index"].tolist() for b in batches] == [list(range(8)), [8, 9] + [-1] * 6]
    assert batches[1]["mask"].tolist() == [1, 1] + [0] * 6


def teacher_config(**section):
    # Thresholds near 0, so that the barely trained teacher of a test gives pseudo labels.
    return method_harness.tiny_config(
        "ema_teacher",
        **{"warmup_epochs": 1, "negative_logit": -0.02, "positive_logit": 0.02, **section},
    )


def test_the_teacher_scores_every_training_image_with_the_ema_weights():
    config = teacher_config()
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(EMATeacherPseudoLabels, config, data)
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    state, _ = runner.run(runner.replicate(host_state), method_harness.STEPS_PER_EPOCH)
    before = np.asarray(jax.device_get(state.method_state["pseudo_labels"]))
    assert not before.any()  # nothing during the warm-up
    state = method.on_epoch_start(state, 1, runner.host)
    table = np.asarray(jax.device_get(state.method_state["pseudo_labels"]))  # (N, C)

    # Independent scoring: the EMA variables, every row's image once, on the host.
    host = jax.device_get(state)
    predict = jax.jit(method.predict)
    rows = [
        (
            batch["index"],
            np.asarray(predict(host.ema_variables(), host.method_state, batch["image"])),
        )
        for batch in data.eval_batches(method_harness.BATCH_SIZE)
    ]
    index = np.concatenate([r[0] for r in rows])
    logits = np.empty(table.shape, np.float32)
    logits[index] = np.concatenate([r[1] for r in rows])
    assert sorted(index.tolist()) == list(range(data.info.num_train))
    expected = teacher_pseudo_labels(logits, -0.02, 0.02)
    known = data.info.train_partial_labels != 0
    expected[known] = 0
    # Logits within the layout tolerance of a threshold may fall either side of it.
    num_terms = method_harness.longest_float32_sum(
        lambda v, images: method.predict(v, {}, images),
        host.ema_variables(),
        data.batch(0)["image"],
    )
    tolerance = method_harness.reduction_rtol(num_terms) * np.max(np.abs(logits))
    undecided = np.minimum(np.abs(logits - 0.02), np.abs(logits + 0.02)) <= tolerance
    assert np.array_equal(table[~undecided], expected[~undecided])
    assert not table[known].any()
    assert (table > 0).sum() > 0 and (table < 0).sum() > 0 and (table == 0)[~known].sum() > 0

    # The step's training labels are the partial labels completed by the table; the loss is
    # partial BCE on them.
    batch = train.training_batch(method, host.method_state, data.batch(2))
    value, _ = method.loss(host.variables(), host.method_state, batch, CTX)
    output, _ = method.model.apply(
        host.variables(), batch["image"], train=True, mutable=["batch_stats"]
    )
    partial = batch[PARTIAL_LABELS]
    targets = np.where(partial != 0, partial, table[batch["index"]])
    np.testing.assert_array_equal(batch["labels"], targets)
    reference = losses.partial_bce(output.logits, targets)
    assert float(value) == pytest.approx(float(reference), rel=1e-6)
    assert float(value) != pytest.approx(
        float(losses.partial_bce(output.logits, partial)), rel=1e-3
    )


def test_diagnostics_count_pseudo_labels_of_unknown_entries_against_the_hidden_labels():
    config = teacher_config()
    data = method_harness.SyntheticTrainingData()
    method = EMATeacherPseudoLabels(config, data.info, None, None)
    method_state = {"pseudo_labels": jnp.array([[1, 1, -1, -1], [1, -1, 0, 1]], jnp.int8)}
    batch = {
        "labels": jnp.array([[0, 0, 0, 1], [0, 0, 0, -1]], jnp.float32),
        "index": jnp.array([0, 1]),
    }
    batch = train.training_batch(method, method_state, batch)
    complete = jnp.array([[1, -1, -1, 1], [-1, -1, 1, -1]], jnp.float32)
    scalars, _ = method.diagnostics({}, method_state, batch, complete, CTX)
    # Unknown entries: row 0 columns 0-2, row 1 columns 0-2. Pseudo positives (0,0) true,
    # (0,1) false, (1,0) false; negatives (0,2) true, (1,1) true; (1,2) has none.
    assert {k: float(v) for k, v in scalars.items()} == {
        "pseudo_positives": 3.0,
        "pseudo_positives_true": 1.0,
        "pseudo_negatives": 2.0,
        "pseudo_negatives_true": 2.0,
        "unknown_hidden_positives": 2.0,
        "unknown_hidden_negatives": 4.0,
    }


def test_pseudo_labels_join_each_image_before_logicmix_ors_them():
    """The published order (ema.md §2.6): complete every image's labels, then mix. Images 0 and
    1 of a batch of two are mixed into row 0; row 1 is left unmixed."""
    method = EMATeacherPseudoLabels(
        teacher_config(), method_harness.SyntheticTrainingData().info, None, None
    )
    # Pseudo labels by image (N = 3, C = 4), 0 on each image's known entries (known labels win).
    method_state = {"pseudo_labels": jnp.array([[0, -1, 1, 0], [1, 0, 0, -1], [1, 1, 1, 1]])}
    batch = {
        "image": jnp.array([[0.0], [2.0]]),
        "labels": jnp.array([[1, 0, 0, -1], [0, 0, -1, 0]], jnp.float32),
        "complete_labels": jnp.array([[1, -1, 1, -1], [1, 1, -1, -1]], jnp.float32),
        "index": jnp.array([0, 1]),
        "mask": jnp.ones(2),
    }
    completed = train.training_batch(method, method_state, batch)
    assert completed["labels"].tolist() == [[1, -1, 1, -1], [1, 0, -1, -1]]
    assert completed[PARTIAL_LABELS].tolist() == batch["labels"].tolist()

    partners, used = jnp.array([[0, 1], [1, 0]]), jnp.array([[True, True], [True, False]])
    mixed = logicmix.mix_batch(completed, partners, used)
    # Row 0, class by class: 1 OR 1, -1 OR 0, 1 OR -1, -1 OR -1 (logicmix.md §1's table).
    assert mixed["labels"].tolist() == [[1, 0, 1, -1], [1, 0, -1, -1]]
    assert mixed[PARTIAL_LABELS].tolist() == [[1, 0, 0, 0], [0, 0, -1, 0]]
    assert mixed["complete_labels"].tolist() == [[1, 1, 1, -1], [1, 1, -1, -1]]
    assert mixed["image"].tolist() == [[1.0], [2.0]]
    # Mixing first and filling from row 0's own image would give [1, -1, 1, 0].

    # Pseudo labels on the mixed rows: unknown in the mixed partial labels, known in the
    # mixed training labels. Row 0: +1 at class 2 (hidden +1), -1 at class 3 (hidden -1),
    # unknowns hidden +1 at 1, 2 and -1 at 3; row 1: +1 at 0 (hidden +1), -1 at 3 (hidden -1),
    # unknowns hidden +1 at 0, 1 and -1 at 3.
    seen = {key: value for key, value in mixed.items() if key != train.HIDDEN_LABELS}
    scalars, _ = method.diagnostics({}, method_state, seen, mixed["complete_labels"], CTX)
    assert {k: float(v) for k, v in scalars.items()} == {
        "pseudo_positives": 2.0,
        "pseudo_positives_true": 2.0,
        "pseudo_negatives": 2.0,
        "pseudo_negatives_true": 2.0,
        "unknown_hidden_positives": 4.0,
        "unknown_hidden_negatives": 2.0,
    }


def test_the_train_step_mixes_the_labels_completed_by_the_pseudo_labels():
    """Through the real step with every row mixed with one partner: each row the loss sees has
    the OR of its own and its partner's completed labels, the partner read off the mixed image
    (the mean of the two)."""
    config = teacher_config()
    config.logicmix.update(probability=1.0, min_images=2, max_images=2)
    data = method_harness.SyntheticTrainingData()
    method, optimizer, state = method_harness.build(EMATeacherPseudoLabels, config, data)
    rng = np.random.default_rng(0)
    table = rng.integers(-1, 2, data.info.train_partial_labels.shape).astype(np.int8)
    table[data.info.train_partial_labels != 0] = 0
    state = state.replace(method_state={"pseudo_labels": table})
    loss = method.loss

    def recording_loss(variables, method_state, batch, ctx):
        value, aux = loss(variables, method_state, batch, ctx)
        seen = {"seen_labels": batch["labels"], "seen_images": batch["image"]}
        return value, aux.replace(metrics={**aux.metrics, **seen})

    method.loss = recording_loss  # the step calls the instance's loss
    step = jax.jit(train.make_train_step(method, optimizer, method_harness.STEPS_PER_EPOCH))
    batch = data.batch(0)
    _, scalars = step(state, batch)
    images = batch["image"].reshape(len(batch["image"]), -1)  # (B, D)
    seen_images = np.asarray(scalars["seen_images"]).reshape(images.shape)
    # The partner j of row r: 2 m - x_r = x_j, up to the rounding of the float32 mean m (u |m|,
    # doubled) and of the subtraction (u |x_j|): 1.5 eps max|x| at most, u = eps / 2.
    distances = np.abs((2 * seen_images - images)[:, None, :] - images[None, :, :]).max(-1)
    partners = distances.argmin(axis=1)  # (B,)
    bound = 1.5 * method_harness.F32_EPS * np.abs(images).max()
    assert np.all(distances[np.arange(len(images)), partners] <= bound)
    completed = np.where(batch["labels"] != 0, batch["labels"], table[batch["index"]])  # (B, C)
    pairs = np.stack([completed, completed[partners]], axis=1)  # (B, 2, C)
    expected = logicmix.logical_or_labels(jnp.asarray(pairs), jnp.ones((len(images), 2), bool))
    np.testing.assert_array_equal(scalars["seen_labels"], expected)
    assert scalars["logicmix_fraction"] == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decay": 0.0}, "set config.ema.decay > 0"),
        ({"positive_logit": -1.0}, "negative_logit <= 0 <= positive_logit"),
        ({"negative_logit": 0.5}, "negative_logit <= 0 <= positive_logit"),
        ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
    ],
)
def test_option_errors(change, message):
    section = {k: v for k, v in change.items() if k != "decay"}
    config = teacher_config(**section)
    if "decay" in change:
        config.ema.decay = change["decay"]
    with pytest.raises(ValueError, match=message):
        EMATeacherPseudoLabels(config, method_harness.SyntheticTrainingData().info, None, None)


def test_dry_run_runs_the_teacher_pass(tmp_path):
    config = with_method_sections(tiny_digit_config("ema_teacher", batch_size=8, epochs=20))
    config.ema.decay = 0.999
    result = dry_run.run(config, str(tmp_path), steps=1)
    assert result["epoch"] == 7 and result["epoch_start_hook_s"] > 0
    assert np.isfinite(result["loss"]) and not result["last_step_skipped"]
