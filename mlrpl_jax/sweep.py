"""Runs one config at several known-label proportions and seeds and tabulates test mAP.

    python -m mlrpl_jax.sweep --config=configs/baseline_digits.py --workdir=workdirs/demo \
        --known_ratios=0.1,0.3,0.5 --seeds=0,1,2

Each (proportion, seed) trains in its own sub-workdir `p<ratio>_s<seed>` (so an interrupted
sweep resumes where it stopped, and rerunning a finished sweep only re-tabulates it). The table
(mean ± std over seeds of the last- and best-epoch mAP, percent) is printed and written to
`<workdir>/table.md` and `<workdir>/table.json`. `--report_scalars` adds columns with the last
logged value of other scalars of each run's metrics.jsonl, e.g. SATL's pseudo-label diagnostics:

    python -m mlrpl_jax.sweep --config=configs/satl_digits.py --workdir=workdirs/satl \
        --seeds=0,1,2 --report_scalars=satl/positive_precision,satl/positive_recall
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mlrpl_jax import cli
from mlrpl_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_KNOWN_RATIOS = flags.DEFINE_list("known_ratios", ["0.1", "0.3", "0.5"], "Known proportions.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (one run per proportion and seed).")
_REPORT_SCALARS = flags.DEFINE_list(
    "report_scalars", [], "Logged scalars (metrics.jsonl names) whose last value per run is "
    "tabulated next to mAP, e.g. satl/positive_precision.")
flags.mark_flags_as_required(["config", "workdir"])


def run_sweep(config, workdir: str, known_ratios: list[float], seeds: list[int],
              report_scalars: tuple[str, ...] = ()) -> dict:
    """Trains every (ratio, seed); returns {ratio: {'last': [...], 'best': [...], scalar: [...]}}.

    A reported scalar that a run never logged (e.g. a precision with no pseudo labels) is NaN.
    Only process 0 writes metrics.jsonl, so only process 0 reads the reported scalars.
    """
    import jax

    from mlrpl_jax import train

    if jax.process_index() != 0:
        report_scalars = ()

    table: dict[str, dict[str, list[float]]] = {}
    for ratio in known_ratios:
        for seed in seeds:
            run_config = config.copy_and_resolve_references()
            run_config.known_ratio = ratio
            run_config.seed = seed
            config_lib.validate_config(run_config)
            run_dir = os.path.join(workdir, f"p{ratio:g}_s{seed}")
            results = train.train_and_evaluate(run_config, run_dir)
            entry = table.setdefault(f"{ratio:g}", {"last": [], "best": []})
            entry["last"].append(results["last"]["mAP"])
            entry["best"].append(results["best"]["mAP"])
            for name, value in last_logged_values(run_dir, report_scalars).items():
                entry.setdefault(name, []).append(value)
    return table


def last_logged_values(run_dir: str, names: tuple[str, ...]) -> dict[str, float]:
    """The last value of each of `names` in `run_dir`/metrics.jsonl (NaN if never logged)."""
    values = {name: float("nan") for name in names}
    if not names:
        return values
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            values.update({name: record[name] for name in names if name in record})
    return values


def format_table(table: dict, method: str, dataset: str) -> str:
    """Markdown: mAP of the last and best epoch, then any reported scalar, mean ± std over seeds.

    A reported scalar some runs did not log is averaged over the runs that did, with the count.
    """
    def cell(values: list[float]) -> str:
        logged = [v for v in values if not np.isnan(v)]
        if not logged:
            return "n/a"
        text = f"{np.mean(logged):.2f} ± {np.std(logged):.2f}"
        return text if len(logged) == len(values) else f"{text} ({len(logged)}/{len(values)} runs)"

    scalars = [name for name in next(iter(table.values()), {}) if name not in ("last", "best")]
    header = ["known proportion", "last epoch", "best epoch", *scalars, "runs"]
    lines = [f"{method} on {dataset}: test mAP (%), mean ± std over seeds", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for ratio, entry in table.items():
        cells = [ratio, cell(entry["last"]), cell(entry["best"]),
                 *(cell(entry[name]) for name in scalars), str(len(entry["last"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    config = _CONFIG.value
    cli.start(argv, config)
    import jax

    ratios = [float(r) for r in _KNOWN_RATIOS.value]
    seeds = [int(s) for s in _SEEDS.value]
    table = run_sweep(config, _WORKDIR.value, ratios, seeds, tuple(_REPORT_SCALARS.value))
    if jax.process_index() != 0:  # process 0 writes the table
        return
    text = format_table(table, config.method, config.data.name)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "table.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(_WORKDIR.value, "table.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2)
    print(text)


if __name__ == "__main__":
    app.run(main)
