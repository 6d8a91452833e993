"""What each method's own mechanism did in a finished run, epoch by epoch.

    python benchmarks/mechanism_activity.py --run=workdirs/regime/sst_digits/p0.1_s0
    python benchmarks/mechanism_activity.py --run=RUN --json   # one JSON line per epoch

Reads the run's metrics.jsonl (the per-window training scalars the methods log) and prints, per
epoch, the per-step means of whatever mechanism the run logged:

* SST / HST: intra- and inter-image pseudo positives made per step, the inter ones that are
  true (against the hidden labels, a diagnostic the loss never reads), their precision and their
  recall over the hidden positives of the batch;
* SARB / DSRB: the blend weights α and β (clamped to [0, 1]; a weight stuck at a clamp means
  the blend is off or total);
* SATL: the classes with a positive threshold and the pseudo labels of the epoch, with their
  precision and recall.

An epoch's value is the mean over its logging windows weighted by the steps each covers (a
window never spans an epoch boundary). docs/results/README.md reads these tables.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from absl import app, flags

PSEUDO_LABEL_KEYS = (
    "train/intra_pseudo_positives",
    "train/inter_pseudo_positives",
    "train/inter_pseudo_true_positives",
    "train/hidden_positives",
)
BLEND_KEYS = ("train/alpha", "train/beta")
SATL_KEYS = (
    "satl/classes_with_positive_threshold",
    "satl/epoch_pseudo_positives",
    "satl/positive_precision",
    "satl/positive_recall",
    "satl/epoch_pseudo_negatives",
    "satl/negative_precision",
    "satl/negative_recall",
)


def read_records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def steps_per_epoch(run_dir: str) -> int:
    """From the run's latest checkpoint record: (step - step_in_epoch) / epoch."""
    from mlrpl_jax.core import checkpointing  # deferred: imports JAX and orbax

    checkpointer = checkpointing.Checkpointer(
        os.path.join(run_dir, "checkpoints"), keep_last=1, keep_best=0, async_save=False
    )
    record = checkpointer.read_record(checkpointer.latest_step())
    checkpointer.close()
    if record["epoch"] == 0:
        raise ValueError(
            f"{run_dir}: its latest checkpoint is inside epoch 0, so the epoch "
            "length is not known yet"
        )
    return (record["step"] - record["step_in_epoch"]) // record["epoch"]


def epoch_means(records: list[dict], keys: tuple[str, ...], epoch_steps: int) -> list[dict]:
    """[{epoch, key: per-step mean}] over the windows holding keys[0], each weighted by its steps."""
    windows = [r for r in records if keys[0] in r]
    if not windows:
        return []
    ends = np.array([w["step"] for w in windows])
    sizes = np.diff(ends, prepend=0)
    epochs = (ends - 1) // epoch_steps
    rows = []
    for epoch in np.unique(epochs):
        chosen = epochs == epoch
        row = {"epoch": int(epoch)}
        for key in keys:
            values = np.array([w.get(key, math.nan) for w in windows])[chosen]
            row[key] = float(np.average(values, weights=sizes[chosen]))
        rows.append(row)
    return rows


def with_pseudo_label_quality(row: dict) -> dict:
    """Adds the inter pseudo positives' precision and recall over the hidden positives."""
    made, true, hidden = (row[k] for k in PSEUDO_LABEL_KEYS[1:])
    return {
        **row,
        "inter_precision": true / made if made > 0 else math.nan,
        "inter_recall": true / hidden if hidden > 0 else math.nan,
    }


def last_per_epoch(records: list[dict], keys: tuple[str, ...], epoch_steps: int) -> list[dict]:
    """[{epoch, key: value}] of scalars logged once per epoch (SATL's epoch statistics)."""
    rows: dict[int, dict] = {}
    for record in records:
        if keys[0] in record:
            epoch = (record["step"] - 1) // epoch_steps
            rows[epoch] = {"epoch": epoch, **{k: record.get(k, math.nan) for k in keys}}
    return [rows[e] for e in sorted(rows)]


def mechanism_activity(run_dir: str) -> dict[str, list[dict]]:
    """{mechanism: per-epoch rows} for each mechanism the run logged."""
    records = read_records(run_dir)
    epoch_steps = steps_per_epoch(run_dir)
    activity = {}
    pseudo = epoch_means(records, PSEUDO_LABEL_KEYS, epoch_steps)
    if pseudo:
        activity["pseudo_labels"] = [with_pseudo_label_quality(r) for r in pseudo]
    blend = epoch_means(records, BLEND_KEYS, epoch_steps)
    if blend:
        activity["blending"] = blend
    thresholds = last_per_epoch(records, SATL_KEYS, epoch_steps)
    if thresholds:
        activity["thresholds"] = thresholds
    return activity


def format_activity(activity: dict[str, list[dict]]) -> str:
    lines = []
    for mechanism, rows in activity.items():
        keys = [k for k in rows[0] if k != "epoch"]
        lines += [
            f"{mechanism}:",
            "| epoch | " + " | ".join(k.split("/")[-1] for k in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        lines += [
            "| " + " | ".join([str(r["epoch"]), *(f"{r[k]:.4g}" for k in keys)]) + " |"
            for r in rows
        ]
        lines.append("")
    return "\n".join(lines) if lines else "no mechanism scalars logged (a baseline run?)"


def main(argv: list[str]) -> None:
    del argv
    activity = mechanism_activity(flags.FLAGS.run)
    if flags.FLAGS.json:
        for mechanism, rows in activity.items():
            for row in rows:
                print(json.dumps({"run": flags.FLAGS.run, "mechanism": mechanism, **row}))
    else:
        print(format_activity(activity))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("run", None, "A run's workdir (holding metrics.jsonl and checkpoints).")
    flags.mark_flag_as_required("run")
    flags.DEFINE_bool("json", False, "One JSON line per (mechanism, epoch) instead of tables.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
