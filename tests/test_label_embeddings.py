"""Label embeddings: GloVe parsing and averaging, .npy, random fallback (docs/methods/problem_and_data.md §3.2)."""

import numpy as np
import pytest

from mlrpl_jax.data.label_embeddings import (
    build_label_embeddings,
    class_name_words,
    load_glove_embeddings,
    random_embeddings,
)

GLOVE_WORDS = {
    "the": [9.0, 9.0, 9.0],
    "Dining": [-7.0, -7.0, -7.0],
    "dining": [1.0, 2.0, 3.0],
    "table": [3.0, 0.0, -1.0],
    "potted": [0.5, 0.5, 0.5],
    "plant": [1.5, -0.5, 2.5],
    "tv": [0.25, 0.125, -4.0],
    "cat": [-1.0, 0.0, 1.0],
}


@pytest.fixture
def glove_file(tmp_path):
    lines = [f"{w} " + " ".join(repr(x) for x in vec) for w, vec in GLOVE_WORDS.items()]
    lines.insert(3, ". . . 4.0 4.0 4.0")  # 840B-style words containing spaces
    lines.insert(4, "cat food 5.0 5.0 5.0")
    lines.append("cat 100.0 100.0 100.0")
    path = tmp_path / "glove.tiny.3d.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_class_name_words_split_and_lowercase():
    assert class_name_words("Dining_Table") == ["dining", "table"]
    assert class_name_words(" potted-plant ") == ["potted", "plant"]
    assert class_name_words("hair drier") == ["hair", "drier"]
    with pytest.raises(ValueError, match="no word"):
        class_name_words(" _- ")


def test_glove_averages_multiword_names_with_lowercase_lookup(glove_file):
    names = ["Dining_Table", "potted plant", "TV", "cat", "pottedplant-tv"]
    with pytest.raises(ValueError, match="pottedplant"):
        load_glove_embeddings(glove_file, names)
    names[-1] = "Potted-TV"
    emb = load_glove_embeddings(glove_file, names)
    assert emb.dtype == np.float32 and emb.shape == (5, 3)
    g = {w: np.array(v) for w, v in GLOVE_WORDS.items()}
    expected = np.stack(
        [
            (g["dining"] + g["table"]) / 2,
            (g["potted"] + g["plant"]) / 2,
            g["tv"],
            g["cat"],  # first occurrence wins over the later duplicate line
            (g["potted"] + g["tv"]) / 2,
        ]
    )
    np.testing.assert_array_equal(emb, expected.astype(np.float32))


def test_glove_missing_words_listed_with_file(glove_file):
    with pytest.raises(ValueError) as err:
        load_glove_embeddings(glove_file, ["cat", "hair drier", "zebra"])
    message = str(err.value)
    assert "'hair drier' (missing: hair, drier); 'zebra' (missing: zebra)" in message
    assert str(glove_file) in message


def test_glove_malformed_line_reported(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("the 1 2 3\ncat 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2 .* 'cat' has 2 values, expected 3"):
        load_glove_embeddings(path, ["cat"])


def test_random_embeddings_deterministic_unit_rms_distinct():
    emb = random_embeddings(6, dim=16, seed=7)
    assert emb.dtype == np.float32 and emb.shape == (6, 16)
    np.testing.assert_array_equal(emb, random_embeddings(6, dim=16, seed=7))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 4.0, rtol=1e-6)  # sqrt(16)
    gaussian = np.random.default_rng(7).standard_normal((6, 16))
    np.testing.assert_allclose(
        emb, 4.0 * gaussian / np.linalg.norm(gaussian, axis=1, keepdims=True), rtol=1e-6
    )
    assert len({row.tobytes() for row in emb}) == 6
    assert not np.array_equal(emb, random_embeddings(6, dim=16, seed=8))
    with pytest.raises(ValueError, match="num_classes >= 1"):
        random_embeddings(0)


def test_build_random_ignores_path_and_uses_class_count():
    emb = build_label_embeddings("random", ["a", "b", "c"], dim=5, seed=1, path="unused.npy")
    np.testing.assert_array_equal(emb, random_embeddings(3, 5, 1))
    assert build_label_embeddings("random", ["a", "b"]).shape == (2, 300)


def test_build_npy_checks_shape(tmp_path):
    path = tmp_path / "voc07_vector.npy"
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.save(path, array)
    emb = build_label_embeddings("npy", ["a", "b", "c"], path=path)
    assert emb.dtype == np.float32
    np.testing.assert_array_equal(emb, array.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(3, 4\), expected \(2, D_w\)"):
        build_label_embeddings("npy", ["a", "b"], path=path)


def test_build_glove_matches_loader(glove_file):
    np.testing.assert_array_equal(
        build_label_embeddings("glove", ["cat", "tv"], path=str(glove_file)),
        load_glove_embeddings(glove_file, ["cat", "tv"]),
    )


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match=r"one of \('glove', 'npy', 'random'\), got 'word2vec'"):
        build_label_embeddings("word2vec", ["a"])
    with pytest.raises(ValueError, match="needs a file"):
        build_label_embeddings("glove", ["a"])
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        build_label_embeddings("npy", ["a"], path=tmp_path / "missing.npy")
    with pytest.raises(TypeError, match="sequence of strings"):
        build_label_embeddings("random", "cat")
    with pytest.raises(ValueError, match="class_names is empty"):
        build_label_embeddings("random", [])
    with pytest.raises(FileNotFoundError, match="glove.txt"):
        load_glove_embeddings(tmp_path / "glove.txt", ["a"])
