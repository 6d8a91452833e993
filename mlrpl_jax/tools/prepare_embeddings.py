"""Writes a dataset's label embeddings from a GloVe text file, for config.embeddings.path.

    python -m mlrpl_jax.tools.prepare_embeddings --dataset=coco2014 \
        --glove=glove.840B.300d.txt --output=coco2014_glove300.npy

The output is a float32 (C, D) .npy whose row c is the mean GloVe vector of the words of class
c's name (mlrpl_jax/data/label_embeddings.py: lower-cased, split on spaces, underscores and
hyphens; VOC's one-token compound names spelt as in GLOVE_SPELLINGS), in the dataset's
class-index order. That order is the registry's (coco2014: rank of the COCO category id)
unless --data_dir names the prepared dataset, whose recorded class names then decide: needed
for vg200 (names chosen when it is built) and for coco2014 built with the authors'
category.json. Run with --config.embeddings.kind=npy --config.embeddings.path=<output>.
"""

import os

import numpy as np
from absl import app, flags

from mlrpl_jax.data import datasets, vg200
from mlrpl_jax.data.label_embeddings import load_glove_embeddings


def dataset_class_names(dataset: str, data_dir: str | None = None) -> tuple[str, ...]:
    """Class names of `dataset` in class-index order; from the prepared dataset if data_dir.

    Raises ValueError when the registry has only placeholder names (vg200) and no data_dir.
    """
    spec = datasets.get_dataset_spec(dataset)
    if data_dir:
        from mlrpl_jax.data import pipeline  # deferred: imports grain

        builder_dir = pipeline.find_builder_dir(spec, data_dir)
        return pipeline.with_prepared_class_names(spec, builder_dir).class_names
    if spec.class_names == vg200.PLACEHOLDER_CLASS_NAMES:
        raise ValueError(
            f"{dataset}'s class names are chosen when the dataset is built; pass --data_dir of the "
            "prepared dataset (built with a vg_category_200_names.txt for vg200), or use the "
            "authors' vg_200_vector.npy as the embeddings."
        )
    return spec.class_names


def prepare_embeddings(
    dataset: str, glove: str, output: str, data_dir: str | None = None
) -> np.ndarray:
    """Writes and returns the float32 (C, D) GloVe embeddings of `dataset` at `output`."""
    if not os.path.isfile(glove):
        raise FileNotFoundError(
            f"GloVe file not found: {glove!r} (a text file of 'word v1 ... vD' "
            "lines, e.g. glove.840B.300d.txt unzipped)."
        )
    if not output.endswith(".npy"):
        raise ValueError(f"--output must end in .npy, got {output!r}.")
    names = dataset_class_names(dataset, data_dir)
    embeddings = load_glove_embeddings(glove, names)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.save(output, embeddings)
    return embeddings


def define_flags() -> None:
    """The command line's flags (defined only when this module runs as a program)."""
    flags.DEFINE_string("dataset", None, f"Dataset, one of: {', '.join(datasets.dataset_names())}.")
    flags.DEFINE_string("glove", None, "GloVe text file (one word and its D floats per line).")
    flags.DEFINE_string("output", None, "The .npy to write (point config.embeddings.path at it).")
    flags.DEFINE_string(
        "data_dir",
        None,
        "Optional: the prepared dataset's data_dir, whose "
        "recorded class names and order are used (required for vg200).",
    )
    flags.mark_flags_as_required(["dataset", "glove", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    args = flags.FLAGS
    try:
        embeddings = prepare_embeddings(args.dataset, args.glove, args.output, args.data_dir)
    except (OSError, ValueError) as error:
        raise app.UsageError(str(error)) from None
    print(
        f"Wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings of {args.dataset} to "
        f"{args.output}; use --config.embeddings.kind=npy --config.embeddings.path={args.output} "
        f"--config.embeddings.dim={embeddings.shape[1]}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
