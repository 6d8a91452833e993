"""Paired gains of run folders over a reference folder, from their finished results.json.

    python benchmarks/paired_run_gains.py --known_ratio=0.1 \
        --reference=W/baseline_digits_cached \
        --variants=W/sst_digits_cached,V/hst_no_inter_pseudo_bce

A folder holds one run per seed in `p<ratio>_s<seed>/` (the sweep's layout; `main` runs written
to such folders, e.g. a config with a `--config.` override, work alike). For each variant, on
the seeds it shares with the reference: its last-epoch test mAP (mean ± sample std), the paired
gain with its 95 % Student-t interval and the verdict of mlrpl_jax/paired_gain.py. A run without
results.json (unfinished) is left out, so `runs` says how many seeds each row rests on.
Prints a Markdown table; with --json, one JSON line per variant instead.
"""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
from absl import app, flags

from mlrpl_jax import paired_gain


def finished_last_map(folder: str, known_ratio: float) -> dict[int, float]:
    """{seed: last-epoch test mAP} of the finished runs `p<known_ratio>_s<seed>` in `folder`."""
    pattern = re.compile(rf"p{re.escape(f'{known_ratio:g}')}_s(\d+)$")
    values = {}
    for path in glob.glob(os.path.join(folder, "p*_s*", "results.json")):
        match = pattern.match(os.path.basename(os.path.dirname(path)))
        if match:
            with open(path, encoding="utf-8") as results:
                values[int(match.group(1))] = float(json.load(results)["last"]["mAP"])
    return values


def variant_row(name: str, values: dict[int, float], reference: dict[int, float]) -> dict:
    gain = paired_gain.paired_gain(values, reference)
    shared = np.array([values[seed] for seed in gain.seeds])
    return {
        "variant": name,
        "seeds": list(gain.seeds),
        "mAP_mean": float(shared.mean()),
        "mAP_std": float(shared.std(ddof=1)) if len(shared) > 1 else float("nan"),
        "gain": gain.interval.mean,
        "gain_low": gain.interval.low,
        "gain_high": gain.interval.high,
        "verdict": gain.verdict,
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | test mAP | gain [95 % CI] | verdict | runs |", "|---|---|---|---|---|"]
    for row in rows:
        interval = (
            f"{row['gain']:+.2f} [{row['gain_low']:+.2f}, {row['gain_high']:+.2f}]"
            if len(row["seeds"]) > 1
            else f"{row['gain']:+.2f}"
        )
        lines.append(
            f"| {row['variant']} | {row['mAP_mean']:.2f} ± {row['mAP_std']:.2f} | "
            f"{interval} | {row['verdict']} | {len(row['seeds'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    options = flags.FLAGS
    reference = finished_last_map(options.reference, options.known_ratio)
    rows = [
        variant_row(
            os.path.basename(os.path.normpath(folder)),
            finished_last_map(folder, options.known_ratio),
            reference,
        )
        for folder in options.variants
    ]
    if options.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(markdown(rows))


def define_flags() -> None:
    flags.DEFINE_string("reference", None, "Folder of the reference's runs.", required=True)
    flags.DEFINE_list("variants", None, "Folders of the compared runs.", required=True)
    flags.DEFINE_float("known_ratio", 0.1, "Known proportion of the runs compared.")
    flags.DEFINE_bool("json", False, "One JSON line per variant instead of Markdown.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
