"""Builds a registered dataset offline.

    python -m mlrpl_jax.data.prepare --dataset=digit_scenes --data_dir=DIR
    python -m mlrpl_jax.data.prepare --dataset=coco2014 --data_dir=DIR --manual_dir=RAW

Expected raw layouts: docs/paper_datasets.md. It prints one line when the dataset is ready;
`--verbosity=0` adds TFDS's INFO lines, off by default.
"""
from absl import app, flags

from mlrpl_jax import cli
from mlrpl_jax.data import datasets

_DATASET = flags.DEFINE_string(
    "dataset", None, f"Dataset to build, one of: {', '.join(datasets.dataset_names())}."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory that receives the TFDS dataset.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Directory holding the raw dataset files (coco2014, voc2007, vg200); default "
    "<data_dir>/downloads/manual. Not used by digit_scenes.")
_CORRUPT_IMAGES = flags.DEFINE_enum(
    "corrupt_images", "fail", ["fail", "skip"],
    "What to do with a raw image that cannot be decoded: stop with its path, or leave it out.")
flags.mark_flags_as_required(["dataset", "data_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    cli.quiet_unless_asked()
    datasets.prepare_dataset(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value, _CORRUPT_IMAGES.value)
    print(f"{_DATASET.value} is ready in {_DATA_DIR.value}")


if __name__ == "__main__":
    app.run(main)
