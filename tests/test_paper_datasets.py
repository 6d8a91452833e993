"""Builders of the paper datasets (COCO 2014, VOC 2007, VG-200) on tiny raw trees in the official layouts.

Every tree is generated here (a few 1x1..8x8 JPEGs); nothing is downloaded. Expected labels are
written down independently of the builders' parsing code.
"""

import io
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from mlrpl_jax.data import builder_common, coco2014, datasets, voc2007
from mlrpl_jax.data.partial_labels import make_partial_labels
from mlrpl_jax.data.pipeline import DatasetNotPreparedError, PartialLabelData

VOC_GOLDEN = pathlib.Path(__file__).resolve().parent / "data" / "voc2007_partial_labels"


@pytest.fixture(autouse=True, scope="module")
def _quiet_tfds():
    tfds.display_progress_bar(False)


def jpeg_bytes(value: int, size: int = 1) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value % 256, 0, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def read_split(data_dir: pathlib.Path, tfds_name: str, split: str) -> list[dict]:
    """Records of a prepared split, sorted by 'index'."""
    (version_dir,) = (data_dir / tfds_name).iterdir()
    builder = tfds.builder_from_directory(version_dir)
    source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    return sorted(source, key=lambda r: int(r["index"]))


def labels_of(records: list[dict]) -> np.ndarray:
    return np.stack([np.asarray(r["labels"]) for r in records])


def ids_of(records: list[dict]) -> list[str]:
    return [
        r["image_id"].decode() if isinstance(r["image_id"], bytes) else r["image_id"]
        for r in records
    ]


# ----------------------------------------------------------------------------- VOC 2007


def voc_xml(objects: list[tuple[str, int]]) -> str:
    body = "".join(
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
        f"<ymax>2</ymax></bndbox></object>"
        for name, difficult in objects
    )
    return f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>{body}</annotation>"


def write_voc_tree(
    root: pathlib.Path, splits: dict[str, list[tuple[str, list[tuple[str, int]]]]]
) -> None:
    """VOCdevkit/VOC2007 with ImageSets/Main/<split>.txt, Annotations, JPEGImages."""
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("ImageSets/Main", "Annotations", "JPEGImages"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    image = jpeg_bytes(7)
    for split, rows in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i, _ in rows))
        for image_id, objects in rows:
            (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(objects))
            (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(image)


def voc_objects_for(labels: np.ndarray) -> list[tuple[str, int]]:
    """Objects encoding a complete ±1 label row, plus a difficult object of the first negative class."""
    objects = [(voc2007.CLASS_NAMES[c], 0) for c in np.flatnonzero(labels > 0)]
    negatives = np.flatnonzero(labels < 0)
    if negatives.size:
        objects.append((voc2007.CLASS_NAMES[negatives[0]], 1))
    return objects


VOC_TRAINVAL = [  # deliberately not sorted: 'index' must follow the list order
    ("000012", [("car", 0), ("person", 0), ("dog", 1)]),
    ("000005", [("chair", 0), ("chair", 1), ("diningtable", 1)]),
    ("000009", [("horse", 0), ("person", 0), ("person", 1)]),
]
VOC_TEST = [
    ("000001", [("dog", 0), ("person", 0)]),
    ("000002", [("train", 0), ("tvmonitor", 1)]),
]


def _voc_row(positives=(), ignored=()):
    row = np.full(20, -1, np.int8)
    row[[voc2007.CLASS_NAMES.index(n) for n in positives]] = 1
    row[[voc2007.CLASS_NAMES.index(n) for n in ignored]] = 0
    return row


@pytest.fixture(scope="module")
def voc_data(tmp_path_factory):
    raw = tmp_path_factory.mktemp("voc_raw")
    write_voc_tree(raw, {"trainval": VOC_TRAINVAL, "test": VOC_TEST})
    data_dir = tmp_path_factory.mktemp("voc_data")
    datasets.prepare_dataset("voc2007", str(data_dir), str(raw))
    datasets.prepare_dataset("voc2007/difficult_ignored", str(data_dir), str(raw))
    return data_dir


def test_voc_labels_order_and_keys(voc_data):
    train = read_split(voc_data, "voc2007/default", "trainval")
    assert ids_of(train) == ["000012", "000005", "000009"]
    expected = np.stack(
        [_voc_row(["car", "person"]), _voc_row(["chair"]), _voc_row(["horse", "person"])]
    )
    np.testing.assert_array_equal(labels_of(train), expected)  # difficult objects skipped (§2.3)
    assert all(r["image"] == jpeg_bytes(7) for r in train)  # stored as read
    test = read_split(voc_data, "voc2007/default", "test")
    assert ids_of(test) == ["000001", "000002"]
    np.testing.assert_array_equal(
        labels_of(test), np.stack([_voc_row(["dog", "person"]), _voc_row(["train"])])
    )


def test_voc_difficult_ignored_only_changes_test(voc_data):
    default = labels_of(read_split(voc_data, "voc2007/default", "trainval"))
    np.testing.assert_array_equal(
        labels_of(read_split(voc_data, "voc2007/difficult_ignored", "trainval")), default
    )
    test = labels_of(read_split(voc_data, "voc2007/difficult_ignored", "test"))
    np.testing.assert_array_equal(test[1], _voc_row(["train"], ignored=["tvmonitor"]))


def test_voc_pipeline_loads_the_builder_unchanged(voc_data):
    data = PartialLabelData(
        dataset="voc2007", data_dir=str(voc_data), image_size=16, known_ratio=0.5, seed=0
    )
    expected = labels_of(read_split(voc_data, "voc2007/default", "trainval"))
    np.testing.assert_array_equal(data.info.train_complete_labels, expected)
    mask = np.random.RandomState(0).random_sample(expected.shape) < 0.5  # independent recomputation
    np.testing.assert_array_equal(data.info.train_partial_labels, np.where(mask, expected, 0))
    assert data.info.spec.class_names == voc2007.CLASS_NAMES
    (batch,) = list(data.eval_batches(2, split="test"))[:1]
    assert batch["image"].shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(batch["index"], [0, 1])


def test_voc_golden_partial_labels_from_voc_layout(tmp_path):
    """The authors' released VOC partial labels, reproduced from XML annotations in reference order.

    All 5,011 trainval images (1x1 JPEGs): the builder's labels equal the released complete
    labels, and make_partial_labels of them equals every released partial-label file.
    """
    golden = np.loadtxt(VOC_GOLDEN / "original-labels_train.txt", delimiter=",", dtype=np.int8)
    assert golden.shape == (5011, 20)
    rows = [(f"{2 * i + 5:06d}", voc_objects_for(row)) for i, row in enumerate(golden)]
    write_voc_tree(tmp_path / "raw", {"trainval": rows, "test": rows[:2]})
    datasets.prepare_dataset("voc2007", str(tmp_path / "data"), str(tmp_path / "raw"))
    labels = labels_of(read_split(tmp_path / "data", "voc2007/default", "trainval"))
    np.testing.assert_array_equal(labels, golden)
    for p in range(1, 10):
        expected = np.loadtxt(
            VOC_GOLDEN / f"partial-labels_train_proportion_0.{p}.txt", delimiter=",", dtype=np.int8
        )
        np.testing.assert_array_equal(
            make_partial_labels(labels, p / 10), expected, err_msg=f"p=0.{p}"
        )


def test_voc_missing_raw_data_names_the_layout(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "README").write_text("not VOC")
    with pytest.raises(builder_common.RawDataNotFoundError, match="ImageSets/Main/trainval.txt"):
        datasets.prepare_dataset("voc2007", str(tmp_path / "data"), str(tmp_path / "raw"))
    with pytest.raises(builder_common.RawDataNotFoundError, match="--manual_dir"):
        datasets.prepare_dataset("voc2007", str(tmp_path / "data"), str(tmp_path / "absent"))


# ----------------------------------------------------------------------------- COCO 2014


def coco_instances(images: list[tuple[int, str]], annotations: list[tuple[int, int, int]]) -> dict:
    """An instances_*.json with the 80 categories in a shuffled order (the class order must not follow it)."""
    categories = [
        {"id": cid, "name": name, "supercategory": "x"}
        for cid, name in zip(coco2014.CATEGORY_IDS, coco2014.CLASS_NAMES)
    ]
    categories = [categories[i] for i in np.random.default_rng(1).permutation(80)]
    return {
        "info": {},
        "licenses": [],
        "images": [{"id": i, "file_name": f, "width": 1, "height": 1} for i, f in images],
        "annotations": [
            {
                "id": k,
                "image_id": i,
                "category_id": c,
                "iscrowd": crowd,
                "bbox": [0, 0, 1, 1],
                "area": 1.0,
            }
            for k, (i, c, crowd) in enumerate(annotations)
        ],
        "categories": categories,
    }


COCO_TRAIN_IMAGES = [
    (42, "COCO_train2014_000000000042.jpg"),
    (7, "COCO_train2014_000000000007.jpg"),
    (99, "COCO_train2014_000000000099.jpg"),
]
COCO_TRAIN_ANNOTATIONS = [
    (42, 1, 0),
    (42, 1, 0),
    (42, 90, 1),
    (99, 18, 0),
    (99, 10, 1),
]  # 7: no annotation
COCO_VAL_IMAGES = [(5, "COCO_val2014_000000000005.jpg"), (3, "COCO_val2014_000000000003.jpg")]
COCO_VAL_ANNOTATIONS = [(3, 13, 0), (5, 89, 0)]


def write_coco_tree(root: pathlib.Path) -> None:
    (root / "annotations").mkdir(parents=True)
    for split, images, annotations in (
        ("train2014", COCO_TRAIN_IMAGES, COCO_TRAIN_ANNOTATIONS),
        ("val2014", COCO_VAL_IMAGES, COCO_VAL_ANNOTATIONS),
    ):
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps(coco_instances(images, annotations))
        )
        (root / split).mkdir()
        for image_id, file_name in images:
            (root / split / file_name).write_bytes(jpeg_bytes(image_id, size=4))


def _coco_row(*names):
    row = np.full(80, -1, np.int8)
    row[[coco2014.CLASS_NAMES.index(n) for n in names]] = 1
    return row


def test_coco_builder(tmp_path):
    write_coco_tree(tmp_path / "raw")
    datasets.prepare_dataset("coco2014", str(tmp_path / "data"), str(tmp_path / "raw"))
    train = read_split(tmp_path / "data", "coco2014", "train")
    assert ids_of(train) == ["42", "7", "99"]  # the annotation file's image order
    expected = np.stack(
        [_coco_row("person", "toothbrush"), _coco_row(), _coco_row("dog", "traffic light")]
    )
    np.testing.assert_array_equal(labels_of(train), expected)  # crowd counts; unannotated kept
    assert train[2]["image"] == jpeg_bytes(99, size=4)
    test = read_split(tmp_path / "data", "coco2014", "test")
    assert ids_of(test) == ["5", "3"]
    np.testing.assert_array_equal(
        labels_of(test), np.stack([_coco_row("hair drier"), _coco_row("stop sign")])
    )
    assert (
        coco2014.CLASS_NAMES.index("traffic light") == 9 and len(set(coco2014.CATEGORY_IDS)) == 80
    )


def test_coco_category_json_overrides_class_order(tmp_path):
    write_coco_tree(tmp_path / "raw")
    order = list(coco2014.CATEGORY_IDS[::-1])  # class index = reversed id order
    (tmp_path / "raw" / "category.json").write_text(
        json.dumps({str(cid): k + 1 for k, cid in enumerate(order)})
    )
    datasets.prepare_dataset("coco2014", str(tmp_path / "data"), str(tmp_path / "raw"))
    test = read_split(tmp_path / "data", "coco2014", "test")
    np.testing.assert_array_equal(labels_of(test)[0], _coco_row("hair drier")[::-1])
    data = PartialLabelData(
        dataset="coco2014", data_dir=str(tmp_path / "data"), image_size=8, known_ratio=1.0, seed=0
    )
    assert data.info.spec.class_names == coco2014.CLASS_NAMES[::-1]


def test_coco_missing_annotation_file(tmp_path):
    write_coco_tree(tmp_path / "raw")
    (tmp_path / "raw" / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(builder_common.RawDataNotFoundError, match="instances_val2014.json"):
        datasets.prepare_dataset("coco2014", str(tmp_path / "data"), str(tmp_path / "raw"))


# ----------------------------------------------------------------------------- VG-200


def test_vg_reference_lists(tmp_path):
    raw = tmp_path / "raw"
    (raw / "VG_100K").mkdir(parents=True)
    for image_id in (10, 11, 12):
        (raw / "VG_100K" / f"{image_id}.jpg").write_bytes(jpeg_bytes(image_id))
    (raw / "train_list_500.txt").write_text("12.jpg\n10.jpg")  # last line without newline (§12.1)
    (raw / "test_list_500.txt").write_text("11.jpg\n")
    (raw / "vg_category_200_labels_index.json").write_text(
        json.dumps({"10.jpg": [0, 199], "11.jpg": [5], "12.jpg": []})
    )
    datasets.prepare_dataset("vg200", str(tmp_path / "data"), str(raw))
    train = read_split(tmp_path / "data", "vg200/reference", "train")
    assert ids_of(train) == ["12.jpg", "10.jpg"]
    expected = np.full((2, 200), -1, np.int8)
    expected[1, [0, 199]] = 1
    np.testing.assert_array_equal(labels_of(train), expected)
    assert ids_of(read_split(tmp_path / "data", "vg200/reference", "test")) == ["11.jpg"]
    assert datasets.get_dataset_spec("vg200").class_names[:2] == ("class_000", "class_001")


def test_vg_ours_categories_and_split(tmp_path):
    """objects.json with 205 categories over 30 images: category k is in the images i with i % (k + 1) == 0 ..."""
    raw = tmp_path / "raw"
    (raw / "VG_100K").mkdir(parents=True)
    (raw / "VG_100K_2").mkdir()
    num_images, num_categories = 30, 205
    presence = np.zeros((num_images, num_categories), bool)
    rng = np.random.default_rng(3)
    frequency = rng.permutation(
        np.arange(num_categories) % 25 + 1
    )  # images per category, many ties
    for k in range(num_categories):
        presence[rng.choice(num_images, frequency[k], replace=False), k] = True
    names = [f"Thing  {k:03d}" for k in range(num_categories)]  # normalised to "thing 000" ...
    entries = []
    for i in range(num_images):
        image_id = 1000 + 7 * i
        objects = [
            {"object_id": int(k), "names": [names[k]], "synsets": []}
            for k in np.flatnonzero(presence[i])
        ]
        entries.append({"image_id": image_id, "objects": objects})
        folder = "VG_100K" if i % 2 else "VG_100K_2"
        (raw / folder / f"{image_id}.jpg").write_bytes(jpeg_bytes(i))
    (raw / "objects.json").write_text(json.dumps(entries))
    datasets.prepare_dataset("vg200/ours", str(tmp_path / "data"), str(raw))

    # Independent recomputation of the documented procedure.
    counts = presence.sum(axis=0)
    chosen = sorted(range(num_categories), key=lambda k: (-counts[k], f"thing {k:03d}"))[:200]
    labelled = [1000 + 7 * i for i in range(num_images) if presence[i, chosen].any()]
    permuted = np.random.default_rng(0).permutation(sorted(labelled))
    num_test = len(labelled) // 10
    splits = {"test": sorted(permuted[:num_test]), "train": sorted(permuted[num_test:])}
    for split, ids in splits.items():
        records = read_split(tmp_path / "data", "vg200/ours", split)
        assert ids_of(records) == [f"{i}.jpg" for i in ids]
        rows = presence[[(i - 1000) // 7 for i in ids]][:, chosen]
        np.testing.assert_array_equal(labels_of(records), np.where(rows, 1, -1))
    data = PartialLabelData(
        dataset="vg200/ours", data_dir=str(tmp_path / "data"), image_size=8, known_ratio=0.5, seed=0
    )
    assert data.info.spec.class_names == tuple(f"thing {k:03d}" for k in chosen)
    assert data.info.num_train == len(splits["train"])


# ----------------------------------------------------------------------------- registry, errors


def test_registry_and_prepare_commands():
    names = datasets.dataset_names()
    for name in ("coco2014", "voc2007", "voc2007/difficult_ignored", "vg200", "vg200/ours"):
        assert name in names
    spec = datasets.get_dataset_spec("coco2014")
    assert spec.num_classes == 80 and spec.train_split == "train" and spec.test_split == "test"
    assert spec.prepare_command_for("/d") == (
        "python -m mlrpl_jax.data.prepare --dataset=coco2014 --data_dir=/d --manual_dir=<raw data dir>"
    )
    assert datasets.get_dataset_spec("voc2007").train_split == "trainval"
    assert datasets.get_dataset_spec("vg200/ours").num_classes == 200


@pytest.mark.parametrize("name", ["coco2014", "voc2007", "vg200"])
def test_missing_dataset_message_names_command_and_layout(tmp_path, name):
    with pytest.raises(DatasetNotPreparedError) as error:
        PartialLabelData(
            dataset=name, data_dir=str(tmp_path), image_size=8, known_ratio=0.5, seed=0
        )
    message = str(error.value)
    assert (
        f"python -m mlrpl_jax.data.prepare --dataset={name} --data_dir={tmp_path} --manual_dir="
        in message
    )
    assert datasets.get_dataset_spec(name).raw_layout in message


# ----------------------------------------------------------------------------- stock TFDS


class _StockVoc(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Mimics the stock TFDS voc/2007 feature names (built TF-free, image bytes pre-encoded)."""

    VERSION = tfds.core.Version("5.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2007")]
    name = "voc"

    def _info(self):
        label = tfds.features.ClassLabel(names=list(voc2007.CLASS_NAMES))
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "image/filename": tfds.features.Text(),
                    "labels": tfds.features.Sequence(label),
                    "labels_no_difficult": tfds.features.Sequence(label),
                    "objects": tfds.features.Sequence({"label": label, "is_difficult": np.bool_}),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            "train": self._generate_examples(VOC_TRAINVAL[:2]),
            "validation": self._generate_examples(VOC_TRAINVAL[2:]),
            "test": self._generate_examples(VOC_TEST),
        }

    def _generate_examples(self, rows):
        for image_id, objects in rows:
            names = [voc2007.CLASS_NAMES.index(n) for n, _ in objects]
            yield (
                image_id,
                {
                    "image": jpeg_bytes(int(image_id)),
                    "image/filename": f"{image_id}.jpg",
                    "labels": sorted(set(names)),
                    "labels_no_difficult": sorted(
                        {c for c, (_, d) in zip(names, objects) if not d}
                    ),
                    "objects": {"label": names, "is_difficult": [bool(d) for _, d in objects]},
                },
            )


def test_stock_tfds_voc_directory_is_converted(tmp_path):
    stock = _StockVoc(data_dir=str(tmp_path / "stock"), file_format="array_record")
    stock.download_and_prepare()
    stock_dir = tmp_path / "stock" / "voc" / "2007" / "5.0.0"
    assert (stock_dir / "dataset_info.json").exists()
    datasets.prepare_dataset("voc2007/difficult_ignored", str(tmp_path / "data"), str(stock_dir))
    train = read_split(tmp_path / "data", "voc2007/difficult_ignored", "trainval")
    assert ids_of(train) == ["000005", "000009", "000012"]  # sorted file names (VOC list order)
    expected = np.stack(
        [_voc_row(["chair"]), _voc_row(["horse", "person"]), _voc_row(["car", "person"])]
    )
    np.testing.assert_array_equal(labels_of(train), expected)
    assert train[2]["image"] == jpeg_bytes(12)
    test = labels_of(read_split(tmp_path / "data", "voc2007/difficult_ignored", "test"))
    np.testing.assert_array_equal(
        test, np.stack([_voc_row(["dog", "person"]), _voc_row(["train"], ignored=["tvmonitor"])])
    )


# ----------------------------------------------------------------------------- label embeddings


def test_paper_class_names_split_into_glove_words():
    from mlrpl_jax.data.label_embeddings import class_name_words

    assert class_name_words("diningtable") == ["dining", "table"]
    assert class_name_words("pottedplant") == ["potted", "plant"]
    assert class_name_words("tvmonitor") == ["tv", "monitor"]
    assert class_name_words("traffic light") == ["traffic", "light"]
    words = {
        w for name in voc2007.CLASS_NAMES + coco2014.CLASS_NAMES for w in class_name_words(name)
    }
    assert all(w.isalpha() for w in words)  # plain words a GloVe vocabulary has


class _StockCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Mimics the stock TFDS coco/2014 feature names, with the class names in a shuffled order."""

    VERSION = tfds.core.Version("1.1.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2014")]
    name = "coco"
    NAMES = [
        coco2014.CLASS_NAMES[i].replace(" ", "_") for i in np.random.default_rng(2).permutation(80)
    ]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "image/filename": tfds.features.Text(),
                    "image/id": np.int64,
                    "objects": tfds.features.Sequence(
                        {"label": tfds.features.ClassLabel(names=self.NAMES), "is_crowd": np.bool_}
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {
            "train": self._generate_examples(COCO_TRAIN_IMAGES, COCO_TRAIN_ANNOTATIONS),
            "validation": self._generate_examples(COCO_VAL_IMAGES, COCO_VAL_ANNOTATIONS),
        }

    def _generate_examples(self, images, annotations):
        name_of_id = dict(zip(coco2014.CATEGORY_IDS, coco2014.CLASS_NAMES))
        for image_id, file_name in images:
            mine = [(c, crowd) for i, c, crowd in annotations if i == image_id]
            yield (
                image_id,
                {
                    "image": jpeg_bytes(image_id),
                    "image/filename": file_name,
                    "image/id": image_id,
                    "objects": {
                        "label": [
                            self.NAMES.index(name_of_id[c].replace(" ", "_")) for c, _ in mine
                        ],
                        "is_crowd": [bool(crowd) for _, crowd in mine],
                    },
                },
            )


def test_stock_tfds_coco_directory_is_converted(tmp_path):
    _StockCoco(data_dir=str(tmp_path / "stock"), file_format="array_record").download_and_prepare()
    stock_dir = tmp_path / "stock" / "coco" / "2014" / "1.1.0"
    datasets.prepare_dataset("coco2014", str(tmp_path / "data"), str(stock_dir))
    train = read_split(tmp_path / "data", "coco2014", "train")
    assert ids_of(train) == ["7", "42", "99"]  # image-id order (stock records lose the JSON order)
    expected = np.stack(
        [_coco_row(), _coco_row("person", "toothbrush"), _coco_row("dog", "traffic light")]
    )
    np.testing.assert_array_equal(labels_of(train), expected)
    test = read_split(tmp_path / "data", "coco2014", "test")
    np.testing.assert_array_equal(
        labels_of(test), np.stack([_coco_row("stop sign"), _coco_row("hair drier")])
    )
