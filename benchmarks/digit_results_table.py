"""The results table of docs/results/digit_methods.md from a finished `make benchmark` workdir.

    python benchmarks/digit_results_table.py --workdir=workdirs/digit_benchmark

Reads the sweep's comparison.json (mAP, gain, verdict per method and proportion), each
config's table.json (the diagnostics the Makefile asks the sweep for, per seed) and, for SATL,
the last logged epoch scalars of each run's metrics.jsonl, and prints one Markdown row per
(proportion, method): mean ± sample std over seeds of the last-epoch test mAP, the paired
gain over the baseline with its 95 % interval and the sweep's verdict (mlrpl_jax/paired_gain.py), and what
the method's own machinery did (pseudo positives per step with precision and recall against
the hidden labels, the blend weights α, β, SATL's thresholds and pseudo labels).
"""

from __future__ import annotations

import glob
import json
import math
import os

import mechanism_activity  # benchmarks/, on the path when this file runs as a script
import numpy as np
from absl import app, flags

METHOD_NAMES = {
    "baseline_digits": "baseline",
    "sst_digits": "SST",
    "hst_digits": "HST",
    "sarb_digits": "SARB",
    "dsrb_digits": "DSRB",
    "satl_digits": "SATL",
    "satl_dsrb_digits": "SATL on DSRB",
}
PSEUDO_LABEL_COUNTS = (
    "train/intra_pseudo_positives",
    "train/inter_pseudo_positives",
    "train/inter_pseudo_true_positives",
    "train/hidden_positives",
)
SATL_EPOCH_SCALARS = (
    "satl/classes_with_positive_threshold",
    "satl/epoch_pseudo_positives",
    "satl/epoch_pseudo_negatives",
)


def mean_std(values, digits: int = 2) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"  # as the sweep


def gain_cell(entry: dict) -> str:
    """The paired gain with its 95 % interval (the gain alone for one seed)."""
    if entry["gain_low"] is None:
        return f"{entry['gain']:+.1f}"
    return f"{entry['gain']:+.1f} [{entry['gain_low']:+.1f}, {entry['gain_high']:+.1f}]"


def ratios(numerators, denominators) -> list[float]:
    return [n / d if d > 0 else math.nan for n, d in zip(numerators, denominators)]


def last_epoch_scalars(run_dir: str) -> dict[str, float]:
    """The last logged value of each of SATL_EPOCH_SCALARS in a run's metrics.jsonl."""
    found: dict[str, float] = {}
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            found.update({key: entry[key] for key in SATL_EPOCH_SCALARS if key in entry})
    return found


def last_epoch_means(run_dir: str, keys: tuple[str, ...]) -> dict[str, float]:
    """Per-step means of `keys` over the run's last epoch (mechanism_activity.epoch_means), the
    epoch length read off the last logged step and the run's number of epochs."""
    records = mechanism_activity.read_records(run_dir)
    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as results:
        epochs = json.load(results)["last"]["epoch"] + 1
    last_step = max(record["step"] for record in records if keys[0] in record)
    return mechanism_activity.epoch_means(records, keys, last_step // epochs)[-1]


def diagnostics(config: str, row: dict, runs: list[str]) -> str:
    """The diagnostics cell of one (config, proportion) from its table.json row."""
    parts = []
    if config in ("sst_digits", "hst_digits"):
        means = [last_epoch_means(run, PSEUDO_LABEL_COUNTS) for run in runs]
        column = lambda key: [m[key] for m in means]  # noqa: E731
        intra, inter, true_inter, hidden = (column(key) for key in PSEUDO_LABEL_COUNTS)
        parts.append(
            f"pseudo positives per step: intra {mean_std(intra)}, inter {mean_std(inter)}; "
            f"inter precision {mean_std(ratios(true_inter, inter))}, "
            f"recall {mean_std(ratios(true_inter, hidden), 4)}"
        )
    if config.startswith("satl"):
        epochs = [last_epoch_scalars(run) for run in runs]
        column = lambda key: [e.get(key, math.nan) for e in epochs]  # noqa: E731
        parts.append(
            f"classes with τ⁺: {mean_std(column(SATL_EPOCH_SCALARS[0]), 1)}; pseudo positives "
            f"{mean_std(column(SATL_EPOCH_SCALARS[1]), 0)} (precision "
            f"{mean_std(row['satl/positive_precision'])}, recall {mean_std(row['satl/positive_recall'])}); "
            f"pseudo negatives {mean_std(column(SATL_EPOCH_SCALARS[2]), 0)} (precision "
            f"{mean_std(row['satl/negative_precision'])}, recall {mean_std(row['satl/negative_recall'])})"
        )
    if config in ("sarb_digits", "dsrb_digits", "satl_dsrb_digits"):
        parts.append(f"α {mean_std(row['train/alpha'])}, β {mean_std(row['train/beta'])}")
    return "; ".join(parts)


def results_rows(workdir: str) -> list[str]:
    comparison = json.load(open(os.path.join(workdir, "comparison.json"), encoding="utf-8"))
    rows = []
    for entry in sorted(
        comparison["rows"],
        key=lambda r: (float(r["known_ratio"]), list(METHOD_NAMES).index(r["config"])),
    ):
        config, ratio = entry["config"], entry["known_ratio"]
        if float(ratio) >= 1.0:
            continue
        table = json.load(open(os.path.join(workdir, config, "table.json"), encoding="utf-8"))[
            ratio
        ]
        runs = sorted(glob.glob(os.path.join(workdir, config, f"p{ratio}_s*")))
        reference = entry["config"] == comparison["reference"]
        std = (
            f"{entry['last_std']:.2f}" if entry["last_std"] < 0.095 else f"{entry['last_std']:.1f}"
        )
        rows.append(
            "| "
            + " | ".join(
                [
                    ratio,
                    METHOD_NAMES[config],
                    f"{entry['last_mean']:.1f} ± {std}",
                    "—" if reference else gain_cell(entry),
                    "reference" if reference else entry["verdict"],
                    "" if reference else diagnostics(config, table, runs),
                ]
            )
            + " |"
        )
    return rows


def main(argv: list[str]) -> None:
    del argv
    print("\n".join(results_rows(flags.FLAGS.workdir)))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("workdir", "workdirs/digit_benchmark", "Finished benchmark workdir.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
