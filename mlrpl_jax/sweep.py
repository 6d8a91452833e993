"""Runs one config at several known-label proportions and seeds and tabulates test mAP.

    python -m mlrpl_jax.sweep --config=configs/baseline_digits.py --workdir=workdirs/demo \
        --known_ratios=0.1,0.3,0.5 --seeds=0,1,2

Each (proportion, seed) trains in its own sub-workdir `p<ratio>_s<seed>` (so an interrupted
sweep resumes where it stopped). The table (mean ± std over seeds of the last- and best-epoch
mAP, percent) is printed and written to `<workdir>/table.md` and `<workdir>/table.json`.
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
flags.mark_flags_as_required(["config", "workdir"])


def run_sweep(config, workdir: str, known_ratios: list[float], seeds: list[int]) -> dict:
    """Trains every (ratio, seed) and returns {ratio: {'last': [...], 'best': [...]}}."""
    from mlrpl_jax import train

    table: dict[str, dict[str, list[float]]] = {}
    for ratio in known_ratios:
        for seed in seeds:
            run_config = config.copy_and_resolve_references()
            run_config.known_ratio = ratio
            run_config.seed = seed
            config_lib.validate_config(run_config)
            results = train.train_and_evaluate(
                run_config, os.path.join(workdir, f"p{ratio:g}_s{seed}"))
            entry = table.setdefault(f"{ratio:g}", {"last": [], "best": []})
            entry["last"].append(results["last"]["mAP"])
            entry["best"].append(results["best"]["mAP"])
    return table


def format_table(table: dict, method: str, dataset: str) -> str:
    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.2f} ± {np.std(values):.2f}"

    lines = [f"{method} on {dataset}: test mAP (%), mean ± std over seeds",
             "", "| known proportion | last epoch | best epoch | runs |", "|---|---|---|---|"]
    for ratio, entry in table.items():
        lines.append(f"| {ratio} | {cell(entry['last'])} | {cell(entry['best'])} "
                     f"| {len(entry['last'])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    config = _CONFIG.value
    cli.start(argv, config)
    import jax

    ratios = [float(r) for r in _KNOWN_RATIOS.value]
    seeds = [int(s) for s in _SEEDS.value]
    table = run_sweep(config, _WORKDIR.value, ratios, seeds)
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
