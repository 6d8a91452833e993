"""Image preprocessing: the reference's recipe scaled to any input size (docs/methods/problem_and_data.md §2.5), and
a label-preserving alternative for synthetic scenes.

'reference' at image_size 448 is exactly the reference recipe: resize to 512, crop one of
{512, 448, 384, 320, 256}, resize to 448, flip, normalise. For another size S every length is
scaled by S/448 and rounded half up (e.g. S = 64: resize to 73, crops {73, 64, 55, 46, 37}).
All resizing is PIL bicubic, as in the reference.

'colour' never moves, cuts or mirrors anything: it permutes the RGB channels and scales the
brightness. On digit_scenes the reference crop cuts labelled digits out of the 2x2 scene and a
flip turns digits into other shapes while the labels stay, which caps the mAP reachable even
with every label known (docs/digit_scenes.md).
"""
import math

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

REFERENCE_IMAGE_SIZE = 448
REFERENCE_SCALE_SIZE = 512
REFERENCE_CROP_SIZES = (512, 448, 384, 320, 256)
TRAIN_AUGMENTATIONS = ("reference", "colour", "none")
BRIGHTNESS_RANGE = (0.8, 1.2)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def scale_size(image_size: int) -> int:
    """Side of the square resize before cropping: 512 at image_size 448."""
    return _round_half_up(image_size * REFERENCE_SCALE_SIZE / REFERENCE_IMAGE_SIZE)


def crop_sizes(image_size: int) -> tuple[int, ...]:
    """Candidate crop sides: {512, 448, 384, 320, 256} at image_size 448."""
    scale = scale_size(image_size)
    return tuple(
        _round_half_up(scale * k / REFERENCE_SCALE_SIZE) for k in REFERENCE_CROP_SIZES
    )


def _resize(image: Image.Image, size: int) -> Image.Image:
    return image.resize((size, size), Image.Resampling.BICUBIC)


def normalize(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (H, W, 3): /255, then ImageNet mean/std."""
    return (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _as_pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"Expected a uint8 RGB image of shape (H, W, 3), got dtype {image.dtype} and shape "
            f"{image.shape}; decode to RGB first (PIL: .convert('RGB'))."
        )
    return Image.fromarray(image, mode="RGB")


def preprocess_for_train(
    image: np.ndarray, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Random scale-crop, resize, horizontal flip, normalise: float32 (S, S, 3) (docs/methods/problem_and_data.md §2.5).

    Draws, in this order: crop-size choice, crop top, crop left, flip coin.
    """
    scale = scale_size(image_size)
    resized = _resize(_as_pil(image), scale)
    crop = crop_sizes(image_size)[rng.integers(len(REFERENCE_CROP_SIZES))]
    top = int(rng.integers(scale - crop + 1))
    left = int(rng.integers(scale - crop + 1))
    cropped = _resize(resized.crop((left, top, left + crop, top + crop)), image_size)
    out = np.asarray(cropped)  # (S, S, 3) uint8
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return normalize(out)


def preprocess_colour(image: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Resize, permute the RGB channels, scale brightness by U(0.8, 1.2), normalise.

    Draws, in this order: the channel permutation, the brightness factor. Geometry is untouched,
    so every labelled object stays whole and unmirrored.
    """
    resized = np.asarray(_resize(_as_pil(image), image_size))  # (S, S, 3) uint8
    permuted = resized[:, :, rng.permutation(3)]
    factor = rng.uniform(*BRIGHTNESS_RANGE)
    bright = np.clip(np.rint(permuted.astype(np.float32) * factor), 0, 255).astype(np.uint8)
    return normalize(bright)


def preprocess_train_example(image: np.ndarray, image_size: int, augmentation: str,
                             rng: np.random.Generator) -> np.ndarray:
    """The training view of `image` under `augmentation` (one of TRAIN_AUGMENTATIONS)."""
    if augmentation == "reference":
        return preprocess_for_train(image, image_size, rng)
    if augmentation == "colour":
        return preprocess_colour(image, image_size, rng)
    if augmentation == "none":
        return preprocess_for_eval(image, image_size)
    raise ValueError(f"Unknown training augmentation {augmentation!r}; valid: "
                     f"{', '.join(TRAIN_AUGMENTATIONS)}.")


def preprocess_for_eval(image: np.ndarray, image_size: int) -> np.ndarray:
    """Resize to (S, S) and normalise: float32 (S, S, 3) (docs/methods/problem_and_data.md §2.5)."""
    return normalize(np.asarray(_resize(_as_pil(image), image_size)))
