"""Benchmark of the host-side evaluation metrics at the paper test-set sizes.

    python benchmarks/evaluation_metrics.py

Times `mlrpl_jax.core.metrics.evaluate_scores` (both mAPs, OP/OR/OF1/CP/CR/CF1 and top-3) on
random scores shaped like the COCO 2014 val (40,504 x 80), VG-200 test (10,000 x 200) and
VOC 2007 test (4,952 x 20) sets; prints one JSON line per size and appends them to
benchmarks/results/evaluation_metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags

from mlrpl_jax.core.metrics import evaluate_scores

_OUTPUT = flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results",
                                                     "evaluation_metrics.jsonl"), "JSONL to append to.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions (the median is reported).")

TEST_SETS = {"coco2014_val": (40504, 80), "vg200_test": (10000, 200), "voc2007_test": (4952, 20)}


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(0)
    lines = []
    for name, (num_images, num_classes) in TEST_SETS.items():
        targets = np.where(rng.random((num_images, num_classes)) < 0.05, 1, -1).astype(np.int8)
        scores = (rng.standard_normal((num_images, num_classes)) + 2.0 * (targets > 0)).astype(np.float32)
        times = []
        for _ in range(_REPEATS.value):
            start = time.perf_counter()
            evaluate_scores(scores, targets)
            times.append(time.perf_counter() - start)
        lines.append(json.dumps({"benchmark": "evaluation_metrics", "test_set": name,
                                 "num_images": num_images, "num_classes": num_classes,
                                 "seconds_median": round(float(np.median(times)), 3)}))
    print("\n".join(lines))
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
