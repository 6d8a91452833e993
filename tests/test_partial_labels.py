"""Partial-label generation against the authors' released VOC 2007 files and reference vectors;
the single-positive and per-category protocols by their counts and against mlcpl 0.1.7."""

import hashlib
import pathlib
import types

import numpy as np
import pytest
from mlcpl_modules import import_mlcpl_dataset_core

from mlrpl_jax.data.partial_labels import (
    drop_labels,
    known_label_mask,
    make_partial_labels,
    one_positive_labels,
    per_category_labels,
)

VOC_DIR = pathlib.Path(__file__).resolve().parent / "data" / "voc2007_partial_labels"
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# docs/methods/problem_and_data.md §1.2: known positives, known negatives, SHA-256 of the int8 C-order array.
VOC_PARTIAL_TABLE = {
    0.1: (740, 9368, "a164bec4f9f70c4a4c4cbef3aff0f10aba2384db36da49821ed2ff9e563215ff"),
    0.2: (1461, 18739, "8131857689f7a4768212c33fa93b73c96dd632eaedb554bdce84a84defbcbd57"),
    0.3: (2187, 27976, "1e6a48ca2e985d459bd3f9c77f229df22e88dcc6883ff795207b7dcb5b634041"),
    0.4: (2923, 37144, "72b2c80d6c1bf2c613d0f80bdeb735cc44c4906981be54fc1a54fe0dcd48fb59"),
    0.5: (3674, 46489, "26709807dd2a288ea7b2c859accc4a24e4fcff7f9723d7d5ff1712ec2e0a168b"),
    0.6: (4429, 55855, "e853aa8e62949aaca092cb1dfe15a887554ed4a50f9d820cc3cbd378930492e3"),
    0.7: (5158, 64970, "86ca264bf84a83236f66f682d6d21d380f70502ac231fbdba063ea8fad9d499f"),
    0.8: (5871, 74261, "f2e6459582f1f629f4b68becf2cf1f3ae33e03a8691e81a6b4679786af8ff3e9"),
    0.9: (6558, 83616, "f039e07dfa48a92b771ea02c520d798fb9bd513f3b49a32bd69d0c50dc9b9b6c"),
}
VOC_KNOWN_COUNTS = (10108, 20200, 30163, 40067, 50163, 60284, 70128, 80132, 90174)
COCO_SHAPE = (82783, 80)
COCO_KNOWN_COUNTS = (
    662191,
    1324207,
    1986704,
    2648135,
    3310164,
    3973592,
    4635408,
    5299597,
    5960741,
)
FIRST_DRAWS = (0.5488135, 0.71518937, 0.60276338, 0.54488318, 0.4236548)


def _read_label_file(name: str) -> np.ndarray:
    return np.loadtxt(VOC_DIR / name, delimiter=",", dtype=np.int8)


def _sha256(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int8).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def voc_train_labels() -> np.ndarray:
    return _read_label_file("original-labels_train.txt")


@pytest.fixture(scope="module")
def coco_uniform() -> np.ndarray:
    """Independent oracle: the reference's single draw for COCO's shape."""
    return np.random.RandomState(0).random_sample(COCO_SHAPE)


def test_voc_complete_labels_match_documented_checksums(voc_train_labels):
    assert voc_train_labels.shape == (5011, 20)
    assert int((voc_train_labels == 1).sum()) == 7306
    assert _sha256(voc_train_labels) == (
        "8721abf07b3e566fded41d219a19e8b819deaf33e781c994dcab8475a4ac3f3b"
    )
    test_labels = _read_label_file("original-labels_val.txt")
    assert test_labels.shape == (4952, 20)
    assert int((test_labels == 1).sum()) == 7013
    assert _sha256(make_partial_labels(test_labels, 1.0)) == (
        "1a22cf9d0f1eeff6fc8cfc2c15d4abded0d9905976057eccdd6db5bac434f893"
    )


@pytest.mark.parametrize("ratio", RATIOS)
def test_reproduces_released_voc_partial_labels(voc_train_labels, ratio):
    released = _read_label_file(f"partial-labels_train_proportion_{ratio}.txt")
    ours = make_partial_labels(voc_train_labels, ratio)
    assert ours.dtype == np.int8 and ours.shape == (5011, 20)
    np.testing.assert_array_equal(ours, released)
    positives, negatives, digest = VOC_PARTIAL_TABLE[ratio]
    assert int((ours == 1).sum()) == positives
    assert int((ours == -1).sum()) == negatives
    assert _sha256(ours) == digest


def test_first_stream_values_order_the_mask():
    draws = np.random.RandomState(0).random_sample(5)
    np.testing.assert_allclose(draws, FIRST_DRAWS, rtol=0, atol=5e-9)
    order = np.argsort(FIRST_DRAWS)
    thresholds = np.sort(FIRST_DRAWS)
    midpoints = (thresholds[:-1] + thresholds[1:]) / 2
    for k, ratio in enumerate(midpoints, start=1):
        expected = np.zeros(5, dtype=bool)
        expected[order[:k]] = True
        np.testing.assert_array_equal(known_label_mask((1, 5), float(ratio))[0], expected)


def test_known_counts_for_voc_shape():
    counts = [int(known_label_mask((5011, 20), p).sum()) for p in RATIOS]
    assert counts == list(VOC_KNOWN_COUNTS)


def test_known_counts_for_coco_shape(coco_uniform):
    assert [int((coco_uniform < p).sum()) for p in RATIOS] == list(COCO_KNOWN_COUNTS)
    np.testing.assert_array_equal(known_label_mask(COCO_SHAPE, 0.5), coco_uniform < 0.5)


def test_masks_are_nested_across_ratios():
    masks = [known_label_mask((300, 20), p) for p in RATIOS + (1.0,)]
    for smaller, larger in zip(masks, masks[1:]):
        assert np.all(larger[smaller])
        assert larger.sum() > smaller.sum()
    assert masks[-1].all()


def test_complete_ratio_returns_int8_copy_unchanged():
    labels = np.array([[1, -1, -1], [-1, 1, 1]], dtype=np.float64)
    out = make_partial_labels(labels, 1.0)
    assert out.dtype == np.int8
    np.testing.assert_array_equal(out, labels)
    labels_int8 = labels.astype(np.int8)
    out_int8 = make_partial_labels(labels_int8, 1)
    assert not np.shares_memory(out_int8, labels_int8)


def test_global_numpy_rng_untouched():
    np.random.seed(1234)
    expected = np.random.random(4)
    np.random.seed(1234)
    make_partial_labels(np.ones((7, 3)), 0.5)
    known_label_mask((7, 3), 0.3)
    np.testing.assert_array_equal(np.random.random(4), expected)


@pytest.mark.parametrize("ratio", (0.1, 0.5, 0.9))
def test_matches_reference_vectors(vectors, ratio):
    v = vectors("partial_labels")
    tag = f"p{round(ratio * 100):03d}"
    mask = known_label_mask(v["labels"].shape, ratio)
    np.testing.assert_array_equal(mask, v[f"mask_{tag}"])
    np.testing.assert_array_equal(make_partial_labels(v["labels"], ratio), v[f"changed_{tag}"])
    for dataset, shape in (("coco_train2014", COCO_SHAPE), ("voc2007_trainval", (5011, 20))):
        mask = known_label_mask(shape, ratio)
        assert int(mask.sum()) == int(v[f"{dataset}_{tag}_kept_count"])
        np.testing.assert_array_equal(mask[:4], v[f"{dataset}_{tag}_first_rows"])
        np.testing.assert_array_equal(mask.sum(axis=1), v[f"{dataset}_{tag}_row_kept_counts"])


@pytest.mark.parametrize("ratio", (0.0, -0.1, 1.5, float("nan"), float("inf")))
def test_rejects_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match=r"\(0, 1\].*1\.0 means complete labels"):
        make_partial_labels(np.ones((2, 2)), ratio)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        known_label_mask((2, 2), ratio)


@pytest.mark.parametrize("ratio", ("0.5", True, None))
def test_rejects_non_numeric_ratio(ratio):
    with pytest.raises(TypeError, match=r"number in \(0, 1\]"):
        make_partial_labels(np.ones((2, 2)), ratio)


def test_rejects_unknown_entry_in_complete_labels():
    labels = np.array([[1, -1, 1], [-1, 0, 1]])
    message = r"found 0 at \(row 1, class 1\).*0/unknown is not allowed"
    with pytest.raises(ValueError, match=message):
        make_partial_labels(labels, 0.5)


def test_rejects_out_of_range_value_and_wrong_rank():
    with pytest.raises(ValueError, match=r"found 2 at \(row 0, class 2\)"):
        make_partial_labels(np.array([[1, -1, 2]]), 1.0)
    with pytest.raises(ValueError, match=r"2-D .* got shape \(3,\)"):
        make_partial_labels(np.array([1, -1, 1]), 0.5)


def _random_complete_labels(seed: int, shape=(300, 7), positive_rate=0.25) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(shape) < positive_rate, 1, -1).astype(np.int8)
    labels[0] = -1  # an image without any positive
    return labels


def test_one_positive_keeps_exactly_one_true_positive_per_image_with_positives():
    complete = _random_complete_labels(0)
    partial = one_positive_labels(complete, seed=3)
    has_positive = (complete > 0).any(axis=1)
    assert partial.dtype == np.int8 and not (partial < 0).any()  # no known negative
    np.testing.assert_array_equal(np.count_nonzero(partial, axis=1), has_positive.astype(int))
    assert (complete[partial > 0] == 1).all()  # only true positives are kept


def test_one_positive_draws_each_positive_of_an_image_uniformly():
    # 30,000 images whose positives are classes 1, 3 and 4: each is kept with probability 1/3,
    # so its count is Binomial(30000, 1/3), sd = sqrt(30000 * 2/9) = 81.6; allow 5 sd.
    complete = np.tile(np.array([-1, 1, -1, 1, 1], np.int8), (30000, 1))
    counts = np.count_nonzero(one_positive_labels(complete, seed=0), axis=0)
    assert counts[[0, 2]].tolist() == [0, 0]
    np.testing.assert_allclose(counts[[1, 3, 4]], 10000, atol=5 * 81.7)


@pytest.mark.parametrize("labels_per_category", [40, 200])
def test_per_category_keeps_the_same_number_of_positives_and_negatives_per_class(
    labels_per_category,
):
    complete = _random_complete_labels(1)
    partial = per_category_labels(complete, labels_per_category, seed=5)
    num_positive = np.count_nonzero(complete > 0, axis=0)  # about 75 per class
    num_negative = np.count_nonzero(complete < 0, axis=0)
    expected = np.minimum(np.minimum(num_positive, num_negative), labels_per_category // 2)
    np.testing.assert_array_equal(np.count_nonzero(partial > 0, axis=0), expected)
    np.testing.assert_array_equal(np.count_nonzero(partial < 0, axis=0), expected)
    known = partial != 0
    np.testing.assert_array_equal(partial[known], complete[known])  # signs of the truth
    if labels_per_category == 200:  # 100 > every class's positives: all of them are kept
        np.testing.assert_array_equal(expected, num_positive)


@pytest.mark.parametrize("protocol, parameter", [("one_positive", 0), ("per_category", 40)])
def test_seeded_protocols_are_deterministic_and_follow_the_seed(protocol, parameter):
    complete = _random_complete_labels(2)

    def draw(seed):
        return drop_labels(
            complete, protocol, known_ratio=1.0, labels_per_category=parameter, seed=seed
        )

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


def test_elementwise_protocol_is_the_authors_mask_whatever_the_seed(voc_train_labels):
    for seed in (0, 9):
        partial = drop_labels(
            voc_train_labels, "elementwise", known_ratio=0.3, labels_per_category=0, seed=seed
        )
        assert _sha256(partial) == VOC_PARTIAL_TABLE[0.3][2]


def _as_records(labels: np.ndarray) -> list[tuple]:
    """mlcpl's records: (id, path, positive classes, negative classes) per image."""
    return [
        (i, "", np.flatnonzero(row > 0).tolist(), np.flatnonzero(row < 0).tolist())
        for i, row in enumerate(labels)
    ]


def _from_records(records: list[tuple], shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.int8)
    for i, _, positives, negatives in records:
        labels[i, positives] = 1
        labels[i, negatives] = -1
    return labels


@pytest.mark.parametrize("seed", [0, 526])
def test_protocols_equal_mlcpl_label_drops(seed):
    core = import_mlcpl_dataset_core()
    complete = _random_complete_labels(3)
    dataset = types.SimpleNamespace(records=_as_records(complete), num_categories=complete.shape[1])
    core.MLCPLDataset.drop_labels_single_positive(dataset, seed=seed)
    np.testing.assert_array_equal(
        one_positive_labels(complete, seed), _from_records(dataset.records, complete.shape)
    )
    for labels_per_category in (40, 200):
        dataset.records = _as_records(complete)
        core.MLCPLDataset.drop_labels_fix_per_category(dataset, labels_per_category, seed=seed)
        np.testing.assert_array_equal(
            per_category_labels(complete, labels_per_category, seed),
            _from_records(dataset.records, complete.shape),
        )


@pytest.mark.parametrize(
    "protocol, known_ratio, parameter, message",
    [
        ("random", 1.0, 0, "label_drop must be one of elementwise, one_positive, per_category"),
        ("one_positive", 0.5, 0, "set known_ratio=1.0"),
        ("per_category", 1.0, 0, "even integer >= 2"),
        ("per_category", 1.0, 5, "even integer >= 2"),
        ("elementwise", 0.5, 10, "applies only to label_drop='per_category'"),
    ],
)
def test_label_drop_rejects_parameters_that_do_not_fit_the_protocol(
    protocol, known_ratio, parameter, message
):
    with pytest.raises(ValueError, match=message):
        drop_labels(
            _random_complete_labels(4),
            protocol,
            known_ratio=known_ratio,
            labels_per_category=parameter,
            seed=0,
        )
