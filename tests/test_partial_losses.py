"""The partial-label baseline losses (mlrpl_jax/methods/partial_losses/loss_functions.py) against
mlcpl 0.1.7 (PyPI, the PyTorch library of the LogicMix/CFT author), whose outputs and autograd
gradients are generated here on small random inputs; weak assume-negative, which mlcpl lacks,
against a NumPy computation. Each registered loss method then trains on the tiny synthetic
setup without ever seeing the hidden labels.

Tolerances (float32, eps = 2^-23): every per-entry term is a log of a probability computed to a
few ulps in both libraries (log σ(z) in mlcpl, log_sigmoid here), i.e. an absolute error of a
few eps, times a focusing weight <= 1 whose own relative error of a few eps/(1 - p) is offset by
the weight's size; the mean of n such terms in another order differs by at most n eps relative
(Higham, §4.2). Hence |ours - theirs| <= n eps |L| + TERM_ATOL with TERM_ATOL = 16 eps, and for
gradients, where each entry is one term divided by the count, TERM_ATOL / n.
"""

import jax
import jax.numpy as jnp
import method_harness
import numpy as np
import pytest
from mlcpl_modules import import_mlcpl

from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.partial_losses import loss_functions as lf

EPS = float(np.finfo(np.float32).eps)
TERM_ATOL = 16 * EPS
BATCH, CLASSES = 6, 7


def random_inputs(seed, unknown_share=0.5):
    """Logits in (-4, 4) and partial labels with about `unknown_share` unknowns, (B, C) each."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-4, 4, (BATCH, CLASSES)).astype(np.float32)
    labels = np.where(rng.random((BATCH, CLASSES)) < 0.3, 1.0, -1.0)
    labels[rng.random((BATCH, CLASSES)) < unknown_share] = 0.0
    return logits, labels.astype(np.float32)


def mlcpl_targets(torch, labels):
    """mlcpl's encoding: 1 positive, 0 negative, NaN unknown."""
    return torch.tensor(np.where(labels == 0, np.nan, labels > 0).astype(np.float32))


def torch_value_and_grad(torch, loss_fn, logits):
    z = torch.tensor(logits, requires_grad=True)
    value = loss_fn(z)
    value.backward()
    return value.item(), z.grad.numpy()


def assert_parity(ours_fn, theirs, logits):
    value, grad = jax.value_and_grad(ours_fn)(jnp.asarray(logits))
    n = logits.size
    np.testing.assert_allclose(float(value), theirs[0], rtol=n * EPS, atol=TERM_ATOL)
    np.testing.assert_allclose(np.asarray(grad), theirs[1], rtol=n * EPS, atol=TERM_ATOL / n)


@pytest.mark.parametrize("seed", [0, 1])
def test_assume_negative_bce_matches_mlcpl(seed):
    torch, losses = import_mlcpl("losses")
    logits, labels = random_inputs(seed)
    loss = losses.PartialNegativeBCEWithLogitLoss()
    theirs = torch_value_and_grad(torch, lambda z: loss(z, mlcpl_targets(torch, labels)), logits)
    assert_parity(lambda z: lf.assume_negative_bce(z, labels), theirs, logits)


@pytest.mark.parametrize("assume_negative", [False, True])
@pytest.mark.parametrize(
    "gamma_pos, gamma_neg, clip", [(0.0, 4.0, 0.05), (1.0, 2.0, 0.2), (0.0, 0.0, 0.0)]
)
def test_asymmetric_losses_match_mlcpl(assume_negative, gamma_pos, gamma_neg, clip):
    torch, losses = import_mlcpl("losses")
    logits, labels = random_inputs(2)
    factory = (
        losses.PartialNegativeAsymmetricWithLogitLoss
        if assume_negative
        else losses.PartialAsymmetricWithLogitLoss
    )
    loss = factory(clip=clip, gamma_pos=gamma_pos, gamma_neg=gamma_neg)
    theirs = torch_value_and_grad(torch, lambda z: loss(z, mlcpl_targets(torch, labels)), logits)
    assert_parity(
        lambda z: lf.partial_asymmetric_loss(
            z,
            labels,
            gamma_pos=gamma_pos,
            gamma_neg=gamma_neg,
            clip=clip,
            assume_negative=assume_negative,
        ),
        theirs,
        logits,
    )


@pytest.mark.parametrize("likelihood_topk", [0, 1, 2])
def test_selective_loss_matches_mlcpl(likelihood_topk):
    torch, losses = import_mlcpl("losses")
    logits, labels = random_inputs(3)
    prior = np.linspace(0.0, 0.3, CLASSES).astype(np.float32)  # 3 of 7 classes above 0.12
    loss = losses.PartialSelectiveAsymmetricWithLogitLoss(
        clip=0.05,
        gamma_pos=0.0,
        gamma_neg=4.0,
        label_priors=torch.tensor(prior),
        likelihood_topk=likelihood_topk,
        prior_threshold=0.12,
    )
    theirs = torch_value_and_grad(torch, lambda z: loss(z, mlcpl_targets(torch, labels)), logits)
    assert_parity(
        lambda z: lf.selective_asymmetric_loss(
            z,
            labels,
            prior,
            gamma_pos=0.0,
            gamma_neg=4.0,
            clip=0.05,
            prior_threshold=0.12,
            likelihood_topk=likelihood_topk,
        ),
        theirs,
        logits,
    )


@pytest.mark.parametrize("correct", [False, True])
@pytest.mark.parametrize("num_modified", [0, 1, 5])
def test_large_loss_rejection_and_correction_match_mlcpl(correct, num_modified):
    """mlcpl modifies the unknown losses strictly above its k-th largest, k = round(n_u x rate),
    that is k - 1 of them (none in epoch 0); we modify round(n_u x rate). So mlcpl runs at
    k = num_modified + 1 and we at num_modified."""
    torch, losses = import_mlcpl("losses")
    logits, labels = random_inputs(4)
    num_unknown = int(np.sum(labels == 0))
    loss_class = losses.LargeLossCorrectionTemporary if correct else losses.LargeLossRejection
    loss = loss_class(delta_rel=100.0 * (num_modified + 1) / num_unknown)  # percent, at epoch 1
    theirs = torch_value_and_grad(
        torch, lambda z: loss(z, mlcpl_targets(torch, labels), epoch=1), logits
    )
    assert_parity(
        lambda z: lf.large_loss_modified(z, labels, num_modified / num_unknown, correct=correct),
        theirs,
        logits,
    )


def test_weak_assume_negative_matches_numpy():
    logits, labels = random_inputs(5)
    gamma = 1.0 / (CLASSES - 1)
    z = logits.astype(np.float64)
    positive, negative = np.logaddexp(0.0, -z), np.logaddexp(0.0, z)  # -log p, -log(1 - p)
    weight = np.where(labels == 0, gamma, 1.0)
    expected = np.mean(np.where(labels > 0, positive, weight * negative))
    expected_grad = (
        np.where(labels > 0, -1.0 / (1.0 + np.exp(z)), weight / (1.0 + np.exp(-z))) / z.size
    )
    value, grad = jax.value_and_grad(
        lambda x: lf.weak_assume_negative_bce(x, labels, unknown_weight=gamma)
    )(logits)
    np.testing.assert_allclose(float(value), expected, rtol=z.size * EPS, atol=TERM_ATOL)
    np.testing.assert_allclose(
        np.asarray(grad), expected_grad, rtol=z.size * EPS, atol=TERM_ATOL / z.size
    )
    assert float(lf.weak_assume_negative_bce(logits, labels, unknown_weight=1.0)) == float(
        lf.assume_negative_bce(logits, labels)
    )


def test_soft_partial_asl_mixes_the_two_terms_by_the_target_probability():
    """Soft targets y in [-1, 1] (SARB's blended ones): q = y or 1 + y weighs l+ against l-,
    against float64 NumPy; hard targets give partial ASL to the bit (q is exactly 0 or 1)."""
    logits, labels = random_inputs(6)
    soft = labels * np.random.default_rng(6).uniform(0.2, 1.0, labels.shape).astype(np.float32)
    z = logits.astype(np.float64)
    q = np.where(soft > 0, soft, 1.0 + soft)
    p = 1.0 / (1.0 + np.exp(-z))
    shifted = np.maximum(p - 0.05, 0.0)
    positive, negative = -np.log(p), -(shifted**4) * np.log(1.0 - shifted)
    selected = soft != 0
    expected = np.sum(np.where(selected, q * positive + (1 - q) * negative, 0)) / selected.sum()
    asl = dict(gamma_pos=0.0, gamma_neg=4.0, clip=0.05)
    value = lf.soft_partial_asymmetric_loss(logits, soft, **asl)
    np.testing.assert_allclose(float(value), expected, rtol=z.size * EPS, atol=TERM_ATOL)
    assert float(lf.soft_partial_asymmetric_loss(logits, labels, **asl)) == float(
        lf.partial_asymmetric_loss(logits, labels, **asl, assume_negative=False)
    )
    # Without focusing or margin it is BCE of the soft targets: gradient (σ(z) - q) / n.
    bce = dict(gamma_pos=0.0, gamma_neg=0.0, clip=0.0)
    grad = jax.grad(lambda x: lf.soft_partial_asymmetric_loss(x, soft, **bce))(logits)
    n = selected.sum()
    expected_grad = np.where(selected, p - q, 0) / n
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=n * EPS, atol=TERM_ATOL / n)


def test_class_prior_is_the_known_positive_rate_and_needs_a_known_label():
    labels = np.array([[1, -1, 0], [0, -1, 0], [1, 1, 0], [-1, 0, 0]], np.float32)
    with pytest.raises(ValueError, match=r"classes \[2\] have no known training label"):
        lf.known_label_class_prior(labels)
    labels[0, 2] = -1
    np.testing.assert_array_equal(
        lf.known_label_class_prior(labels), np.array([2 / 3, 1 / 3, 0.0], np.float32)
    )


def test_large_loss_rate_grows_by_delta_rel_percent_per_epoch_up_to_one():
    rates = [float(lf.large_loss_rejection_rate(epoch, 30.0)) for epoch in (0, 1, 3, 4)]
    np.testing.assert_allclose(rates, [0.0, 0.3, 0.9, 1.0], rtol=EPS)


# Options that make every mechanism act on the tiny batches (8 x 6 entries, ~24 unknown):
# LL modifies 20 % of the unknowns in epoch 1, the selective loss ignores 1 likely positive per
# image.
PARTIAL_LOSS_METHODS = {
    "assume_negative": {},
    "weak_assume_negative": {},
    "partial_asl": {},
    "assume_negative_asl": {},
    "selective_loss": {"likelihood_topk": 1},
    "ll_r": {"delta_rel": 20.0},
    "ll_ct": {"delta_rel": 20.0},
}


@pytest.mark.parametrize("name", sorted(PARTIAL_LOSS_METHODS))
def test_each_partial_loss_method_trains(name):
    # That no loss reads the hidden labels is checked for every registered method, these
    # included, by tests/test_hidden_labels.py (the step strips them before the loss).
    config = method_harness.tiny_config(name, **PARTIAL_LOSS_METHODS[name])
    data = method_harness.SyntheticTrainingData()
    method, optimizer, host_state = method_harness.build(get_method_class(name), config, data)
    runner = method_harness.Runner(method, optimizer, data, jax.devices()[:1])
    state, history = runner.run(runner.replicate(host_state), 2 * method_harness.STEPS_PER_EPOCH)
    assert all(
        np.isfinite(h["loss"]) and h["loss"] > 0 and h["skipped_update"] == 0 for h in history
    )
    head_before = jax.device_get(host_state.params["head"])
    head_after = jax.device_get(state.params["head"])
    assert any(
        np.any(a != b) for a, b in zip(jax.tree.leaves(head_before), jax.tree.leaves(head_after))
    )
    if name.startswith("ll_"):
        assert [float(h["modified_share"]) for h in history] == pytest.approx([0, 0, 0.2, 0.2])
