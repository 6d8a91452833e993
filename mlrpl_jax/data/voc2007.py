"""`voc2007`: Pascal VOC 2007 image-level labels, TF-free, from the user's VOCdevkit (docs/methods/problem_and_data.md §2.3).

Train = ImageSets/Main/trainval.txt (5,011 images), test = ImageSets/Main/test.txt (4,952), 'index'
= line position in the list (the reference order, so partial-label mask rows match §1.2).
A class is positive iff the image's XML annotation has a non-difficult object of that class;
difficult objects are skipped entirely, as in the reference (config 'default'). Config
'difficult_ignored' follows ML-GCN's convention on the test split only: a class present only
as difficult objects is 0 ("ignored") instead of -1 there; training labels are the same as in
'default' (complete labels must be ±1). Note that mlrpl_jax.core.metrics counts 0 as a negative, so
both configs give the same metrics until an evaluator excludes 0 entries.

manual_dir may instead be an already-prepared stock TFDS `voc/2007` version directory (built
with TensorFlow elsewhere); it is read without TensorFlow and converted (see
docs/paper_datasets.md): trainval = stock train + validation, ordered by file name, which is
the order of VOC 2007's ImageSets lists.
"""
import dataclasses
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mlrpl_jax.data import builder_common

CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # alphabetical, the reference's index order (§2.3)
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_LISTS = {"trainval": "trainval", "test": "test"}  # our split -> ImageSets/Main/<list>.txt
STOCK_SPLITS = {"trainval": ("train", "validation"), "test": ("test",)}

RAW_LAYOUT = """\
  <manual_dir>/VOCdevkit/VOC2007/          (or <manual_dir>/VOC2007/, or <manual_dir> itself)
      ImageSets/Main/trainval.txt, ImageSets/Main/test.txt   one image id per line
      Annotations/<id>.xml                                   VOC XML (object/name, object/difficult)
      JPEGImages/<id>.jpg
  (the trainval and test tarballs VOCtrainval_06-Nov-2007.tar / VOCtest_06-Nov-2007.tar both
  extract into VOCdevkit/VOC2007), or <manual_dir> = a prepared stock TFDS voc/2007/<version> dir."""


@dataclasses.dataclass(eq=False)
class Voc2007Config(tfds.core.BuilderConfig):
    """ignore_difficult_at_test: 0 instead of -1 at test for classes present only as difficult."""

    ignore_difficult_at_test: bool = False


def find_voc_root(manual_dir: epath.Path) -> epath.Path:
    """The VOC2007 directory under manual_dir (the one holding ImageSets/Main/trainval.txt)."""
    for candidate in (manual_dir / "VOCdevkit" / "VOC2007", manual_dir / "VOC2007", manual_dir):
        if (candidate / "ImageSets" / "Main" / "trainval.txt").exists():
            return candidate
    raise builder_common.RawDataNotFoundError(
        f"No VOC 2007 tree under {manual_dir} (no ImageSets/Main/trainval.txt found). Expected "
        f"layout:\n{RAW_LAYOUT}"
    )


def image_labels(
    annotation_xml: bytes | str, ignore_difficult: bool = False
) -> np.ndarray:
    """Int8 (20,) labels of one VOC XML annotation.

    +1 for a class with a non-difficult object, else -1; with ignore_difficult, 0 for a class
    that occurs only as difficult objects.
    """
    root = ElementTree.fromstring(annotation_xml)
    labels = np.full(NUM_CLASSES, -1, dtype=np.int8)
    for obj in root.iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in CLASS_NAMES:
            raise ValueError(f"Unknown VOC class {name!r} in annotation; classes: {CLASS_NAMES}.")
        c = CLASS_NAMES.index(name)
        if int(obj.findtext("difficult", "0").strip() or 0):
            if ignore_difficult and labels[c] == -1:
                labels[c] = 0
        else:
            labels[c] = 1
    return labels


class Voc2007(builder_common.PaperDatasetBuilder):
    """Pascal VOC 2007 multi-label classification (20 classes), TF-free, array_record."""

    CLASS_NAMES = CLASS_NAMES

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = RAW_LAYOUT
    BUILDER_CONFIGS = [
        Voc2007Config(
            name="default",
            description="The reference's labels: difficult objects skipped (-1 if only difficult).",
        ),
        Voc2007Config(
            name="difficult_ignored",
            description="As 'default', but test labels are 0 for classes present only as difficult.",
            ignore_difficult_at_test=True,
        ),
    ]

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        manual_dir = builder_common.manual_dir_of(dl_manager, "VOC 2007", RAW_LAYOUT)
        ignore = self.builder_config.ignore_difficult_at_test
        if builder_common.is_stock_tfds_dir(manual_dir):
            return {
                split: self._stock_examples(manual_dir, split, ignore and split == "test")
                for split in STOCK_SPLITS
            }
        root = find_voc_root(manual_dir)
        lists = {split: root / "ImageSets" / "Main" / f"{name}.txt" for split, name in SPLIT_LISTS.items()}
        builder_common.require_files(list(lists.values()), "VOC 2007", RAW_LAYOUT)
        return {
            split: self._generate_examples(root, lists[split], ignore and split == "test")
            for split in SPLIT_LISTS
        }

    def _generate_examples(
        self, root: epath.Path, list_file: epath.Path, ignore_difficult: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        index = 0
        for image_id in builder_common.read_list_file(list_file):
            annotation = root / "Annotations" / f"{image_id}.xml"
            image = root / "JPEGImages" / f"{image_id}.jpg"
            builder_common.require_files([annotation, image], "VOC 2007", RAW_LAYOUT)
            image_bytes = self.read_image(image)
            if image_bytes is None:
                continue
            yield image_id, {
                "image": image_bytes,
                "labels": image_labels(annotation.read_bytes(), ignore_difficult),
                "index": index,
                "image_id": image_id,
            }
            index += 1

    def _stock_examples(
        self, stock_dir: epath.Path, split: str, ignore_difficult: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        names = tfds.builder_from_directory(stock_dir).info.features["labels"].feature.names
        to_ours = builder_common.stock_class_index(names, CLASS_NAMES)

        def labels(record: dict[str, Any]) -> np.ndarray:
            result = np.full(NUM_CLASSES, -1, dtype=np.int8)
            if ignore_difficult:
                result[to_ours[np.asarray(record["labels"], np.int64)]] = 0
            result[to_ours[np.asarray(record["labels_no_difficult"], np.int64)]] = 1
            return result

        def image_key(record: dict[str, Any]) -> str:
            filename = record["image/filename"]
            filename = filename.decode() if isinstance(filename, bytes) else str(filename)
            return filename.rsplit("/", 1)[-1].removesuffix(".jpg")

        return builder_common.stock_examples(stock_dir, STOCK_SPLITS[split], image_key, labels)
