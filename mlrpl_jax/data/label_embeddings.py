"""Frozen per-class word embeddings E (C, D_w) queried by semantic decoupling (docs/methods/problem_and_data.md §3.2).

Three sources: a GloVe text file (multi-word class names averaged), a (C, D_w) ``.npy`` array
as in the authors' data bundle, or seeded random unit vectors when no embedding file is at hand.
"""
import os
import re
from collections.abc import Sequence

import numpy as np
from etils import epath

EMBEDDING_KINDS = ("glove", "npy", "random")

_WORD_SEPARATORS = re.compile(r"[\s_\-]+")

# Class names written as one token that GloVe does not know, and the words looked up instead
# (VOC 2007's compound names). Every other COCO, VOC and VG-200 name splits into GloVe words.
GLOVE_SPELLINGS = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
}


def class_name_words(class_name: str) -> list[str]:
    """Lower-cased words of a class name split on spaces, underscores and hyphens.

    Names in GLOVE_SPELLINGS are first replaced by their spelling ('tvmonitor' -> tv, monitor).
    """
    name = class_name.strip().lower()
    words = [w for w in _WORD_SEPARATORS.split(GLOVE_SPELLINGS.get(name, name)) if w]
    if not words:
        raise ValueError(f"class name {class_name!r} contains no word to look up an embedding for.")
    return words


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """Returns the class names as a list after checking it is a non-empty sequence of strings."""
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise TypeError(
            f"class_names must be a sequence of strings (one per class), got {class_names!r}."
        )
    if not class_names:
        raise ValueError("class_names is empty: pass one name per class, in class-index order.")
    return list(class_names)


def _existing_file(path: str | os.PathLike, what: str) -> epath.Path:
    """Returns path (local or gs://) as a Path after checking it is an existing file."""
    file = epath.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} file not found: {str(file)!r}; check the embedding path.")
    return file


def _read_glove_vectors(file: epath.Path, words: set[str]) -> dict[str, np.ndarray]:
    """Streams a GloVe text file and returns the float64 vectors of the requested words.

    Each line is a word followed by its floats, whitespace separated. The first occurrence of a
    word wins; reading stops as soon as every requested word is found. A few lines of the
    840B release contain spaces inside the word; they never equal a single class-name word.
    """
    wanted = {w.encode("utf-8"): w for w in words}
    found: dict[str, np.ndarray] = {}
    dim = None
    with file.open("rb") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if dim is None:
                dim = len(fields) - 1
            if fields[0] not in wanted or wanted[fields[0]] in found:
                continue
            if len(fields) - 1 != dim:
                if len(fields) - 1 > dim:
                    continue
                raise ValueError(
                    f"malformed GloVe line {line_number} in {str(file)!r}: word "
                    f"{wanted[fields[0]]!r} has {len(fields) - 1} values, expected {dim} like "
                    f"the first line."
                )
            found[wanted[fields[0]]] = np.array(fields[1:], dtype=np.float64)
            if len(found) == len(wanted):
                break
    return found


def load_glove_embeddings(path: str | os.PathLike, class_names: Sequence[str]) -> np.ndarray:
    """Float32 (C, D_w) embeddings: row c = mean of the GloVe vectors of class c's words.

    Class names are lower-cased and split on spaces, underscores and hyphens ("dining_table" ->
    mean of "dining" and "table"), as reportedly done in SSGRL (docs/methods/problem_and_data.md §3.2). Words match
    the file's words exactly, so a cased file (840B) contributes its lower-case entries.
    """
    file = _existing_file(path, "GloVe")
    names = _check_class_names(class_names)
    words_per_class = [class_name_words(name) for name in names]
    needed = {w for words in words_per_class for w in words}
    vectors = _read_glove_vectors(file, needed)
    lacking = [f"{name!r} (missing: {', '.join(w for w in words if w not in vectors)})"
               for name, words in zip(names, words_per_class) if not set(words) <= vectors.keys()]
    if lacking:
        raise ValueError(
            f"{len(lacking)} class name(s) have words that GloVe file {str(file)!r} lacks: "
            f"{'; '.join(lacking)}. Rename those classes or use a file that contains them."
        )
    rows = [np.mean([vectors[w] for w in words], axis=0) for words in words_per_class]
    return np.stack(rows).astype(np.float32)  # (C, D_w)


def random_embeddings(num_classes: int, dim: int = 300, seed: int = 0) -> np.ndarray:
    """Float32 (C, dim) rows e_c = sqrt(dim) z_c / |z_c|, z_c ~ N(0, I) from default_rng(seed).

    Our no-download fallback: every class gets a distinct, fixed, deterministic query vector.
    Rows have norm sqrt(dim) (unit RMS entries): with PyTorch's default init of the word
    projection P_2 (§4.3), P_2 e_c then has entries of order 1 as with GloVe vectors, so the
    attention is not flat at initialisation (unit-norm rows left it uniform for epochs).
    """
    if num_classes < 1 or dim < 1:
        raise ValueError(
            f"random_embeddings needs num_classes >= 1 and dim >= 1, got num_classes="
            f"{num_classes}, dim={dim}."
        )
    gaussian = np.random.default_rng(seed).standard_normal((num_classes, dim))  # (C, dim)
    rows = gaussian / np.linalg.norm(gaussian, axis=1, keepdims=True) * np.sqrt(dim)
    return rows.astype(np.float32)


def _load_npy_embeddings(path: str | os.PathLike, num_classes: int) -> np.ndarray:
    """Float32 (C, D_w) array from a .npy file, checked against the class count."""
    file = _existing_file(path, "Embedding .npy")
    with file.open("rb") as f:
        array = np.load(f, allow_pickle=False)
    if array.ndim != 2 or array.shape[0] != num_classes:
        raise ValueError(
            f"embedding array in {str(file)!r} has shape {array.shape}, expected "
            f"({num_classes}, D_w): one row per class, in class-index order."
        )
    return array.astype(np.float32)


def build_label_embeddings(
    kind: str,
    class_names: Sequence[str],
    *,
    path: str | os.PathLike | None = None,
    dim: int = 300,
    seed: int = 0,
) -> np.ndarray:
    """Float32 (C, D_w) label embeddings of the given kind ('glove', 'npy' or 'random').

    'glove' and 'npy' read ``path`` (their width comes from the file); 'random' uses ``dim``
    and ``seed`` and ignores ``path``.
    """
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"embedding kind must be one of {EMBEDDING_KINDS}, got {kind!r}.")
    if kind == "random":
        return random_embeddings(len(_check_class_names(class_names)), dim, seed)
    if path is None:
        raise ValueError(f"embedding kind {kind!r} needs a file: pass path=...")
    if kind == "glove":
        return load_glove_embeddings(path, class_names)
    return _load_npy_embeddings(path, len(_check_class_names(class_names)))
