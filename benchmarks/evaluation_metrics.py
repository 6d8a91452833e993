"""Benchmark of the host-side evaluation metrics at the paper test-set sizes.

    python benchmarks/evaluation_metrics.py

Times `mlrpl_jax.core.metrics.evaluate_scores` (both mAPs, OP/OR/OF1/CP/CR/CF1 and top-3) on
random scores shaped like the COCO 2014 val (40,504 x 80), VG-200 test (10,000 x 200) and
VOC 2007 test (4,952 x 20) sets; prints one JSON line per size and appends them to
benchmarks/results/evaluation_metrics.jsonl.
"""

from __future__ import annotations

import numpy as np
import timing_harness
from absl import app, flags

from mlrpl_jax.core.metrics import evaluate_scores

TEST_SETS = {"coco2014_val": (40504, 80), "vg200_test": (10000, 200), "voc2007_test": (4952, 20)}


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    rng = np.random.default_rng(0)
    for name, (num_images, num_classes) in TEST_SETS.items():
        targets = np.where(rng.random((num_images, num_classes)) < 0.05, 1, -1).astype(np.int8)
        scores = (rng.standard_normal((num_images, num_classes)) + 2.0 * (targets > 0)).astype(
            np.float32
        )
        load_before = timing_harness.load_average()
        times = timing_harness.timed_calls(
            lambda: evaluate_scores(scores, targets), args.repeats, warmup=0
        )
        line = {
            "benchmark": "evaluation_metrics",
            "test_set": name,
            "num_images": num_images,
            "num_classes": num_classes,
            "seconds_median": round(float(np.median(times)), 3),
            **timing_harness.conditions(load_before),
        }
        print(timing_harness.append_line(args.output, line))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string(
        "output", timing_harness.results_path("evaluation_metrics.jsonl"), "JSONL to append to."
    )
    flags.DEFINE_integer("repeats", 3, "Timed repetitions (the median is reported).")


if __name__ == "__main__":
    define_flags()
    app.run(main)
