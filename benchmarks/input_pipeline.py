"""Benchmark of the host input pipeline (TFDS data source -> grain -> numpy batches).

    python benchmarks/input_pipeline.py --dataset=digit_scenes --data_dir=data/tfds --image_size=64
    python benchmarks/input_pipeline.py --coco_like_images=400 --data_dir=/tmp/coco_like \
        --image_size=448 --batch_size=8 --num_workers=0,1,2

Prints one JSON line per worker count (training images/s with augmentation, evaluation
images/s, time to the first batch, and this process's CPU time per image: with 0 workers the
whole cost of decoding, preprocessing and batching one image) and appends it to benchmarks/results/input_pipeline.jsonl. Compare the
training rate with the train step's images/s (benchmarks/train_step.py): the pipeline must be
faster. `--coco_like_images=N` first writes N generated 640x480 JPEGs (~160 KB, about COCO's
size; N/4 more for the test split) and their instances JSON in COCO's raw layout under
<data_dir>/raw and builds coco2014 from them with the project's builder (docs/dry_run.md).
"""

from __future__ import annotations

import io
import json
import os
import pathlib

import numpy as np
import timing_harness
from absl import app, flags
from PIL import Image

from mlrpl_jax.data import coco2014, datasets
from mlrpl_jax.data.pipeline import DatasetNotPreparedError, PartialLabelData
from mlrpl_jax.data.throughput import timed_pass

_COCO_SIZE = (640, 480)
_JPEG_NOISE = 24  # Gaussian noise on a colour gradient: ~160 KB JPEGs at quality 90, as COCO's


def coco_like_jpeg(rng: np.random.Generator) -> bytes:
    """A 640x480 colour gradient with noise, JPEG-encoded."""
    width, height = _COCO_SIZE
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 1, 3)
    gradient = (
        np.stack(
            [
                (x / width + phase[0]) % 1,
                (y / height + phase[1]) % 1,
                ((x + y) / (width + height) + phase[2]) % 1,
            ],
            axis=-1,
        )
        * 255
    )
    pixels = np.clip(gradient + rng.normal(0, _JPEG_NOISE, gradient.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_coco_like_tree(raw_dir: pathlib.Path, num_train: int, seed: int = 0) -> None:
    """COCO's raw layout (coco2014.RAW_LAYOUT): generated JPEGs, 1-3 random categories each."""
    rng = np.random.default_rng(seed)
    (raw_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for split, count in (("train2014", num_train), ("val2014", max(num_train // 4, 1))):
        (raw_dir / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            file_name = f"COCO_{split}_{image_id:012d}.jpg"
            (raw_dir / split / file_name).write_bytes(coco_like_jpeg(rng))
            images.append({"id": image_id, "file_name": file_name, "width": 640, "height": 480})
            for category in rng.choice(coco2014.CATEGORY_IDS, rng.integers(1, 4), replace=False):
                annotations.append(
                    {
                        "id": len(annotations),
                        "image_id": image_id,
                        "category_id": int(category),
                        "iscrowd": 0,
                    }
                )
        categories = [
            {"id": cid, "name": name}
            for cid, name in zip(coco2014.CATEGORY_IDS, coco2014.CLASS_NAMES)
        ]
        instances = {"images": images, "annotations": annotations, "categories": categories}
        (raw_dir / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    dataset, data_dir = args.dataset, args.data_dir
    if args.coco_like_images:
        dataset = "coco2014"
        try:
            PartialLabelData(
                dataset=dataset, data_dir=data_dir, image_size=8, known_ratio=1.0, seed=0
            )
        except DatasetNotPreparedError:
            raw_dir = pathlib.Path(data_dir) / "raw"
            write_coco_like_tree(raw_dir, args.coco_like_images)
            datasets.prepare_dataset(dataset, data_dir, str(raw_dir))
    for num_workers in (int(n) for n in args.num_workers):
        load_before = timing_harness.load_average()
        data = PartialLabelData(
            dataset=dataset,
            data_dir=data_dir,
            image_size=args.image_size,
            known_ratio=0.5,
            seed=0,
            num_workers=num_workers,
        )
        train_first_s, train_rate, train_images, train_cpu_ms = timed_pass(
            data.train_batches(0, args.batch_size), args.batches
        )
        eval_first_s, eval_rate, eval_images, eval_cpu_ms = timed_pass(
            data.eval_batches(args.batch_size), args.batches
        )
        result = {
            "benchmark": "input_pipeline",
            "dataset": dataset,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "num_workers": num_workers,
            "cpu_count": os.cpu_count(),
            "train_images_per_s": round(train_rate, 1),
            "train_first_batch_s": round(train_first_s, 3),
            "train_images_timed": train_images,
            "train_process_cpu_ms_per_image": round(train_cpu_ms, 2),
            "eval_images_per_s": round(eval_rate, 1),
            "eval_first_batch_s": round(eval_first_s, 3),
            "eval_images_timed": eval_images,
            "eval_process_cpu_ms_per_image": round(eval_cpu_ms, 2),
            **timing_harness.conditions(load_before),
        }
        print(timing_harness.append_line(args.output, result))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("dataset", "digit_scenes", "Registered dataset name.")
    flags.DEFINE_string("data_dir", "data/tfds", "TFDS data directory.")
    flags.DEFINE_integer("image_size", 64, "Output image size.")
    flags.DEFINE_integer("batch_size", 32, "Global batch size.")
    flags.DEFINE_integer("batches", 50, "Batches to time per pass.")
    flags.DEFINE_list("num_workers", ["0"], "grain worker process counts to measure.")
    flags.DEFINE_integer(
        "coco_like_images",
        0,
        "If > 0: benchmark coco2014 built from this many generated "
        "640x480 training JPEGs in <data_dir> (generated and built once).",
    )
    flags.DEFINE_string(
        "output", timing_harness.results_path("input_pipeline.jsonl"), "JSONL to append to."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
