"""Shared parts of the TF-free builders of the paper datasets (COCO 2014, VOC 2007, VG-200).

Every builder writes the project's example format (see digit_scenes.py): 'image' (encoded
bytes, stored as read from disk), 'labels' int8 (C,), 'index' int64 (position of the image in
the split's reference order, docs/methods/problem_and_data.md §1.2) and 'image_id' text. Builders read the user's raw
data from TFDS's manual_dir and never download anything. Images are handed to TFDS as bytes:
tfds.features.Image would encode numpy images with TensorFlow. Every raw image is decoded once
while building; one that cannot be (corrupt or truncated) stops the build with its path, or with
`corrupt_images='skip'` is left out and the later images' 'index' closes the gap.
"""
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

CORRUPT_IMAGE_ACTIONS = ("fail", "skip")


class PaperDatasetBuilder(tfds.core.GeneratorBasedBuilder):
    """What the paper-dataset builders share: array_record output and the project's features.

    Subclasses set CLASS_NAMES and describe themselves in their class docstring. This class
    stays abstract (no split generators), so TFDS does not register it as a dataset.
    """

    CLASS_NAMES: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        file_format: str | tfds.core.FileFormat = tfds.core.FileFormat.ARRAY_RECORD,
        corrupt_images: str = "fail",
        **kwargs: Any,
    ):
        if corrupt_images not in CORRUPT_IMAGE_ACTIONS:
            raise ValueError(f"corrupt_images must be one of {CORRUPT_IMAGE_ACTIONS}, got {corrupt_images!r}.")
        self.corrupt_images = corrupt_images
        super().__init__(file_format=file_format, **kwargs)

    def read_image(self, path: epath.Path) -> bytes | None:
        """The file's bytes once they decode as an image; None for a corrupt file with 'skip'."""
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except (OSError, ValueError) as error:
            if self.corrupt_images == "fail":
                raise CorruptImageError(
                    f"Raw image {path} cannot be decoded ({error}). Replace the file, or build with "
                    "--corrupt_images=skip to leave such images out."
                ) from None
            logging.warning("Skipping raw image %s: it cannot be decoded (%s).", path, error)
            return None
        return data

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=type(self).__doc__,
            features=example_features(len(self.CLASS_NAMES)),
            metadata=tfds.core.MetadataDict(class_names=list(self.CLASS_NAMES)),
        )


class CorruptImageError(ValueError):
    """An image file or record cannot be decoded; the message names the file or record."""


class RawDataNotFoundError(FileNotFoundError):
    """The raw dataset files are missing from manual_dir; the message shows the expected layout."""


def example_features(num_classes: int, image_format: str = "jpeg") -> tfds.features.FeaturesDict:
    """The project's example format for a dataset with `num_classes` classes."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=image_format),
            "labels": tfds.features.Tensor(shape=(num_classes,), dtype=np.int8),
            "index": tfds.features.Scalar(dtype=np.int64),
            "image_id": tfds.features.Text(),
        }
    )


def labels_from_positives(positives: Iterable[int], num_classes: int, image_id: str = "") -> np.ndarray:
    """Int8 (C,): +1 at the given class indices, -1 elsewhere; ValueError for an index outside 0..C-1."""
    positives = [int(c) for c in positives]
    out_of_range = [c for c in positives if not 0 <= c < num_classes]
    if out_of_range:
        raise ValueError(f"Class indices {out_of_range} of image {image_id!r} are out of range: "
                         f"valid class indices are 0..{num_classes - 1}.")
    labels = np.full(num_classes, -1, dtype=np.int8)
    labels[positives] = 1
    return labels


def manual_dir_of(dl_manager: tfds.download.DownloadManager, name: str, layout: str) -> epath.Path:
    """dl_manager.manual_dir, or RawDataNotFoundError naming the expected raw layout."""
    try:
        return dl_manager.manual_dir
    except AssertionError:
        raise RawDataNotFoundError(
            f"Raw data of {name} not found: the manual_dir {dl_manager._manual_dir} "  # noqa: SLF001
            f"does not exist or is empty. Pass --manual_dir=<raw data dir> laid out as:\n{layout}"
        ) from None


def require_files(paths: Sequence[epath.Path], name: str, layout: str) -> None:
    """RawDataNotFoundError listing every missing path, with the expected raw layout."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RawDataNotFoundError(
            f"Raw data of {name} incomplete; missing: {', '.join(missing)}. Expected layout:\n{layout}"
        )


def read_list_file(path: epath.Path) -> list[str]:
    """Non-empty lines, whitespace-stripped (the reference drops each line's last character
    unconditionally, which breaks a final line without newline: docs/methods/reference_defects.md §12.1, clean)."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def read_json(path: epath.Path) -> Any:
    with path.open("rb") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- stock TFDS


def is_stock_tfds_dir(path: epath.Path) -> bool:
    """True if `path` is a prepared TFDS dataset version directory (has dataset_info.json)."""
    return (path / "dataset_info.json").exists()


def stock_records(builder_dir: epath.Path, splits: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Records of the given splits of an already-prepared stock TFDS dataset, image bytes encoded.

    Read with tfds.builder_from_directory (no builder code, so no TensorFlow).
    """
    builder = tfds.builder_from_directory(builder_dir)
    for split in splits:
        yield from builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})


def stock_class_index(stock_names: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Int64 (C_stock,): our class index of each stock ClassLabel name (spaces = underscores)."""
    ours = {n.replace("_", " ").lower(): i for i, n in enumerate(class_names)}
    index = [ours.get(n.replace("_", " ").lower(), -1) for n in stock_names]
    unknown = [n for n, i in zip(stock_names, index) if i < 0]
    if unknown or len(set(index)) != len(class_names):
        raise ValueError(
            f"Stock TFDS class names {list(stock_names)} do not match ours {list(class_names)} "
            f"(unknown: {unknown})."
        )
    return np.asarray(index, dtype=np.int64)


def stock_examples(
    builder_dir: epath.Path,
    splits: Sequence[str],
    image_key: Callable[[dict[str, Any]], str],
    labels: Callable[[dict[str, Any]], np.ndarray],
    sort_key: Callable[[str], Any] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Our examples from stock TFDS records; 'index' = rank of the image key (sorted by sort_key).

    Two passes over the records (keys first, then images), so images are never held in memory.
    """
    keys = [image_key(record) for record in stock_records(builder_dir, splits)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"Image keys of {builder_dir} splits {list(splits)} are not unique.")
    rank = {key: index for index, key in enumerate(sorted(keys, key=sort_key))}
    for record in stock_records(builder_dir, splits):
        key = image_key(record)
        yield key, {
            "image": record["image"],
            "labels": labels(record),
            "index": rank[key],
            "image_id": key,
        }
