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

_REFERENCE = flags.DEFINE_string("reference", None, "Folder of the reference's runs.")
_VARIANTS = flags.DEFINE_list("variants", [], "Folders of the compared runs.")
_KNOWN_RATIO = flags.DEFINE_float("known_ratio", 0.1, "Known proportion of the runs compared.")
_JSON = flags.DEFINE_bool("json", False, "One JSON line per variant instead of Markdown.")


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
    return {"variant": name, "seeds": list(gain.seeds), "mAP_mean": float(shared.mean()),
            "mAP_std": float(shared.std(ddof=1)) if len(shared) > 1 else float("nan"),
            "gain": gain.interval.mean, "gain_low": gain.interval.low,
            "gain_high": gain.interval.high, "verdict": gain.verdict}


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | test mAP | gain [95 % CI] | verdict | runs |", "|---|---|---|---|---|"]
    for row in rows:
        interval = (f"{row['gain']:+.2f} [{row['gain_low']:+.2f}, {row['gain_high']:+.2f}]"
                    if len(row["seeds"]) > 1 else f"{row['gain']:+.2f}")
        lines.append(f"| {row['variant']} | {row['mAP_mean']:.2f} ± {row['mAP_std']:.2f} | "
                     f"{interval} | {row['verdict']} | {len(row['seeds'])} |")
    return "\n".join(lines)


def main(argv):
    del argv
    if not _REFERENCE.value or not _VARIANTS.value:
        raise app.UsageError("--reference and --variants are required")
    reference = finished_last_map(_REFERENCE.value, _KNOWN_RATIO.value)
    rows = [variant_row(os.path.basename(os.path.normpath(folder)),
                        finished_last_map(folder, _KNOWN_RATIO.value), reference)
            for folder in _VARIANTS.value]
    if _JSON.value:
        for row in rows:
            print(json.dumps(row))
    else:
        print(markdown(rows))


if __name__ == "__main__":
    app.run(main)
