"""`digit_scenes`: a small offline multi-label dataset built from scikit-learn's 8x8 digits.

Each example is a 64x64 RGB scene on a 2x2 grid of 32x32 cells holding 1-4 handwritten
digits of distinct classes; its label is the set of digit classes present (10 classes).
Scenes are drawn from a few latent topics so that labels co-occur in a structured way, the
property SST/HST exploit. Digit instances are split disjointly between train and test.
Everything is a deterministic function of the config's seed; docs/digit_scenes.md describes
the generation step by step. The builder needs no TensorFlow and no network.
"""
import colorsys
import dataclasses
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUM_CLASSES = len(CLASS_NAMES)

CANVAS_SIZE = 64
CELL_SIZE = 32
GRID_CELLS = 4  # 2x2
DIGIT_SIZE_RANGE = (22, 28)  # inclusive, upscaled digit side in pixels
TRAIN_INSTANCE_FRACTION = 0.75

# Latent topics: the digit classes each topic favours. A topic gives weight 1 to its core
# classes and OFF_TOPIC_WEIGHT to every other class, so any pair can co-occur but core pairs
# dominate. Topics overlap (e.g. "zero" is in two) so co-occurrence crosses topics too.
TOPIC_CORE_CLASSES = (
    (0, 6, 8, 9),  # closed loops
    (1, 4, 7),  # straight strokes
    (2, 3, 5),  # open curves
    (0, 1, 2, 3, 4),  # low digits
    (5, 6, 7, 8, 9),  # high digits
)
OFF_TOPIC_WEIGHT = 0.03
CARDINALITY_PROBS = (0.2, 0.35, 0.3, 0.15)  # P(1), ..., P(4) digits per scene

_SPLIT_CODES = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False)
class DigitScenesConfig(tfds.core.BuilderConfig):
    """Size and seed of a digit-scenes variant; same seed => the smaller one is a prefix."""

    num_train: int = 0
    num_test: int = 0
    seed: int = 0


def topic_class_probs() -> np.ndarray:
    """Float64 (T, C): per-topic probability of each class being drawn first."""
    weights = np.full((len(TOPIC_CORE_CLASSES), NUM_CLASSES), OFF_TOPIC_WEIGHT)
    for topic, core in enumerate(TOPIC_CORE_CLASSES):
        weights[topic, list(core)] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def split_digit_instances(
    targets: np.ndarray, seed: int
) -> dict[str, list[np.ndarray]]:
    """Stratified, disjoint 75/25 split of digit instances, per split a list indexed by class.

    For each class its instance indices are permuted by a generator seeded with
    (seed, 1000 + class); the first round(0.75 * n) go to train, the rest to test.
    """
    pools: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for digit in range(NUM_CLASSES):
        members = np.flatnonzero(targets == digit)
        rng = np.random.default_rng([seed, 1000 + digit])
        members = rng.permutation(members)
        num_train = int(round(TRAIN_INSTANCE_FRACTION * len(members)))
        pools["train"].append(np.sort(members[:num_train]))
        pools["test"].append(np.sort(members[num_train:]))
    return pools


def _render_digit(digit_image: np.ndarray, size: int) -> np.ndarray:
    """Float32 (size, size) coverage in [0, 1] of an 8x8 digit (values 0..16), bicubic upscale."""
    gray = Image.fromarray(np.round(digit_image * (255.0 / 16.0)).astype(np.uint8), mode="L")
    big = gray.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def render_scene(
    digit_images: np.ndarray,
    pools: list[np.ndarray],
    topic_probs: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws one scene.

    Args:
      digit_images: float (N_digits, 8, 8), values 0..16 (sklearn's load_digits().images).
      pools: per class, the instance indices usable in this split.
      topic_probs: float (T, C), `topic_class_probs()`.
      rng: the scene's own generator.

    Returns:
      (image uint8 (64, 64, 3), labels int8 (C,) in {-1, +1}, instance ids int64 (k,)).
    """
    topic = rng.integers(len(topic_probs))
    num_digits = 1 + rng.choice(len(CARDINALITY_PROBS), p=CARDINALITY_PROBS)
    classes = rng.choice(NUM_CLASSES, size=num_digits, replace=False, p=topic_probs[topic])
    cells = rng.permutation(GRID_CELLS)[:num_digits]

    base = rng.uniform(0.0, 48.0, size=3).astype(np.float32)
    noise = 10.0 * rng.standard_normal((CANVAS_SIZE, CANVAS_SIZE, 3), dtype=np.float32)
    canvas = np.clip(base + noise, 0.0, 255.0)  # (64, 64, 3) float32

    instances = np.empty(num_digits, dtype=np.int64)  # (k,) load_digits rows used
    for slot, (digit, cell) in enumerate(zip(classes, cells)):
        instances[slot] = rng.choice(pools[digit])
        size = int(rng.integers(DIGIT_SIZE_RANGE[0], DIGIT_SIZE_RANGE[1] + 1))
        top = (cell // 2) * CELL_SIZE + int(rng.integers(CELL_SIZE - size + 1))
        left = (cell % 2) * CELL_SIZE + int(rng.integers(CELL_SIZE - size + 1))
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.5, 1), rng.uniform(0.75, 1)
        colour = 255.0 * np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32)
        alpha = _render_digit(digit_images[instances[slot]], size)[..., None]  # (size, size, 1)
        patch = canvas[top : top + size, left : left + size]
        canvas[top : top + size, left : left + size] = (1 - alpha) * patch + alpha * colour

    labels = np.full(NUM_CLASSES, -1, dtype=np.int8)
    labels[classes] = 1
    return np.round(canvas).astype(np.uint8), labels, instances


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) image, encoded by PIL.

    TFDS would encode numpy images with TensorFlow; handing it bytes keeps the build TF-free.
    """
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def generate_split(
    split: str, num_scenes: int, seed: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields (index, image, labels, instance ids) for scenes 0..num_scenes-1 of a split.

    Scene i uses its own generator seeded with (seed, split code, i), so a smaller variant
    with the same seed is exactly a prefix of a larger one.
    """
    from sklearn.datasets import load_digits  # deferred: only needed when building

    digits = load_digits()
    pools = split_digit_instances(digits.target, seed)[split]
    topic_probs = topic_class_probs()
    for index in range(num_scenes):
        rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
        image, labels, instances = render_scene(digits.images, pools, topic_probs, rng)
        yield index, image, labels, instances


class DigitScenes(tfds.core.GeneratorBasedBuilder):
    """Multi-label 64x64 scenes of 1-4 handwritten digits (TF-free, array_record)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        DigitScenesConfig(
            name="default",
            description="5,000 train / 1,500 test scenes.",
            num_train=5000,
            num_test=1500,
            seed=0,
        ),
        DigitScenesConfig(
            name="large",
            description="20,000 train / 1,500 test scenes ('default' is a prefix): hundreds "
            "of known positives per class at p = 0.1.",
            num_train=20000,
            num_test=1500,
            seed=0,
        ),
        DigitScenesConfig(
            name="small",
            description="1,000 train / 500 test scenes (a prefix of 'default') for the "
            "learning test.",
            num_train=1000,
            num_test=500,
            seed=0,
        ),
        DigitScenesConfig(
            name="tiny",
            description="96 train / 40 test scenes (a prefix of 'default') for tests.",
            num_train=96,
            num_test=40,
            seed=0,
        ),
    ]

    def __init__(
        self,
        *,
        file_format: str | tfds.core.FileFormat = tfds.core.FileFormat.ARRAY_RECORD,
        **kwargs: Any,
    ):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "labels": tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.int8),
                    "index": tfds.features.Scalar(dtype=np.int64),
                    "image_id": tfds.features.Text(),
                }
            ),
            metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES)),
        )

    def _split_generators(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, Iterator[tuple[int, dict[str, Any]]]]:
        del dl_manager  # nothing to download
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train, config.seed),
            "test": self._generate_examples("test", config.num_test, config.seed),
        }

    def _generate_examples(
        self, split: str, num_scenes: int, seed: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, image, labels, _ in generate_split(split, num_scenes, seed):
            yield index, {
                "image": encode_png(image),
                "labels": labels,
                "index": index,
                "image_id": f"{split}_{index:05d}",
            }
