"""Runs configs at several known-label proportions and seeds, tabulates and compares test mAP.

One config:

    python -m mlrpl_jax.sweep --config=configs/baseline_digits.py --workdir=workdirs/demo \
        --known_ratios=0.1,0.3,0.5 --seeds=0,1,2

Each (proportion, seed) trains in its own sub-workdir `p<ratio>_s<seed>` (so an interrupted
sweep resumes where it stopped, and rerunning a finished sweep only re-tabulates it) and prints
one line with its mAP and wall time; `--verbosity=0` adds absl's INFO lines, off by default. The table
(mean ± sample std over seeds of the last- and best-epoch mAP, percent) is printed and written to
`<workdir>/table.md` and `<workdir>/table.json`. `--report_scalars` adds columns with the last
logged value of other scalars of each run's metrics.jsonl, e.g. SATL's pseudo-label diagnostics:

    python -m mlrpl_jax.sweep --config=configs/satl_digits.py --workdir=workdirs/satl \
        --seeds=0,1,2 --report_scalars=satl/positive_precision,satl/positive_recall

Several methods, compared with the first config (the reference, normally the baseline):

    python -m mlrpl_jax.sweep \
        --configs=configs/baseline_digits.py,configs/sst_digits.py,configs/sarb_digits.py \
        --workdir=workdirs/compare --known_ratios=0.1,0.3,0.5,1.0 --seeds=0,1,2 \
        --set=data.data_dir=DIR --set=epochs=4

Each config runs in `<workdir>/<name>/p<ratio>_s<seed>` with its own table in
`<workdir>/<name>/table.{md,json}`, where <name> is the config file's stem (`<stem>_<arg>` for a
`file.py:arg` config). `<workdir>/comparison.{md,json}` holds one row per (config, proportion)
with the paired gain of the last-epoch mAP over the reference (same seed = same mask,
initialisation and data order), its 95 % confidence interval over seeds and the verdict
(mlrpl_jax/paired_gain.py: "beats" only when the whole interval is above 0; one seed gives no
verdict), and `<workdir>/map_vs_known_ratio.png` plots the last-epoch mAP with its 95 %
interval against the known proportion (needs
matplotlib: `pip install 'mlrpl_jax[plot]'`; without it only the plot is skipped).
`--set=key=value` (repeatable) overrides a key of every config, parsed by the type of the key;
with `--config` the usual `--config.key=value` overrides work as well.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import time

import ml_collections
import numpy as np
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from mlrpl_jax import cli, paired_gain
from mlrpl_jax import config as config_lib
from mlrpl_jax.core import run_inputs, storage

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Path to a configs/*.py file (one config; alternative to --configs).",
    lock_config=True,
)
_CONFIGS = flags.DEFINE_list(
    "configs",
    [],
    "Config files to compare (alternative to --config), each `path.py` or "
    "`path.py:arg`; the first is the reference of the comparison.",
)
_SET = flags.DEFINE_multi_string(
    "set",
    [],
    "`key=value` override applied to every config (repeatable), parsed by the type "
    "of the existing key, e.g. --set=data.data_dir=/data --set=epochs=4.",
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Root directory of the sweep.")
_KNOWN_RATIOS = flags.DEFINE_list("known_ratios", ["0.1", "0.3", "0.5"], "Known proportions.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (one run per proportion and seed).")
_REFERENCE_ONLY_RATIOS = flags.DEFINE_list(
    "reference_only_ratios",
    [],
    "With --configs: known proportions run for the first config "
    "only, e.g. 1.0 for the baseline's complete-label bound.",
)
_TABULATE_ONLY = flags.DEFINE_bool(
    "tabulate_only",
    False,
    "Train nothing: build the tables and the comparison from the finished "
    "runs in --workdir (e.g. runs made one seed at a time); a missing or unfinished run stops it.",
)
_REPORT_SCALARS = flags.DEFINE_list(
    "report_scalars",
    [],
    "Logged scalars (metrics.jsonl names) whose last value per run is "
    "tabulated next to mAP, e.g. satl/positive_precision.",
)

PLOT_FILE = "map_vs_known_ratio.png"


class SweepError(ValueError):
    """A sweep cannot be tabulated from its workdir; the message names the run and the fix."""


PLOT_MISSING = (
    "matplotlib is not installed, so {path} was not drawn: "
    "pip install 'mlrpl_jax[plot]' gives the plot."
)


def run_sweep(
    config,
    workdir: str,
    known_ratios: list[float],
    seeds: list[int],
    report_scalars: tuple[str, ...] = (),
    tabulate_only: bool = False,
) -> dict:
    """Trains every (ratio, seed); returns {ratio: {'seeds': [...], 'last': [...], 'best': [...],
    scalar: [...]}}, every list in `seeds` order.

    A reported scalar that a run never logged (e.g. a precision with no pseudo labels) is NaN.
    Only process 0 writes metrics.jsonl, so only process 0 reads the reported scalars.
    With `tabulate_only` nothing is trained: each run's results.json is read instead.
    """
    import jax

    from mlrpl_jax.core import train

    if jax.process_index() != 0:
        report_scalars = ()

    if tabulate_only:
        finished = {
            (ratio, seed): finished_results(config, _run_dir(workdir, ratio, seed))
            for ratio in known_ratios
            for seed in seeds
        }
    table: dict[str, dict[str, list[float]]] = {}
    for ratio in known_ratios:
        for seed in seeds:
            run_config = config.copy_and_resolve_references()
            run_config.known_ratio = ratio
            run_config.seed = seed
            config_lib.validate_config(run_config)
            run_dir = _run_dir(workdir, ratio, seed)
            if tabulate_only:
                results = finished[(ratio, seed)]
            else:
                started = time.time()
                if jax.process_index() == 0:
                    print(f"{method_label(config)} p={ratio:g} seed={seed}: ", end="", flush=True)
                results = train.train_and_evaluate(run_config, run_dir)
            if jax.process_index() == 0 and not tabulate_only:
                print(
                    f"mAP {results['last']['mAP']:.2f} (last epoch), "
                    f"{results['best']['mAP']:.2f} (best), {time.time() - started:.0f} s",
                    flush=True,
                )
            entry = table.setdefault(f"{ratio:g}", {"seeds": [], "last": [], "best": []})
            entry["seeds"].append(seed)
            entry["last"].append(results["last"]["mAP"])
            entry["best"].append(results["best"]["mAP"])
            for name, value in last_logged_values(run_dir, report_scalars).items():
                entry.setdefault(name, []).append(value)
    return table


def _run_dir(workdir: str, ratio: float, seed: int) -> str:
    return str(epath.Path(workdir) / f"p{ratio:g}_s{seed}")


def finished_results(config, run_dir: str) -> dict:
    """The results.json of a run of `config` that trained all its epochs, or SweepError."""
    path = epath.Path(run_dir) / "results.json"
    if not path.exists():
        raise SweepError(
            f"{run_dir} holds no finished run (no results.json); run the sweep "
            "without --tabulate_only to train it"
        )
    results = json.loads(path.read_text())
    if results["last"] is None or results["last"]["epoch"] != config.epochs - 1:
        raise SweepError(
            f"{run_dir} stopped before epoch {config.epochs - 1} of this config; "
            "run the sweep without --tabulate_only to finish it"
        )
    return results


def last_logged_values(run_dir: str, names: tuple[str, ...]) -> dict[str, float]:
    """The last value of each of `names` in `run_dir`/metrics.jsonl (NaN if never logged)."""
    values = {name: float("nan") for name in names}
    if not names:
        return values
    for line in (epath.Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        values.update({name: record[name] for name in names if name in record})
    return values


# Keys of a sweep table entry that are not reported scalars.
ENTRY_KEYS = ("seeds", "last", "best")


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof = 1; NaN for one value) over the logged (non-NaN) values, and
    how many there were."""
    logged = [v for v in values if not np.isnan(v)]
    if not logged:
        return float("nan"), float("nan"), 0
    std = float(np.std(logged, ddof=1)) if len(logged) > 1 else float("nan")
    return float(np.mean(logged)), std, len(logged)


def _cell(values: list[float]) -> str:
    mean, std, logged = _mean_std(values)
    if not logged:
        return "n/a"
    text = f"{mean:.2f}" if logged == 1 else f"{mean:.2f} ± {std:.2f}"
    return text if logged == len(values) else f"{text} ({logged}/{len(values)} runs)"


def _scalar_names(tables) -> list[str]:
    names: list[str] = []
    for table in tables:
        for entry in table.values():
            names += [n for n in entry if n not in ENTRY_KEYS and n not in names]
    return names


def format_table(table: dict, method: str, dataset: str) -> str:
    """Markdown: mAP of the last and best epoch, then any reported scalar, mean ± sample std
    over seeds (the mean alone for one seed).

    A reported scalar some runs did not log is averaged over the runs that did, with the count.
    """
    scalars = [name for name in next(iter(table.values()), {}) if name not in ENTRY_KEYS]
    header = ["known proportion", "last epoch", "best epoch", *scalars, "runs"]
    lines = [
        f"{method} on {dataset}: test mAP (%), mean ± sample std over seeds",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for ratio, entry in table.items():
        cells = [
            ratio,
            _cell(entry["last"]),
            _cell(entry["best"]),
            *(_cell(entry[name]) for name in scalars),
            str(len(entry["last"])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Config files and overrides.


def split_config_spec(spec: str) -> tuple[str, str | None]:
    """`path.py:arg` -> (path.py, arg); `path.py` -> (path.py, None), as config_flags splits."""
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def config_name(spec: str) -> str:
    """The sub-workdir name of a config: the file's stem, `<stem>_<arg>` with a `:arg`."""
    path, arg = split_config_spec(spec)
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if arg is None else f"{stem}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', arg)}"


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Imports the module at `path` and returns its `get_config()` (`get_config(arg)` for `:arg`).

    Raises ConfigError when the file is missing or has no usable get_config.
    """
    path, arg = split_config_spec(spec)
    if not os.path.isfile(path):
        raise config_lib.ConfigError(f"config file {path!r} does not exist")
    module_name = f"_mlrpl_sweep_config_{config_name(spec)}"  # not put in sys.modules
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise config_lib.ConfigError(f"config file {path!r} cannot be imported as a module")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise config_lib.ConfigError(f"config file {path!r} has no get_config() function")
    config = module.get_config() if arg is None else module.get_config(arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise config_lib.ConfigError(
            f"{spec}: get_config() returned {type(config).__name__}, not a ConfigDict"
        )
    return config


def _parse_value(key: str, text: str, current):
    try:
        if isinstance(current, bool):
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise config_lib.ConfigError(
            f"--set {key}={text}: config key '{key}' is of type {type(current).__name__} "
            f"(now {current!r}), and {text!r} is not one"
        ) from None
    if isinstance(current, str):
        return text
    raise config_lib.ConfigError(
        f"--set {key}={text}: config key '{key}' holds a "
        f"{type(current).__name__}, which --set cannot parse"
    )


def _unknown_key(section: ml_collections.ConfigDict, prefix: str, name: str):
    valid = ", ".join(sorted(prefix + k for k in section.keys()))
    raise config_lib.ConfigError(f"unknown config key '{prefix + name}'. Valid keys here: {valid}")


def apply_overrides(config: ml_collections.ConfigDict, assignments: list[str]) -> None:
    """Applies `key=value` overrides in place, each value parsed by the type of the existing key.

    Raises ConfigError (as validate_config does) for an unknown key, a section, or a value that
    does not parse as the key's type.
    """
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise config_lib.ConfigError(f"--set expects key=value, got {assignment!r}")
        section, prefix = config, ""
        *parents, leaf = key.split(".")
        for name in parents:
            if name not in section:
                _unknown_key(section, prefix, name)
            if not isinstance(section[name], ml_collections.ConfigDict):
                raise config_lib.ConfigError(
                    f"--set {assignment}: config key '{prefix + name}' is not a section"
                )
            section, prefix = section[name], prefix + name + "."
        if leaf not in section:
            _unknown_key(section, prefix, leaf)
        if isinstance(section[leaf], ml_collections.ConfigDict):
            raise config_lib.ConfigError(f"--set {assignment}: config key '{key}' is a section")
        section[leaf] = _parse_value(key, text, section[leaf])


def method_label(config: ml_collections.ConfigDict) -> str:
    """The config's method, SATL with its base method: `satl(dsrb)`."""
    method = str(config.method)
    section = config.get(method)
    if isinstance(section, ml_collections.ConfigDict) and section.get("base_method"):
        return f"{method}({section.base_method})"
    return method


# ---------------------------------------------------------------------------------------------
# Comparison of several configs.


COMPARISON_RULE = (
    "gain = paired difference of the last-epoch mAP from the reference's at the "
    "same proportion and seed (same mask, initialisation and data order), mean "
    "over seeds with its 95 % Student-t interval; beats = the whole interval is "
    "above 0, below = under 0, otherwise not settled; one seed gives no verdict"
)


def _by_seed(entry: dict, key: str = "last") -> dict[int, float]:
    return dict(zip(entry["seeds"], entry[key]))


def comparison_rows(tables: dict[str, dict], methods: dict[str, str]) -> list[dict]:
    """One row per (known proportion, config), proportions in ascending order.

    The first config of `tables` is the reference. For every other config with a reference run
    at the proportion, `gain` is the paired gain over the shared seeds (mlrpl_jax/paired_gain.py)
    with its interval and `verdict`; for the reference itself, and where the reference lacks
    the proportion, they are None.
    """
    reference = next(iter(tables))
    ratios: list[str] = []
    for table in tables.values():
        ratios += [r for r in table if r not in ratios]
    ratios.sort(key=float)
    scalars = _scalar_names(tables.values())
    rows = []
    for ratio in ratios:
        ref = tables[reference].get(ratio)
        for name, table in tables.items():
            if ratio not in table:
                continue
            entry = table[ratio]
            last = paired_gain.mean_interval(entry["last"])
            best_mean, best_std, _ = _mean_std(entry["best"])
            gain = None
            if ref is not None and name != reference:
                gain = paired_gain.paired_gain(_by_seed(entry), _by_seed(ref))
            rows.append(
                {
                    "config": name,
                    "method": methods.get(name, name),
                    "known_ratio": ratio,
                    "last_mean": last.mean,
                    "last_std": _mean_std(entry["last"])[1],
                    "last_low": last.low,
                    "last_high": last.high,
                    "best_mean": best_mean,
                    "best_std": best_std,
                    "gain": None if gain is None else gain.interval.mean,
                    "gain_low": None if gain is None else gain.interval.low,
                    "gain_high": None if gain is None else gain.interval.high,
                    "gains": None if gain is None else list(gain.gains),
                    "paired_seeds": None if gain is None else list(gain.seeds),
                    "verdict": None if gain is None else gain.verdict,
                    "runs": len(entry["last"]),
                    "scalars": {
                        s: dict(zip(("mean", "std", "logged"), _mean_std(entry[s])))
                        for s in scalars
                        if s in entry
                    },
                    "values": entry,
                }
            )
    return rows


def _gain_cell(row: dict) -> str:
    if row["paired_seeds"] and len(row["paired_seeds"]) > 1:
        return f"{row['gain']:+.2f} [{row['gain_low']:+.2f}, {row['gain_high']:+.2f}]"
    return f"{row['gain']:+.2f}"


def format_comparison(tables: dict[str, dict], methods: dict[str, str], dataset: str) -> str:
    """Markdown comparison of several configs' tables ({name: run_sweep table}).

    The first config is the reference; its rows read "reference" in the verdict column.
    """
    reference = next(iter(tables))
    rows = comparison_rows(tables, methods)
    scalars = _scalar_names(tables.values())
    header = [
        "known proportion",
        "config",
        "method",
        "last epoch",
        "best epoch",
        "gain (last, 95 % CI)",
        "verdict",
        *scalars,
        "runs",
    ]
    lines = [
        f"Methods on {dataset}: test mAP (%), mean ± sample std over seeds; reference: "
        f"{reference} ({methods.get(reference, reference)}). {COMPARISON_RULE}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        entry = row["values"]
        if row["config"] == reference:
            gain, verdict = "—", "reference"
        elif row["gain"] is None:
            gain, verdict = "n/a", "n/a (no reference run)"
        else:
            gain, verdict = _gain_cell(row), row["verdict"]
        cells = [
            row["known_ratio"],
            row["config"],
            row["method"],
            _cell(entry["last"]),
            _cell(entry["best"]),
            gain,
            verdict,
            *(_cell(entry[s]) if s in entry else "n/a" for s in scalars),
            str(row["runs"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def plot_comparison(
    tables: dict[str, dict], methods: dict[str, str], dataset: str, path: str
) -> str:
    """Draws last-epoch mAP (mean, error bar = its 95 % Student-t interval over seeds; none for
    one seed) against the known proportion.

    One line per config, labelled with its method. Needs matplotlib (ImportError otherwise); uses
    the Agg canvas directly, so no global pyplot state or display is involved. Returns `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    labels = [methods.get(name, name) for name in tables]
    for name, label, table in zip(tables, labels, tables.values()):
        ratios = sorted(table, key=float)
        intervals = [paired_gain.mean_interval(table[r]["last"]) for r in ratios]
        if labels.count(label) > 1:
            label = f"{label} ({name})"
        axes.errorbar(
            [float(r) for r in ratios],
            [i.mean for i in intervals],
            yerr=[0.0 if i.n < 2 else i.half_width for i in intervals],
            marker="o",
            capsize=3,
            label=label,
        )
    axes.set_xlabel("known label proportion")
    axes.set_ylabel("test mAP (%), last epoch (bars: 95 % CI over seeds)")
    axes.set_title(f"mAP vs known label proportion on {dataset}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with epath.Path(path).open("wb") as f:
        figure.savefig(f, format="png")
    return path


def write_comparison(
    workdir: str, tables: dict[str, dict], methods: dict[str, str], dataset: str
) -> str:
    """Writes comparison.md, comparison.json and the plot into `workdir`; returns the markdown.

    Without matplotlib the plot is skipped with one printed line naming the `plot` extra.
    """
    text = format_comparison(tables, methods, dataset)
    directory = epath.Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "comparison.md").write_text(text + "\n", encoding="utf-8")
    summary = {
        "dataset": dataset,
        "reference": next(iter(tables)),
        "rule": COMPARISON_RULE,
        "methods": methods,
        "rows": comparison_rows(tables, methods),
    }
    storage.write_json(directory / "comparison.json", _finite_or_none(summary))
    plot_path = str(directory / PLOT_FILE)
    try:
        plot_comparison(tables, methods, dataset, plot_path)
    except ImportError:
        print(PLOT_MISSING.format(path=plot_path))
    return text


def _write_table(workdir: str, table: dict, method: str, dataset: str) -> str:
    text = format_table(table, method, dataset)
    directory = epath.Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "table.md").write_text(text + "\n", encoding="utf-8")
    storage.write_json(directory / "table.json", table)
    return text


def _dataset_name(configs) -> str:
    names: list[str] = []
    for config in configs:
        names += [config.data.name] if config.data.name not in names else []
    return ", ".join(names)


def run_comparison(
    configs: dict[str, ml_collections.ConfigDict],
    workdir: str,
    known_ratios: list[float],
    seeds: list[int],
    report_scalars: tuple[str, ...] = (),
    reference_only_ratios: tuple[float, ...] = (),
    tabulate_only: bool = False,
) -> dict[str, dict]:
    """Sweeps each config in `workdir`/<name> and compares them; returns {name: table}.

    The first config is the reference; it alone also runs `reference_only_ratios` (e.g. the
    complete-label bound 1.0). Process 0 writes each `<name>/table.{md,json}`, then
    `comparison.{md,json}` and the plot, and prints the comparison.
    """
    import jax

    reference = next(iter(configs))
    tables = {
        name: run_sweep(
            config,
            str(epath.Path(workdir) / name),
            [*known_ratios, *reference_only_ratios] if name == reference else known_ratios,
            seeds,
            report_scalars,
            tabulate_only,
        )
        for name, config in configs.items()
    }
    if jax.process_index() == 0:
        methods = {name: method_label(config) for name, config in configs.items()}
        for name, config in configs.items():
            _write_table(
                str(epath.Path(workdir) / name), tables[name], methods[name], config.data.name
            )
        print(write_comparison(workdir, tables, methods, _dataset_name(configs.values())))
    return tables


def _load_configs(specs: list[str], overrides: list[str]) -> dict[str, ml_collections.ConfigDict]:
    configs: dict[str, ml_collections.ConfigDict] = {}
    for spec in specs:
        name = config_name(spec)
        if name in configs:
            raise config_lib.ConfigError(
                f"two configs would share the sub-workdir {name!r}: "
                f"{', '.join(s for s in specs if config_name(s) == name)}"
            )
        config = load_config_file(spec)
        apply_overrides(config, overrides)
        try:
            config_lib.validate_config(config)
            run_inputs.check_run_inputs(config)
        except config_lib.ConfigError as error:
            raise config_lib.ConfigError(f"{spec}: {error}") from None
        configs[name] = config
    return configs


def main(argv: list[str]) -> None:
    if (_CONFIG.value is None) == (not _CONFIGS.value):
        raise app.UsageError(
            "give exactly one of --config=FILE (one config) and "
            "--configs=FILE,FILE,... (several configs, compared)"
        )
    ratios = [float(r) for r in _KNOWN_RATIOS.value]
    seeds = [int(s) for s in _SEEDS.value]
    report_scalars = tuple(_REPORT_SCALARS.value)
    try:
        if _CONFIGS.value:
            configs = _load_configs(_CONFIGS.value, _SET.value)
        else:
            config = _CONFIG.value
            apply_overrides(config, _SET.value)
    except config_lib.ConfigError as error:
        raise app.UsageError(str(error)) from None

    try:
        if _CONFIGS.value:
            cli.start(argv, next(iter(configs.values())))
            run_comparison(
                configs,
                _WORKDIR.value,
                ratios,
                seeds,
                report_scalars,
                tuple(float(r) for r in _REFERENCE_ONLY_RATIOS.value),
                _TABULATE_ONLY.value,
            )
            return
        cli.start(argv, config)
        table = run_sweep(
            config, _WORKDIR.value, ratios, seeds, report_scalars, _TABULATE_ONLY.value
        )
    except SweepError as error:
        raise app.UsageError(str(error)) from None
    import jax

    if jax.process_index() != 0:  # process 0 writes the table
        return
    print(_write_table(_WORKDIR.value, table, config.method, config.data.name))


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])  # here, so importing the module requires nothing
    app.run(main)
