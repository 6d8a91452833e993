"""Builds a registered dataset offline.

    python -m mlrpl_jax.data.prepare --dataset=digit_scenes --data_dir=DIR
"""
from absl import app, flags

from mlrpl_jax.data import datasets

_DATASET = flags.DEFINE_string(
    "dataset", None, f"Dataset to build, one of: {', '.join(datasets.dataset_names())}."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory that receives the TFDS dataset.")
flags.mark_flags_as_required(["dataset", "data_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    datasets.prepare_dataset(_DATASET.value, _DATA_DIR.value)


if __name__ == "__main__":
    app.run(main)
