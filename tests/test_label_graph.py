"""Label adjacency against the reference's graph file and the VOC fixtures of docs/methods/problem_and_data.md §3.1."""

import pathlib

import numpy as np
import pytest

from mlrpl_jax.data.label_graph import classes_without_known_positive, label_adjacency
from mlrpl_jax.data.partial_labels import make_partial_labels

VOC_DIR = pathlib.Path(__file__).resolve().parent / "data" / "voc2007_partial_labels"
CHAIR, PERSON = 8, 14
# docs/methods/problem_and_data.md §3.1: p -> (sum of A, A[person, chair], A[chair, person]).
VOC_GRAPH_FIXTURES = {
    0.1: (21.123427, 0.009901, 0.047619),
    0.5: (27.085258, 0.036816, 0.171296),
    0.9: (32.611620, 0.068409, 0.317010),
}


@pytest.fixture(scope="module")
def voc_train_labels() -> np.ndarray:
    return np.loadtxt(VOC_DIR / "original-labels_train.txt", delimiter=",", dtype=np.int8)


def test_nan_mode_equals_reference_exactly(vectors):
    v = vectors("graph_file")
    graph = label_adjacency(v["labels"], empty_class_rows="nan")
    assert graph.dtype == np.float32 and graph.shape == (8, 8)
    np.testing.assert_array_equal(graph, v["graph"].astype(np.float32))
    assert np.isnan(graph[6]).all()


def test_zero_mode_clears_empty_rows_and_keeps_the_rest(vectors):
    v = vectors("graph_file")
    graph = label_adjacency(v["labels"])
    reference = v["graph"].astype(np.float32)
    np.testing.assert_array_equal(classes_without_known_positive(v["labels"]), [6])
    np.testing.assert_array_equal(graph[6], np.zeros(8, np.float32))
    others = np.arange(8) != 6
    np.testing.assert_array_equal(graph[others], reference[others])
    assert np.isfinite(graph).all()


def test_matches_naive_conditional_frequencies():
    labels = np.random.default_rng(3).choice([-1, 0, 1], size=(30, 5))
    graph = label_adjacency(labels)
    for i in range(5):
        given_i = labels[:, i] == 1
        for j in range(5):
            expected = np.mean(labels[given_i, j] == 1)
            assert graph[i, j] == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("ratio", sorted(VOC_GRAPH_FIXTURES))
def test_voc_fixtures_from_generated_partial_labels(voc_train_labels, ratio):
    partial = make_partial_labels(voc_train_labels, ratio)
    graph = label_adjacency(partial)
    total, person_chair, chair_person = VOC_GRAPH_FIXTURES[ratio]
    assert classes_without_known_positive(partial).size == 0
    np.testing.assert_array_equal(graph, label_adjacency(partial, empty_class_rows="nan"))
    assert graph.sum(dtype=np.float64) == pytest.approx(total, abs=1e-6)
    assert graph[PERSON, CHAIR] == pytest.approx(person_chair, abs=1e-6)
    assert graph[CHAIR, PERSON] == pytest.approx(chair_person, abs=1e-6)
    np.testing.assert_array_equal(np.diag(graph), np.ones(20, np.float32))


def test_diagonal_is_one_exactly_for_nonempty_classes():
    labels = np.array([[1, 0, -1, 1], [1, -1, 0, 0], [0, 0, -1, 1]])
    graph = label_adjacency(labels)
    np.testing.assert_array_equal(classes_without_known_positive(labels), [1, 2])
    np.testing.assert_array_equal(np.diag(graph), [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(graph[0], [1.0, 0.0, 0.0, 0.5])
    np.testing.assert_array_equal(graph[3], [0.5, 0.0, 0.0, 1.0])


def test_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"one of \('zero', 'nan'\), got 'drop'"):
        label_adjacency(np.ones((2, 2)), empty_class_rows="drop")


def test_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"found 2 at \(row 1, class 0\)"):
        label_adjacency(np.array([[1, 0], [2, -1]]))
    with pytest.raises(ValueError, match=r"2-D"):
        classes_without_known_positive(np.ones(3))
