"""Benchmark of the host input pipeline (TFDS data source -> grain -> numpy batches).

    python benchmarks/input_pipeline.py --dataset=digit_scenes --data_dir=data/tfds --image_size=64

Prints one JSON line (training images/s with augmentation, evaluation images/s, time to the
first batch) and appends it to benchmarks/results/input_pipeline.jsonl. Compare the training
rate with the train step's images/s (benchmarks/train_step.py): the pipeline must be faster.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from mlrpl_jax.data.pipeline import PartialLabelData

_DATASET = flags.DEFINE_string("dataset", "digit_scenes", "Registered dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "TFDS data directory.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Output image size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Global batch size.")
_BATCHES = flags.DEFINE_integer("batches", 50, "Batches to time per pass.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "grain worker processes.")
_OUTPUT = flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results",
                                                     "input_pipeline.jsonl"), "JSONL to append to.")


def timed_pass(batches, limit: int) -> tuple[float, float, int]:
    """(seconds to the first batch, images/s after it, images) over up to `limit` batches."""
    start = time.perf_counter()
    first, images = None, 0
    for count, batch in enumerate(batches, start=1):
        if first is None:
            first = time.perf_counter()
        else:
            images += len(batch["image"])
        if count == limit:
            break
    elapsed = time.perf_counter() - first
    return first - start, images / elapsed if elapsed > 0 else float("nan"), images


def main(argv: list[str]) -> None:
    del argv
    data = PartialLabelData(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                            image_size=_IMAGE_SIZE.value, known_ratio=0.5, seed=0,
                            num_workers=_NUM_WORKERS.value)
    train_first_s, train_rate, train_images = timed_pass(
        data.train_batches(0, _BATCH_SIZE.value), _BATCHES.value)
    eval_first_s, eval_rate, eval_images = timed_pass(
        data.eval_batches(_BATCH_SIZE.value), _BATCHES.value)
    result = {"benchmark": "input_pipeline", "dataset": _DATASET.value,
              "image_size": _IMAGE_SIZE.value, "batch_size": _BATCH_SIZE.value,
              "num_workers": _NUM_WORKERS.value, "cpu_count": os.cpu_count(),
              "train_images_per_s": round(train_rate, 1), "train_first_batch_s": round(train_first_s, 3),
              "train_images_timed": train_images, "eval_images_per_s": round(eval_rate, 1),
              "eval_first_batch_s": round(eval_first_s, 3), "eval_images_timed": eval_images}
    line = json.dumps(result)
    print(line)
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "a", encoding="utf-8") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
