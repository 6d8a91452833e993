"""`coco2014`: MS-COCO 2014 image-level labels, TF-free, from the user's raw COCO files (docs/methods/problem_and_data.md §2.1).

Train = the images of annotations/instances_train2014.json (82,783), test = those of
instances_val2014.json (40,504). 'index' = position in the file's 'images' list, the order in
which pycocotools exposes image ids and hence the reference order of the partial-label mask rows
(§1.2). Labels: every instance annotation counts (crowd included); images without annotations
are kept, all negative. Class index = rank of the COCO category id in ascending order (our
reading of the authors' category.json, which is not public); a `category.json` in manual_dir
({"<coco id>": 1..80}) overrides that order.

manual_dir may instead be an already-prepared stock TFDS `coco/2014` version directory; it is read
without TensorFlow and converted (train = stock 'train', test = stock 'validation'). The stock
records do not keep the annotation files' image order, so 'index' is then the rank of the image
id, and the partial-label masks differ from the reference's (docs/paper_datasets.md).
"""
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mlrpl_jax.data import builder_common

# The 80 COCO categories in ascending category-id order, with their ids.
CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
NUM_CLASSES = len(CLASS_NAMES)
SPLIT_SOURCES = {"train": "train2014", "test": "val2014"}  # our split -> COCO split name
STOCK_SPLITS = {"train": ("train",), "test": ("validation",)}

RAW_LAYOUT = """\
  <manual_dir>/annotations/instances_train2014.json
  <manual_dir>/annotations/instances_val2014.json
  <manual_dir>/train2014/COCO_train2014_<id>.jpg     (file names as in the JSON 'images' list)
  <manual_dir>/val2014/COCO_val2014_<id>.jpg
  <manual_dir>/category.json                          optional: {"<coco id>": 1..80}
  (from annotations_trainval2014.zip, train2014.zip, val2014.zip), or <manual_dir> = a prepared
  stock TFDS coco/2014/<version> dir."""


def category_index(categories: Sequence[dict[str, Any]], category_json: Any | None = None) -> dict[int, int]:
    """COCO category id -> class index; checks the file's categories are the 80 of CLASS_NAMES.

    Default: rank of the id in ascending order. category_json ({"<id>": 1..80}, the authors'
    format, docs/methods/problem_and_data.md §2.1) overrides it.
    """
    names = {int(c["id"]): c["name"] for c in categories}
    expected = dict(zip(CATEGORY_IDS, CLASS_NAMES))
    if names != expected:
        raise ValueError(
            f"The annotation file's categories {sorted(names.items())} are not COCO's 80 categories."
        )
    if category_json is None:
        return {cid: c for c, cid in enumerate(CATEGORY_IDS)}
    mapping = {int(k): int(v) - 1 for k, v in category_json.items()}
    if sorted(mapping) != sorted(CATEGORY_IDS) or sorted(mapping.values()) != list(range(NUM_CLASSES)):
        raise ValueError("category.json must map each of the 80 COCO category ids to 1..80 once.")
    return mapping


def class_names_for(index_of_id: dict[int, int]) -> tuple[str, ...]:
    """Class names in class-index order for a category-id -> index map."""
    names = [""] * NUM_CLASSES
    for cid, name in zip(CATEGORY_IDS, CLASS_NAMES):
        names[index_of_id[cid]] = name
    return tuple(names)


def split_labels(instances: dict[str, Any], index_of_id: dict[int, int]) -> np.ndarray:
    """Int8 (N, 80): labels of the images of one instances_*.json, rows in its 'images' order."""
    row_of_image = {int(image["id"]): row for row, image in enumerate(instances["images"])}
    labels = np.full((len(row_of_image), NUM_CLASSES), -1, dtype=np.int8)
    for annotation in instances["annotations"]:  # crowd annotations included (§2.1)
        labels[row_of_image[int(annotation["image_id"])], index_of_id[int(annotation["category_id"])]] = 1
    return labels


class Coco2014(builder_common.PaperDatasetBuilder):
    """MS-COCO 2014 multi-label classification (80 classes), TF-free, array_record."""

    CLASS_NAMES = CLASS_NAMES

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = RAW_LAYOUT

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        manual_dir = builder_common.manual_dir_of(dl_manager, "COCO 2014", RAW_LAYOUT)
        if builder_common.is_stock_tfds_dir(manual_dir):
            return {split: self._stock_examples(manual_dir, split) for split in STOCK_SPLITS}
        files = {s: manual_dir / "annotations" / f"instances_{c}.json" for s, c in SPLIT_SOURCES.items()}
        builder_common.require_files(list(files.values()), "COCO 2014", RAW_LAYOUT)
        category_file = manual_dir / "category.json"
        category_json = builder_common.read_json(category_file) if category_file.exists() else None
        instances = {split: builder_common.read_json(path) for split, path in files.items()}
        index_of_id = category_index(instances["train"]["categories"], category_json)
        if category_index(instances["test"]["categories"], category_json) != index_of_id:
            raise ValueError("instances_train2014.json and instances_val2014.json disagree on categories.")
        self.info.metadata["class_names"] = list(class_names_for(index_of_id))
        return {
            split: self._generate_examples(manual_dir / SPLIT_SOURCES[split], instances[split], index_of_id)
            for split in SPLIT_SOURCES
        }

    def _generate_examples(
        self, image_dir: epath.Path, instances: dict[str, Any], index_of_id: dict[int, int]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        labels = split_labels(instances, index_of_id)  # (N, 80)
        index = 0
        for row, image in enumerate(instances["images"]):
            path = image_dir / image["file_name"]
            builder_common.require_files([path], "COCO 2014", RAW_LAYOUT)
            image_bytes = self.read_image(path)
            if image_bytes is None:
                continue
            image_id = str(image["id"])
            yield image_id, {
                "image": image_bytes,
                "labels": labels[row],
                "index": index,
                "image_id": image_id,
            }
            index += 1

    def _stock_examples(self, stock_dir: epath.Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        names = tfds.builder_from_directory(stock_dir).info.features["objects"]["label"].names
        to_ours = builder_common.stock_class_index(names, CLASS_NAMES)

        def labels(record: dict[str, Any]) -> np.ndarray:
            positives = to_ours[np.asarray(record["objects"]["label"], np.int64)]
            return builder_common.labels_from_positives(positives, NUM_CLASSES)

        def image_key(record: dict[str, Any]) -> str:
            return str(int(record["image/id"]))

        return builder_common.stock_examples(
            stock_dir, STOCK_SPLITS[split], image_key, labels, sort_key=int
        )
