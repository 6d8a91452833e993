"""SST/HST pseudo labels, the positive-feature bank and the HST prototype loss
(docs/methods/sst.md §6.2, §6.3, §7.2, §7.4, §13 items 14 and 16)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cosine_oracle import cosine_similarity
from reference_torch_layout import (
    bank_rows_newest_first,
    co_positive_adjacency,
    positive_bank_from_newest_first,
)

from mlrpl_jax.methods.semantic_transfer.pseudo_labels import (
    hst_binary_pseudo_labels,
    hst_inter_scores,
    hst_intra_scores,
    init_positive_bank,
    mean_cooccurrence_with_known_positives,
    mean_cosine_to_class_rows,
    positive_bank_update,
    prototype_loss,
    sst_inter_pseudo_labels,
    sst_intra_pseudo_labels,
)
from mlrpl_jax.pairs import pair_indices


def _loop_mean_cooccurrence(pair_logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Oracle for p̄ of §6.2 with explicit loops."""
    batch, classes = targets.shape
    sigmoid = 1.0 / (1.0 + np.exp(-pair_logits.astype(np.float64)))
    first, second = pair_indices(classes)
    scores = np.zeros((batch, classes))
    for b in range(batch):
        matrix = np.eye(classes)
        matrix[first, second] = matrix[second, first] = sigmoid[b]
        positive = targets[b] == 1
        scores[b] = matrix[:, positive].sum(axis=1) / max(positive.sum(), 1)
    return scores


def test_mean_cooccurrence_against_a_loop(vectors):
    v = vectors("sst_pseudo_labels")
    scores = mean_cooccurrence_with_known_positives(v["intra_cooccurrence"], v["target"])
    np.testing.assert_allclose(
        scores, _loop_mean_cooccurrence(v["intra_cooccurrence"], v["target"]), rtol=1e-6
    )
    assert np.all(np.asarray(scores)[2] == 0.0)  # no known positive -> 0


@pytest.mark.parametrize("margin", ["050", "075", "095"])
def test_sst_intra_pseudo_labels_match_reference(vectors, margin):
    v = vectors("sst_pseudo_labels")
    labels = jax.jit(sst_intra_pseudo_labels)(
        v["intra_cooccurrence"], v["target"], int(margin) / 100
    )
    np.testing.assert_array_equal(labels, v[f"intra_pseudo_m{margin}"])


def test_sst_thresholding_has_no_pseudo_labels_at_margin_one_and_no_gradient(vectors):
    v = vectors("sst_pseudo_labels")
    logits = v["intra_cooccurrence"].copy()
    logits[3] = 30.0  # σ = 1 in float32: p̄ = 1 for every class of the last image
    np.testing.assert_array_equal(sst_intra_pseudo_labels(logits, v["target"], 1.0), v["target"])
    assert np.all(np.asarray(sst_intra_pseudo_labels(logits, v["target"], 0.9999))[3] != 0)
    grad = jax.grad(lambda x: jnp.sum(sst_intra_pseudo_labels(x, v["target"], 0.5)))(
        jnp.asarray(logits)
    )
    assert not np.any(np.asarray(grad))


def test_mean_cosine_to_class_rows_matches_pytorch_convention(vectors):
    v = vectors("sst_pseudo_labels")
    semantic, rows = v["inter_feature"], v["inter_pos_feature"].copy()
    scores = mean_cosine_to_class_rows(semantic, rows)
    np.testing.assert_allclose(scores, v["inter_mean_cos_helper"], rtol=1e-5, atol=1e-6)
    rows[:, 3:] = 0.0  # empty bank slots: similarity 0, still counted in the mean
    oracle = np.asarray(cosine_similarity(semantic[:, :, None, :], rows[None])).mean(axis=-1)
    np.testing.assert_allclose(
        mean_cosine_to_class_rows(semantic, rows), oracle, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("margin", ["050", "075", "095"])
def test_sst_inter_pseudo_labels_match_reference(vectors, margin):
    v = vectors("sst_pseudo_labels")
    labels = sst_inter_pseudo_labels(
        v["inter_feature"], v["inter_target"], v["inter_pos_feature"], int(margin) / 100
    )
    np.testing.assert_array_equal(labels, v[f"inter_pseudo_m{margin}"])


def _row_multiset(rows: np.ndarray) -> list[tuple[float, ...]]:
    return sorted(tuple(row) for row in np.asarray(rows).tolist())


def _prepend_and_truncate(
    bank: np.ndarray, semantic: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """The reference's bank update, as an oracle."""
    updated = np.empty_like(bank)
    for c in range(bank.shape[0]):
        newest = semantic[targets[:, c] == 1, c]
        updated[c] = np.concatenate([newest, bank[c]])[: bank.shape[1]]
    return updated


def test_positive_bank_matches_three_reference_updates(vectors):
    # The file stores the bank after the LAST call under all three call*/bank_after keys (the
    # harness kept a reference to one mutated tensor), so intermediate states are checked
    # against the prepend-and-truncate oracle below and the final one against the reference.
    v = vectors("sst_update_feature")
    bank = init_positive_bank(num_classes=4, size=3, dim=5)
    oracle = np.zeros((4, 3, 5), np.float32)
    update = jax.jit(positive_bank_update)
    for call in range(3):
        semantic, targets = v[f"call{call}/feature"], v[f"call{call}/target"]
        bank = update(bank, semantic, targets)
        oracle = _prepend_and_truncate(oracle, semantic, targets)
        np.testing.assert_array_equal(bank_rows_newest_first(bank), oracle)
    reference = v["call2/bank_after"]
    for c in range(4):
        assert _row_multiset(bank["rows"][c]) == _row_multiset(reference[c])
    np.testing.assert_array_equal(bank_rows_newest_first(bank), reference)


@pytest.mark.parametrize("batch, size", [(7, 3), (2, 5), (6, 6)])
def test_positive_bank_equals_prepend_and_truncate_for_any_batch_size(batch, size):
    rng = np.random.default_rng(batch * 10 + size)
    classes, dim = 4, 3
    bank, reference = (
        init_positive_bank(classes, size, dim),
        np.zeros((classes, size, dim), np.float32),
    )
    update = jax.jit(positive_bank_update)
    for _ in range(5):
        semantic = rng.normal(size=(batch, classes, dim)).astype(np.float32)
        targets = rng.choice([-1.0, 0.0, 1.0], p=[0.2, 0.2, 0.6], size=(batch, classes)).astype(
            np.float32
        )
        bank = update(bank, semantic, targets)
        reference = _prepend_and_truncate(reference, semantic, targets)
        np.testing.assert_array_equal(bank_rows_newest_first(bank), reference)
    assert bank["rows"].shape == (classes, size, dim) and bank["next_slot"].dtype == jnp.int32


def test_sst_head_step_bank_and_pseudo_labels(vectors):
    v = vectors("sst_head")
    targets, semantic = v["target"], v["train/forward/semantic_feature"]
    bank = positive_bank_from_newest_first(v["posFeature_before"])
    np.testing.assert_array_equal(bank_rows_newest_first(bank), v["posFeature_before"])
    bank = positive_bank_update(bank, semantic, targets)
    for c in range(80):
        assert _row_multiset(bank["rows"][c]) == _row_multiset(v["posFeature_after"][c])
    np.testing.assert_array_equal(bank_rows_newest_first(bank), v["posFeature_after"])

    inter = sst_inter_pseudo_labels(semantic, targets, bank["rows"], v["hp/interBCEMargin"])
    np.testing.assert_array_equal(inter, v["train/crit/InterBCELoss/0/arg1"])
    intra = sst_intra_pseudo_labels(
        v["train/forward/intra_cooccurrence"], targets, v["hp/intraBCEMargin"]
    )
    np.testing.assert_array_equal(intra, v["train/crit/IntraBCELoss/0/arg1"])
    assert np.sum(np.asarray(inter) != targets) > 0 and np.sum(np.asarray(intra) != targets) > 0


@pytest.mark.parametrize("margin", ["030", "060", "100"])
def test_hst_intra_scores_match_reference(vectors, margin):
    v = vectors("hst_losses")
    scores = hst_intra_scores(v["intra_cooccurrence"], v["target"], int(margin) / 100)
    np.testing.assert_allclose(scores, v[f"intra_pseudo_m{margin}"], rtol=1e-5, atol=1e-6)


def test_hst_intra_scores_gradients_wrt_cooccurrence_and_margin(vectors):
    v = vectors("hst_losses")

    def objective(pair_logits, margin):
        return jnp.sum(hst_intra_scores(pair_logits, v["target"], margin) * v["cot/intra"])

    margin = jnp.float32(0.45)
    np.testing.assert_allclose(
        hst_intra_scores(v["intra_cooccurrence"], v["target"], margin),
        v["intra_pseudo_mtensor045"],
        rtol=1e-5,
        atol=1e-6,
    )
    grad_logits, grad_margin = jax.grad(objective, argnums=(0, 1))(
        jnp.asarray(v["intra_cooccurrence"]), margin
    )
    np.testing.assert_allclose(grad_logits, v["grad/intra_cooccurrence"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_margin, v["grad/intra_margin"], rtol=1e-5)


def test_hst_margin_gradient_at_the_clip_boundary():
    # One known positive: p̄ = 1 for it, so p̄ - m = 0 at m = 1 sits on the boundary (§7.2, §13.16).
    targets = jnp.asarray([[1.0, 0.0, -1.0]])
    pair_logits = jnp.zeros((1, 3))
    grad = jax.grad(lambda m: hst_intra_scores(pair_logits, targets, m)[0, 0])(jnp.float32(1.0))
    assert grad == -1.0


@pytest.mark.parametrize("margin", ["000", "050", "090"])
def test_hst_inter_scores_match_reference(vectors, margin):
    v = vectors("hst_losses")
    scores = hst_inter_scores(v["inter_feature"], v["inter_prototype"], int(margin) / 100)
    np.testing.assert_allclose(scores, v[f"inter_pseudo_m{margin}"], rtol=1e-5, atol=1e-6)


def test_hst_inter_scores_gradients_wrt_features_and_margin(vectors):
    v = vectors("hst_losses")

    def objective(semantic, margin):
        return jnp.sum(hst_inter_scores(semantic, v["inter_prototype"], margin) * v["cot/inter"])

    margin = jnp.float32(0.35)
    np.testing.assert_allclose(
        hst_inter_scores(v["inter_feature"], v["inter_prototype"], margin),
        v["inter_pseudo_mtensor035"],
        rtol=1e-5,
        atol=1e-6,
    )
    grad_semantic, grad_margin = jax.grad(objective, argnums=(0, 1))(
        jnp.asarray(v["inter_feature"]), margin
    )
    np.testing.assert_allclose(grad_semantic, v["grad/inter_feature"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_margin, v["grad/inter_margin"], rtol=1e-5)


def test_hst_binary_pseudo_labels_are_strict_and_only_for_unknowns():
    targets = jnp.asarray([[0.0, 0.0, -1.0, 1.0, 0.0]])
    scores = jnp.asarray([[0.0, 1e-7, 0.5, 0.0, 0.3]])
    np.testing.assert_array_equal(
        hst_binary_pseudo_labels(scores, targets), [[0.0, 1.0, -1.0, 1.0, 1.0]]
    )
    grad = jax.grad(lambda s: jnp.sum(hst_binary_pseudo_labels(s, targets)))(scores)
    assert not np.any(np.asarray(grad))


def test_prototype_loss_matches_reference_and_paper_sign(vectors):
    v = vectors("hst_losses")
    semantic, targets, prototypes = (
        jnp.asarray(v["inter_feature"]),
        v["inter_target"],
        v["inter_prototype"],
    )
    loss, grad = jax.value_and_grad(prototype_loss)(semantic, targets, prototypes)
    np.testing.assert_allclose(loss, v["proto_contrastive_mean"], rtol=1e-5)
    np.testing.assert_allclose(loss * targets.size, v["proto_contrastive_sum"], rtol=1e-5)
    np.testing.assert_allclose(
        grad, v["grad/proto_contrastive_mean_wrt_feature"], rtol=1e-4, atol=1e-7
    )

    similarity = mean_cosine_to_class_rows(semantic, prototypes)  # δ (B, C)
    elementwise = v["proto_contrastive_elem"]
    np.testing.assert_allclose(1.0 + targets * similarity, elementwise, rtol=1e-5, atol=1e-6)
    paper = prototype_loss(semantic, targets, prototypes, sign="paper")
    np.testing.assert_allclose(
        paper, np.mean(2.0 - elementwise), rtol=1e-5
    )  # 1 - tδ = 2 - (1 + tδ)
    with pytest.raises(ValueError, match="sign"):
        prototype_loss(semantic, targets, prototypes, sign="other")


def test_hst_head_step_scores_and_pseudo_labels(vectors):
    v = vectors("hst_head")
    targets, semantic, prototypes = v["target"], v["train/forward/semantic_feature"], v["prototype"]
    criterion = {
        key.removeprefix("train/crit/"): value
        for key, value in v.items()
        if key.startswith("train/crit/")
    }
    intra = hst_intra_scores(v["train/forward/intra_cooccurrence"], targets, v["param/intraMargin"])
    inter = hst_inter_scores(semantic, prototypes, v["param/interMargin"])
    np.testing.assert_allclose(intra, criterion["BCELoss/3/arg0"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inter, criterion["BCELoss/4/arg0"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        hst_binary_pseudo_labels(intra, targets), criterion["BCELoss/1/arg1"]
    )
    np.testing.assert_array_equal(
        hst_binary_pseudo_labels(inter, targets), criterion["BCELoss/2/arg1"]
    )
    np.testing.assert_allclose(
        prototype_loss(semantic, targets, prototypes),
        criterion["InterPrototypeDistanceLoss/0/out"],
        rtol=1e-5,
    )


def test_co_positive_adjacency_matches_reference(vectors):
    v = vectors("inter_adj_matrix")
    adjacency = co_positive_adjacency(v["target"])
    assert adjacency.shape == (6, 4, 4)
    np.testing.assert_array_equal(adjacency, v["adj"])
