"""LogicMix (mlrpl_jax/logicmix.py, docs/methods/logicmix.md): the OR rule on hand cases and
against mlcpl, the image weights, the random plan, the config checks and the train step
(mixing reaches the loss, is deterministic and resumes exactly)."""

import itertools

import jax
import jax.numpy as jnp
import method_harness
import numpy as np
import pytest
from mlcpl_modules import import_mlcpl
from tiny_config import get_config

from mlrpl_jax import logicmix
from mlrpl_jax.config import ConfigError, base_config, validate_config
from mlrpl_jax.core import checkpointing
from mlrpl_jax.methods import get_method_class

POS, UNK, NEG = 1.0, 0.0, -1.0


@pytest.mark.parametrize(
    "a,b,expected",
    [
        (POS, POS, POS),
        (POS, UNK, POS),
        (POS, NEG, POS),
        (UNK, POS, POS),
        (NEG, POS, POS),
        (NEG, NEG, NEG),
        (NEG, UNK, UNK),
        (UNK, NEG, UNK),
        (UNK, UNK, UNK),
    ],
)
def test_two_images_or_rule(a, b, expected):
    labels = jnp.array([[[a], [b]]])  # (B=1, K=2, C=1)
    assert float(logicmix.logical_or_labels(labels, jnp.array([[True, True]]))[0, 0]) == expected


def test_unused_columns_do_not_count():
    # Row 0 mixes 2 of 3 columns: the unused positive / unknown in column 2 are ignored.
    labels = jnp.array(
        [[[NEG, NEG], [NEG, UNK], [POS, UNK]], [[NEG, NEG], [NEG, NEG], [NEG, POS]]]
    )  # (2, 3, 2)
    used = jnp.array([[True, True, False], [True, True, True]])
    np.testing.assert_array_equal(
        logicmix.logical_or_labels(labels, used), [[NEG, UNK], [NEG, POS]]
    )


def test_or_rule_matches_mlcpl():
    """Every combination of 3 labels from {+1, unknown, -1}, against mlcpl's logic_mix_target
    (unknown = NaN, negative = 0 there)."""
    torch, augs = import_mlcpl("augs.logic_mix")
    combos = np.array(list(itertools.product([POS, UNK, NEG], repeat=3)), np.float32)  # (27, 3)
    ours = logicmix.logical_or_labels(jnp.asarray(combos.T[None]), jnp.ones((1, 3), bool))[0]
    theirs = augs.logic_mix_target(
        torch.tensor(np.where(combos.T == UNK, np.nan, (combos.T > 0).astype(np.float32)))
    )
    theirs = theirs.numpy()
    expected = np.where(np.isnan(theirs), UNK, np.where(theirs > 0, POS, NEG))
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("image_shape", [(4, 4, 3), (5, 7), ()])
def test_mixed_rows_are_the_mean_of_their_images(image_shape):
    """Any image shape (pixels, (HW, D) feature maps, scalars). The mean of k float32 values
    in float32 (k products and k - 1 sums) is within 2k float32 epsilons of the exact mean
    relative to the largest |value|."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4,) + image_shape).astype(np.float32)
    labels = np.array([[POS, NEG, NEG], [NEG, NEG, UNK], [UNK, NEG, NEG], [NEG, POS, NEG]])
    complete = np.array([[1, -1, -1], [-1, -1, 1], [1, -1, -1], [-1, 1, -1]], np.float32)
    batch = {
        "image": images,
        "labels": labels,
        "complete_labels": complete,
        "index": np.arange(4, dtype=np.int32) + 10,
        "mask": np.ones(4, np.float32),
    }
    partners = jnp.array([[0, 3, 1], [1, 0, 0], [2, 2, 2], [3, 1, 2]])
    used = jnp.array(
        [[True, True, True], [True, False, False], [True, True, False], [True, True, False]]
    )
    out = jax.device_get(logicmix.mix_batch(batch, partners, used))
    bound = 2 * 3 * np.finfo(np.float32).eps * np.abs(images).max()
    for row, rows in ((0, [0, 3, 1]), (3, [3, 1])):
        np.testing.assert_allclose(
            out["image"][row], images[rows].mean(0, dtype=np.float64), atol=bound
        )
    np.testing.assert_array_equal(out["image"][1], images[1])  # unmixed: untouched
    np.testing.assert_array_equal(out["image"][2], images[2])  # mixed with itself only
    np.testing.assert_array_equal(
        out["labels"], [[POS, POS, UNK], labels[1], labels[2], [NEG, POS, UNK]]
    )
    np.testing.assert_array_equal(
        out["complete_labels"], [[1, 1, 1], complete[1], complete[2], [-1, 1, 1]]
    )
    np.testing.assert_array_equal(out["index"], batch["index"])
    np.testing.assert_array_equal(out["mask"], batch["mask"])


def test_plan_draws_real_partners_and_counts_in_range():
    batch_size, probability = 2048, 0.5
    mask = jnp.ones(batch_size).at[-96:].set(0.0)  # a padded tail
    partners, used = logicmix.mixing_plan(jax.random.PRNGKey(3), mask, probability, 2, 4)
    partners, used = np.asarray(partners), np.asarray(used)
    np.testing.assert_array_equal(partners[:, 0], np.arange(batch_size))
    assert (partners[:, 1:] < batch_size - 96).all()  # partners are real rows only
    mixed = used[:, 1:].any(1)
    assert not mixed[-96:].any()
    counts = used.sum(1)[mixed]
    assert set(counts) == {2, 3, 4} and (used.sum(1)[~mixed] == 1).all()
    # Mixed share of the 1952 real rows: binomial, standard deviation sqrt(p(1-p)/n) = 0.011;
    # 5 of them bound a correct sampler's miss with probability < 1e-6.
    assert abs(mixed.sum() / 1952 - probability) < 5 * np.sqrt(0.25 / 1952)
    again = logicmix.mixing_plan(jax.random.PRNGKey(3), mask, probability, 2, 4)
    np.testing.assert_array_equal(again[0], partners)


def test_off_by_default_and_passes_the_batch_through():
    batch = {"image": np.zeros((2, 3)), "mask": np.ones(2)}
    mixed, scalars = logicmix.batch_mixer(base_config().logicmix)(batch, jax.random.PRNGKey(0))
    assert mixed is batch and scalars == {}


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("sst", {"probability": 0.5}, "method 'sst' cannot train on LogicMix"),
        ("satl", {"probability": 0.5}, "method 'satl' cannot train on LogicMix"),
        ("baseline", {"probability": 1.5}, "logicmix.probability must be in"),
        ("baseline", {"probability": 0.5, "min_images": 1}, "2 <= min_images <= max_images"),
        ("baseline", {"probability": 0.5, "min_images": 4, "max_images": 3}, "2 <= min_images"),
    ],
)
def test_config_errors(method, options, message):
    config = get_config(method)
    config.logicmix.update(options)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_config_accepts_methods_that_support_it():
    # ema_teacher: its pseudo labels join each image's labels before the mix (logicmix.md §4).
    for method in ("baseline", "hst", "sarb", "partial_asl", "ema_teacher"):
        config = get_config(method)
        config.logicmix.probability = 0.5
        validate_config(config)


def _runner(probability):
    config = method_harness.tiny_config("baseline")
    config.logicmix.update(probability=probability, min_images=2, max_images=3)
    data = method_harness.SyntheticTrainingData()
    method, optimizer, state = method_harness.build(get_method_class("baseline"), config, data)
    runner = method_harness.Runner(method, optimizer, data, jax.devices())
    return runner, runner.replicate(state), state  # (runner, on the mesh, on the host)


def test_train_step_mixes_deterministically_and_resumes_exactly(tmp_path):
    runner, state, host_state = _runner(probability=0.5)
    plain_runner, plain_state, _ = _runner(probability=0.0)
    _, plain_history = plain_runner.run(plain_state, 1)
    uninterrupted, history = runner.run(state, 4)  # donates `state`
    assert all(0.0 <= h["logicmix_fraction"] <= 1.0 for h in history)
    assert max(h["logicmix_fraction"] for h in history) > 0
    assert "logicmix_fraction" not in plain_history[0]
    assert history[0]["loss"] != plain_history[0]["loss"]  # the loss saw the mixed batch

    half, _ = runner.run(runner.replicate(host_state), 2)
    saver = checkpointing.Checkpointer(str(tmp_path), keep_last=1, keep_best=0, async_save=False)
    saver.save(2, half, {})
    restored, _ = saver.restore(2, runner.replicate(host_state))
    saver.close()
    resumed, resumed_history = runner.run(restored, 2)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in history[2:]]
    method_harness.assert_trees_close(resumed, uninterrupted, rtol=0, atol=0)
