"""Markdown table of the paper-configuration step benchmarks: PyTorch reference and ours side by side.

    python benchmarks/train_step_table.py                       # benchmarks/results/train_step.jsonl
    python benchmarks/train_step_table.py --input=/tmp/run.jsonl

Reads the JSON lines that benchmarks/reference_torch_step.py (impl 'pytorch') and
benchmarks/train_step.py (impl 'mlrpl_jax') append, keeps the last line of each (method, mode,
implementation and convolution variant) and prints one row per method and mode: the reference's
median seconds and peak RSS, then each of our variants with its ratio to the reference
(below 1 is faster) and the load averages around each measurement.
"""

from __future__ import annotations

import json

import timing_harness
from absl import app, flags

REFERENCE = "pytorch"


def variant(line: dict) -> str:
    if line["impl"] == REFERENCE:
        return REFERENCE
    return f"{line['conv_impl']}" + (
        "" if line["frozen_dtype"] == "float32" else f"+{line['frozen_dtype']}"
    )


def latest_lines(lines: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(model, mode, variant) -> the last line measured for it."""
    latest = {}
    for line in lines:
        if "impl" in line and line.get("image_size") == 448:
            latest[line["model"], line["mode"], variant(line)] = line
    return latest


def render(latest: dict[tuple[str, str, str], dict]) -> str:
    variants = sorted({v for _, _, v in latest if v != REFERENCE})
    header = ["method, mode", "PyTorch (s)", "PyTorch RSS (GiB)"]
    for name in variants:
        header += [f"{name} (s)", "ratio", f"{name} RSS (GiB)"]
    header.append("load avg (1 min) before → after")
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model, mode in sorted(
        {(m, d) for m, d, _ in latest}, key=lambda k: (k[0], k[1] != "train_step")
    ):
        reference = latest.get((model, mode, REFERENCE))
        cells = [f"{model} {mode.split('_')[0]}"]
        cells += (
            [f"{reference['median_s']:.2f}", f"{reference['peak_rss_mb'] / 1024:.2f}"]
            if reference
            else ["—", "—"]
        )
        loads = []
        for name in variants:
            line = latest.get((model, mode, name))
            if line is None:
                cells += ["—", "—", "—"]
                continue
            ratio = f"{line['median_s'] / reference['median_s']:.2f}" if reference else "—"
            cells += [f"{line['median_s']:.2f}", ratio, f"{line['peak_rss_mb'] / 1024:.2f}"]
        for line in filter(None, [reference] + [latest.get((model, mode, n)) for n in variants]):
            loads.append(
                f"{line['load_average_before'][0]:.1f} → {line['load_average_after'][0]:.1f}"
            )
        cells.append("; ".join(loads))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    del argv
    with open(flags.FLAGS.input, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    print(render(latest_lines(lines)))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string(
        "input",
        timing_harness.results_path("train_step.jsonl"),
        "JSONL file the two benchmarks appended to.",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
