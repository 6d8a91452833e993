"""`vg200`: Visual Genome with 200 object categories, TF-free, from the user's raw files (docs/methods/problem_and_data.md §2.2).

Two configs:

* `vg200/reference` — the authors' split, from their (non-public) data-bundle files:
  train_list_500.txt / test_list_500.txt (image file names; 'index' = line position, the
  reference order of §1.2) and vg_category_200_labels_index.json (image name -> positive class
  indices). Those files carry no category names; classes are named class_000 .. class_199 unless
  manual_dir holds vg_category_200_names.txt (one name per line, class-index order; ours).
* `vg200/ours` — OUR substitute when the authors' files are not at hand, derived from Visual
  Genome's objects.json by `select_categories` and `split_images` below. It is not the
  papers' benchmark: numbers on it are not comparable with the published ones.
"""
import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from mlrpl_jax.data import builder_common

NUM_CLASSES = 200
NUM_TEST_IMAGES = 10_000  # test-set size of our split (the reference's VG-500 test list size)
SPLIT_SEED = 0
IMAGE_DIRS = ("VG_100K", "VG_100K_2")
REFERENCE_FILES = {
    "train": "train_list_500.txt",
    "test": "test_list_500.txt",
    "labels": "vg_category_200_labels_index.json",
    "names": "vg_category_200_names.txt",
}
PLACEHOLDER_CLASS_NAMES = tuple(f"class_{c:03d}" for c in range(NUM_CLASSES))

RAW_LAYOUT = """\
  vg200/reference (the authors' split):
    <manual_dir>/VG_100K/<image id>.jpg
    <manual_dir>/train_list_500.txt, <manual_dir>/test_list_500.txt   one image file name per line
    <manual_dir>/vg_category_200_labels_index.json    {"<image file name>": [class indices], ...}
    <manual_dir>/vg_category_200_names.txt            optional: 200 class names, one per line
  vg200/ours (our derived split, see docs/paper_datasets.md):
    <manual_dir>/objects.json                         Visual Genome objects file (v1.2 / v1.4)
    <manual_dir>/VG_100K/<image id>.jpg, <manual_dir>/VG_100K_2/<image id>.jpg"""

_SPACES = re.compile(r"\s+")


@dataclasses.dataclass(eq=False)
class Vg200Config(tfds.core.BuilderConfig):
    """derived=True: our categories and split from objects.json; else the authors' files."""

    derived: bool = False


def category_name(obj: dict[str, Any]) -> str:
    """Normalised category of one Visual Genome object: its first name, lower-case, single-spaced."""
    names = obj.get("names") or [obj.get("name", "")]
    return _SPACES.sub(" ", str(names[0]).strip().lower())


def image_categories(objects_json: Iterable[dict[str, Any]]) -> dict[int, set[str]]:
    """Image id -> set of normalised object categories, from the parsed objects.json."""
    result: dict[int, set[str]] = {}
    for entry in objects_json:
        image_id = int(entry["image_id"] if "image_id" in entry else entry["id"])
        names = {category_name(obj) for obj in entry.get("objects", [])}
        result.setdefault(image_id, set()).update(n for n in names if n)
    return result


def select_categories(categories_of_image: dict[int, set[str]], num_classes: int = NUM_CLASSES) -> tuple[str, ...]:
    """OUR category choice: the num_classes categories present in the most images.

    Order = decreasing number of images, ties by name (ascending); that is the class-index order.
    """
    counts = Counter(name for names in categories_of_image.values() for name in names)
    if len(counts) < num_classes:
        raise ValueError(f"objects.json has only {len(counts)} categories, fewer than {num_classes}.")
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(name for name, _ in ranked[:num_classes])


def split_images(image_ids: Sequence[int], num_test: int = NUM_TEST_IMAGES, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """OUR split: ids sorted ascending, permuted by default_rng(seed); the first
    min(num_test, N // 10) go to test, the rest to train; each split is then sorted ascending."""
    ids = np.sort(np.asarray(image_ids, dtype=np.int64))
    permuted = np.random.default_rng(seed).permutation(ids)
    count = min(num_test, len(ids) // 10)
    return {"train": sorted(permuted[count:].tolist()), "test": sorted(permuted[:count].tolist())}


def find_image(manual_dir: epath.Path, file_name: str, image_dirs: Sequence[str] = IMAGE_DIRS) -> epath.Path:
    for folder in image_dirs:
        path = manual_dir / folder / file_name
        if path.exists():
            return path
    raise builder_common.RawDataNotFoundError(
        f"Image {file_name} not found in {', '.join(str(manual_dir / d) for d in image_dirs)}. "
        f"Expected layout:\n{RAW_LAYOUT}"
    )


class Vg200(builder_common.PaperDatasetBuilder):
    """Visual Genome multi-label classification over 200 object categories, TF-free, array_record."""

    CLASS_NAMES = PLACEHOLDER_CLASS_NAMES

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = RAW_LAYOUT
    BUILDER_CONFIGS = [
        Vg200Config(name="reference", description="The authors' 200 categories and train/test lists."),
        Vg200Config(
            name="ours",
            description="OUR substitute: 200 most frequent categories, seeded 10k-image test split.",
            derived=True,
        ),
    ]

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        manual_dir = builder_common.manual_dir_of(dl_manager, "VG-200", RAW_LAYOUT)
        if self.builder_config.derived:
            return self._derived_splits(manual_dir)
        files = [manual_dir / REFERENCE_FILES[k] for k in ("train", "test", "labels")]
        builder_common.require_files(files, "VG-200 (reference)", RAW_LAYOUT)
        names_file = manual_dir / REFERENCE_FILES["names"]
        if names_file.exists():
            names = builder_common.read_list_file(names_file)
            if len(names) != NUM_CLASSES:
                raise ValueError(f"{names_file} has {len(names)} names, expected {NUM_CLASSES}.")
            self.info.metadata["class_names"] = names
        positives = builder_common.read_json(files[2])
        return {
            split: self._generate_examples(
                manual_dir, builder_common.read_list_file(files[i]), positives, ("VG_100K",)
            )
            for i, split in enumerate(("train", "test"))
        }

    def _derived_splits(self, manual_dir: epath.Path) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        objects_file = manual_dir / "objects.json"
        builder_common.require_files([objects_file], "VG-200 (ours)", RAW_LAYOUT)
        categories_of_image = image_categories(builder_common.read_json(objects_file))
        class_names = select_categories(categories_of_image)
        class_index = {name: c for c, name in enumerate(class_names)}
        positives = {
            f"{image_id}.jpg": sorted(class_index[n] for n in names if n in class_index)
            for image_id, names in categories_of_image.items()
        }
        labelled = [int(name[:-4]) for name, classes in positives.items() if classes]
        splits = split_images(labelled)
        self.info.metadata["class_names"] = list(class_names)
        return {
            split: self._generate_examples(manual_dir, [f"{i}.jpg" for i in ids], positives, IMAGE_DIRS)
            for split, ids in splits.items()
        }

    def _generate_examples(
        self,
        manual_dir: epath.Path,
        file_names: Sequence[str],
        positives: dict[str, Sequence[int]],
        image_dirs: Sequence[str],
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        index = 0
        for file_name in file_names:
            if file_name not in positives:
                raise ValueError(f"Image {file_name} of the list has no entry in the labels file.")
            image_bytes = self.read_image(find_image(manual_dir, file_name, image_dirs))
            if image_bytes is None:
                continue
            yield file_name, {
                "image": image_bytes,
                "labels": builder_common.labels_from_positives(positives[file_name], NUM_CLASSES, file_name),
                "index": index,
                "image_id": file_name,
            }
            index += 1
