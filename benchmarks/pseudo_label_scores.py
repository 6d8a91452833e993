"""Why SST or HST makes (few) pseudo labels: its scores on the unknown entries against its margins.

    python benchmarks/pseudo_label_scores.py --run=workdirs/regime/sst_digits_large/p0.1_s0

Restores a finished SST or HST run's latest checkpoint, runs the train-mode forward of its loss
over `--batches` training batches and prints one JSON line with, for the unknown entries split
by their hidden label (a diagnostic: the loss never reads it):

* the intra-image score p̄ (mean co-occurrence with the image's known positives, sst.md §6.2)
  and the share of unknown entries whose image has no known positive (their p̄ is 0);
* the cross-image score: SST's q̄, the mean cosine to the class's bank rows (§6.3), or HST's δ,
  the mean cosine to the class's prototypes (hst.md §7.2);
* quantiles (50, 90, 99 %, max) of each, the margins of the checkpoint's epoch (SST's schedule,
  HST's learned margins), and the share of each group at or above its margin (HST's pseudo
  labels need strictly above);
* the precision and recall of the pseudo positives that a cross-image margin at each of
  THRESHOLDS would make (what a lower margin would buy, without retraining);
* the bank's fill: the share of its rows that hold a feature (SST).
"""

from __future__ import annotations

import json

import finished_run
import jax
import numpy as np
from absl import app, flags

from mlrpl_jax.methods.semantic_transfer import pseudo_labels

QUANTILES = (50, 90, 99, 100)
# Thresholds at which the precision and recall of the pseudo positives a margin there would
# make are reported (the reference's margins run 0.95 -> 0.75).
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.75)


def quantiles(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {f"q{q}": float(np.percentile(values, q)) for q in QUANTILES}


def group_summary(
    scores: np.ndarray, unknown: np.ndarray, hidden: np.ndarray, margin: float
) -> dict[str, dict]:
    """Quantiles and the share at or above `margin` of the unknown entries, per hidden label."""
    summary = {}
    for name, chosen in (
        ("hidden_positive", unknown & (hidden == 1)),
        ("hidden_negative", unknown & (hidden == -1)),
    ):
        values = scores[chosen]
        summary[name] = {
            "entries": int(values.size),
            **quantiles(values),
            "share_at_or_above_margin": float(np.mean(values >= margin)),
        }
    return summary


def at_thresholds(scores: np.ndarray, unknown: np.ndarray, hidden: np.ndarray) -> dict[str, dict]:
    """Precision and recall (against the hidden labels) of the unknown entries scoring at or
    above each of THRESHOLDS, and the pseudo positives per image that would make."""
    positives = unknown & (hidden == 1)
    rows = {}
    for threshold in THRESHOLDS:
        selected = unknown & (scores >= threshold)
        true = np.sum(selected & positives)
        rows[f"{threshold:g}"] = {
            "per_image": float(selected.sum() / len(scores)),
            "precision": float(true / selected.sum()) if selected.any() else float("nan"),
            "recall": float(true / positives.sum()) if positives.any() else float("nan"),
        }
    return rows


def sst_or_hst_run(config) -> None:
    """Raises unless the run is an SST or HST run (the methods whose scores this script reads)."""
    if config.method not in ("sst", "hst"):
        raise ValueError(f"a {config.method} run; this script reads SST and HST runs")


def pseudo_label_scores(run_dir: str, num_batches: int) -> dict:
    run = finished_run.restore(run_dir, check=sst_or_hst_run)
    config, data, method, state, step = run.config, run.data, run.method, run.state, run.step
    record = run.record
    epoch = record["epoch"] - 1 if record["step_in_epoch"] == 0 else record["epoch"]
    margins = (
        method.margins_at(epoch)
        if config.method == "sst"  # scheduled (sst.md §6.4)
        else method.margins(state.variables()["params"])
    )  # learned (hst.md §7.3)
    margins = {k: float(v) for k, v in margins.items()}

    @jax.jit
    def scores(st, images, targets):
        output, _ = method.model.apply(st.variables(), images, train=True, mutable=["batch_stats"])
        intra = pseudo_labels.mean_cooccurrence_with_known_positives(output.pair_logits, targets)
        rows = (
            st.method_state["bank"]["rows"]
            if config.method == "sst"
            else st.method_state["prototypes"]
        )
        inter = pseudo_labels.mean_cosine_to_class_rows(output.semantic, rows)
        return intra, inter

    intra, inter, targets, hidden = [], [], [], []
    for index, batch in enumerate(data.train_batches(epoch, config.batch_size)):
        if index == num_batches:
            break
        result = scores(state, batch["image"], batch["labels"])
        intra.append(np.asarray(result[0]))
        inter.append(np.asarray(result[1]))
        targets.append(batch["labels"])
        hidden.append(batch["complete_labels"])
    intra, inter = np.concatenate(intra), np.concatenate(inter)
    targets, hidden = np.concatenate(targets), np.concatenate(hidden)
    unknown = targets == 0
    no_known_positive = ~np.any(targets == 1, axis=1, keepdims=True) & unknown
    summary = {
        "run": run_dir,
        "method": config.method,
        "step": step,
        "epoch": epoch,
        "known_ratio": config.known_ratio,
        "seed": config.seed,
        "margins": margins,
        "unknown_entries": int(unknown.sum()),
        "share_unknown_in_images_without_known_positive": float(
            no_known_positive.sum() / unknown.sum()
        ),
        "intra": group_summary(intra, unknown, hidden, margins["intra"]),
        "inter": group_summary(inter, unknown, hidden, margins["inter"]),
        "inter_at_thresholds": at_thresholds(inter, unknown, hidden),
    }
    if config.method == "sst":
        rows = np.asarray(state.method_state["bank"]["rows"])
        summary["bank_fill"] = float(np.mean(np.any(rows != 0, axis=-1)))
    return summary


def main(argv: list[str]) -> None:
    del argv
    print(json.dumps(pseudo_label_scores(flags.FLAGS.run, flags.FLAGS.batches)))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("run", None, "Workdir of a finished SST or HST run.")
    flags.mark_flag_as_required("run")
    flags.DEFINE_integer("batches", 20, "Training batches to score.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
