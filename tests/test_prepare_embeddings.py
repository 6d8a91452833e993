"""The label-embedding command (mlrpl_jax.tools.prepare_embeddings) on small generated GloVe
files, and the COCO class order that its rows and the partial-label masks assume."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mlrpl_jax.data import coco2014, voc2007
from mlrpl_jax.data.label_embeddings import class_name_words
from mlrpl_jax.tools.prepare_embeddings import dataset_class_names, prepare_embeddings

ROOT = pathlib.Path(__file__).resolve().parent.parent

# COCO's own category ids of a few names (instances_*2014.json 'categories'), ids with gaps.
COCO_IDS = {
    "person": 1,
    "bicycle": 2,
    "traffic light": 10,
    "stop sign": 13,
    "backpack": 27,
    "bottle": 44,
    "wine glass": 46,
    "dining table": 67,
    "toilet": 70,
    "tv": 72,
    "hair drier": 89,
    "toothbrush": 90,
}


def word_vector(word: str, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(sum(map(ord, word)) * 31 + len(word)).normal(size=dim)


def write_glove(path: pathlib.Path, class_names, skip: str = "") -> pathlib.Path:
    """A GloVe text file with a vector for every word of class_names (but `skip`), plus one more."""
    words = sorted({w for name in class_names for w in class_name_words(name)} - {skip}) + ["the"]
    path.write_text("".join(f"{w} {' '.join(f'{v:.6f}' for v in word_vector(w))}\n" for w in words))
    return path


def expected_row(name: str) -> np.ndarray:
    return np.mean([np.round(word_vector(w), 6) for w in class_name_words(name)], axis=0)


def test_coco_class_order_is_the_rank_of_the_category_id():
    assert len(coco2014.CLASS_NAMES) == len(set(coco2014.CATEGORY_IDS)) == 80
    assert list(coco2014.CATEGORY_IDS) == sorted(coco2014.CATEGORY_IDS)
    assert (coco2014.CLASS_NAMES[0], coco2014.CLASS_NAMES[-1]) == ("person", "toothbrush")
    for name, category_id in COCO_IDS.items():
        assert coco2014.CATEGORY_IDS[coco2014.CLASS_NAMES.index(name)] == category_id, name
    shuffled = [{"id": i, "name": n} for i, n in zip(coco2014.CATEGORY_IDS, coco2014.CLASS_NAMES)][
        ::-1
    ]
    assert coco2014.category_index(shuffled) == {i: k for k, i in enumerate(coco2014.CATEGORY_IDS)}


def test_coco_embeddings_follow_the_class_order(tmp_path):
    glove = write_glove(tmp_path / "glove.txt", coco2014.CLASS_NAMES)
    embeddings = prepare_embeddings("coco2014", str(glove), str(tmp_path / "out" / "coco.npy"))
    assert embeddings.shape == (80, 4) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "coco.npy"), embeddings)
    for name in ("person", "traffic light", "hair drier", "toothbrush"):
        np.testing.assert_allclose(
            embeddings[coco2014.CLASS_NAMES.index(name)], expected_row(name), rtol=1e-6
        )


def test_prepared_dataset_decides_the_order(tmp_path):
    """A coco2014 built with the authors' category.json records its class order; --data_dir uses it."""
    version_dir = tmp_path / "data" / "coco2014" / "1.0.0"
    version_dir.mkdir(parents=True)
    (version_dir / "dataset_info.json").write_text("{}")
    (version_dir / "metadata.json").write_text(
        json.dumps({"class_names": coco2014.CLASS_NAMES[::-1]})
    )
    assert dataset_class_names("coco2014", str(tmp_path / "data")) == coco2014.CLASS_NAMES[::-1]
    glove = write_glove(tmp_path / "glove.txt", coco2014.CLASS_NAMES)
    embeddings = prepare_embeddings(
        "coco2014", str(glove), str(tmp_path / "coco.npy"), str(tmp_path / "data")
    )
    np.testing.assert_allclose(embeddings[0], expected_row("toothbrush"), rtol=1e-6)


def test_voc_compound_names_and_missing_words(tmp_path):
    glove = write_glove(tmp_path / "glove.txt", voc2007.CLASS_NAMES, skip="monitor")
    with pytest.raises(ValueError, match=r"1 class name\(s\).*'tvmonitor' \(missing: monitor\)"):
        prepare_embeddings("voc2007", str(glove), str(tmp_path / "voc.npy"))
    assert not (tmp_path / "voc.npy").exists()
    glove = write_glove(tmp_path / "glove.txt", voc2007.CLASS_NAMES)
    embeddings = prepare_embeddings("voc2007", str(glove), str(tmp_path / "voc.npy"))
    np.testing.assert_allclose(
        embeddings[voc2007.CLASS_NAMES.index("diningtable")],
        expected_row("dining table"),
        rtol=1e-6,
    )


def test_inputs_are_checked_before_reading(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        prepare_embeddings("voc2007", str(tmp_path / "absent.txt"), str(tmp_path / "voc.npy"))
    glove = write_glove(tmp_path / "glove.txt", voc2007.CLASS_NAMES)
    with pytest.raises(ValueError, match=r"must end in \.npy"):
        prepare_embeddings("voc2007", str(glove), str(tmp_path / "voc.txt"))
    with pytest.raises(ValueError, match="--data_dir of the prepared dataset"):
        prepare_embeddings("vg200", str(glove), str(tmp_path / "vg.npy"))


def test_command_line(tmp_path):
    glove = write_glove(tmp_path / "glove.txt", voc2007.CLASS_NAMES)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlrpl_jax.tools.prepare_embeddings",
            "--dataset=voc2007",
            f"--glove={glove}",
            f"--output={tmp_path / 'voc.npy'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "--config.embeddings.path=" in result.stdout
        and "--config.embeddings.dim=4" in result.stdout
    )
    assert np.load(tmp_path / "voc.npy").shape == (20, 4)
