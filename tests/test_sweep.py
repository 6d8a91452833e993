"""The sweep driver: one run per (proportion, seed), resumable, and its mean ± std table."""

import json
import math
import os

import numpy as np
from test_end_to_end import tiny_run_config

from mlrpl_jax import sweep
from mlrpl_jax.data.label_embeddings import random_embeddings


def test_sweep_trains_each_run_once_and_tabulates(
    digit_scenes_dir, tmp_path, tmp_path_factory, capsys
):
    config = tiny_run_config(digit_scenes_dir, 1)
    # Both seeds read seed 0's random label embeddings from a file. Drawn from each run's seed
    # (embeddings.kind = 'random'), they enter the compiled train step as constants, so the
    # second seed compiled a step of its own (~30 s on a cold cache); from one file both runs
    # share one program. The seed still reaches the run (initialisation, label drop, batch
    # order): their mAPs differ, asserted below.
    embeddings = tmp_path_factory.mktemp("embeddings") / "digits.npy"
    np.save(embeddings, random_embeddings(10, config.embeddings.dim, seed=0))
    config.embeddings.kind, config.embeddings.path = "npy", str(embeddings)
    table = sweep.run_sweep(config, str(tmp_path), [0.5], [0, 1], ("train/loss", "never/logged"))
    entry = table["0.5"]
    printed = capsys.readouterr().out.splitlines()  # one progress line per run, nothing else
    assert [line.split(": mAP ")[0] for line in printed] == [
        "baseline p=0.5 seed=0",
        "baseline p=0.5 seed=1",
    ]
    assert printed[0].startswith(f"baseline p=0.5 seed=0: mAP {entry['last'][0]:.2f} (last epoch)")
    assert len(entry["last"]) == len(entry["best"]) == 2
    assert entry["last"][0] != entry["last"][1]  # the seed reaches the run
    for seed in (0, 1):
        results = json.loads((tmp_path / f"p0.5_s{seed}" / "results.json").read_text())
        assert entry["last"][seed] == results["last"]["mAP"]
    assert all(math.isfinite(v) and v > 0 for v in entry["train/loss"])
    assert all(math.isnan(v) for v in entry["never/logged"])

    # A finished sweep run again trains nothing more and gives the same table.
    log_sizes = [(tmp_path / f"p0.5_s{s}" / "metrics.jsonl").stat().st_size for s in (0, 1)]
    again = sweep.run_sweep(config, str(tmp_path), [0.5], [0, 1], ("train/loss", "never/logged"))
    assert (
        again["0.5"]["last"] == entry["last"] and again["0.5"]["train/loss"] == entry["train/loss"]
    )
    assert [(tmp_path / f"p0.5_s{s}" / "metrics.jsonl").stat().st_size for s in (0, 1)] == log_sizes


def test_last_logged_values_takes_the_last_record_holding_each_name(tmp_path):
    records = [{"step": 1, "a": 1.0}, {"step": 2, "b": 5.0}, {"step": 3, "a": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    values = sweep.last_logged_values(str(tmp_path), ("a", "b", "c"))
    assert values["a"] == 2.0 and values["b"] == 5.0 and math.isnan(values["c"])
    assert sweep.last_logged_values(str(tmp_path / "absent"), ()) == {}


def test_format_table_mean_std_and_partially_logged_scalars():
    table = {
        "0.1": {
            "seeds": [0, 1],
            "last": [30.0, 32.0],
            "best": [31.0, 33.0],
            "satl/positive_precision": [0.8, float("nan")],
        },
        "0.5": {
            "seeds": [0, 1],
            "last": [50.0, 50.0],
            "best": [51.0, 51.0],
            "satl/positive_precision": [float("nan")] * 2,
        },
    }
    text = sweep.format_table(table, "satl", "digit_scenes")
    lines = text.splitlines()
    assert lines[0] == "satl on digit_scenes: test mAP (%), mean ± sample std over seeds"
    assert (
        lines[2]
        == "| known proportion | last epoch | best epoch | satl/positive_precision | runs |"
    )
    # Sample std (ddof = 1) of 30, 32 is √2; a scalar logged by one run shows its value alone.
    assert lines[4] == "| 0.1 | 31.00 ± 1.41 | 32.00 ± 1.41 | 0.80 (1/2 runs) | 2 |"
    assert lines[5] == "| 0.5 | 50.00 ± 0.00 | 51.00 ± 0.00 | n/a | 2 |"


# --- several configs compared ------------------------------------------------------------------

import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from mlrpl_jax.config import ConfigError, base_config, digit_scenes_config  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent

# Seeds 0-2 everywhere; per-seed gains over the reference give the intervals by hand with
# t_{.975,2} = 4.3027 (mlrpl_jax/paired_gain.py; tests/test_paired_gain.py checks the rule).
HAND_TABLES = {
    "baseline_digits": {
        "0.1": {"seeds": [0, 1, 2], "last": [30.0, 32.0, 31.0], "best": [31.0, 33.0, 32.0]},
        "0.5": {"seeds": [0, 1, 2], "last": [50.0, 52.0, 51.0], "best": [51.0, 53.0, 52.0]},
    },
    # 0.1: gains 4, 4.5, 3.5 -> 4 ± 4.3027 · 0.5 / √3 = [2.76, 5.24], beats.
    # 0.5: gains -2, 2, 0 -> 0 ± 4.3027 · 2 / √3 = [-4.97, 4.97], not settled.
    "sst_digits": {
        "0.1": {"seeds": [0, 1, 2], "last": [34.0, 36.5, 34.5], "best": [35.0, 37.0, 36.0]},
        "0.5": {"seeds": [0, 1, 2], "last": [48.0, 54.0, 51.0], "best": [51.0, 57.0, 54.0]},
    },
    # 0.1, seeds 1 and 2 only: gains -1.5, -1.0 -> -1.25 ± 12.7062 · 0.3536 / √2, not settled;
    # 0.3: no reference run.
    "satl_dsrb_digits": {
        "0.1": {"seeds": [2, 1], "last": [30.0, 30.5], "best": [30.0, 30.5]},
        "0.3": {"seeds": [0], "last": [40.0], "best": [41.0]},
    },
}
HAND_METHODS = {
    "baseline_digits": "baseline",
    "sst_digits": "sst",
    "satl_dsrb_digits": "satl(dsrb)",
}


def test_format_comparison_paired_gain_interval_and_verdict():
    text = sweep.format_comparison(HAND_TABLES, HAND_METHODS, "digit_scenes")
    lines = text.splitlines()
    assert lines[0].startswith(
        "Methods on digit_scenes: test mAP (%), mean ± sample std over "
        "seeds; reference: baseline_digits (baseline)."
    )
    assert "95 % Student-t interval" in lines[0] and "one seed gives no verdict" in lines[0]
    assert lines[2] == (
        "| known proportion | config | method | last epoch | best epoch "
        "| gain (last, 95 % CI) | verdict | runs |"
    )
    assert lines[4:] == [
        "| 0.1 | baseline_digits | baseline | 31.00 ± 1.00 | 32.00 ± 1.00 | — | reference | 3 |",
        "| 0.1 | sst_digits | sst | 35.00 ± 1.32 | 36.00 ± 1.00 | +4.00 [+2.76, +5.24] | beats "
        "| 3 |",
        "| 0.1 | satl_dsrb_digits | satl(dsrb) | 30.25 ± 0.35 | 30.25 ± 0.35 "
        "| -1.25 [-4.43, +1.93] | not settled | 2 |",
        "| 0.3 | satl_dsrb_digits | satl(dsrb) | 40.00 | 41.00 | n/a | n/a (no reference run) "
        "| 1 |",
        "| 0.5 | baseline_digits | baseline | 51.00 ± 1.00 | 52.00 ± 1.00 | — | reference | 3 |",
        "| 0.5 | sst_digits | sst | 51.00 ± 3.00 | 54.00 ± 3.00 | +0.00 [-4.97, +4.97] "
        "| not settled | 3 |",
    ]


def test_format_comparison_reports_scalars_and_write_comparison_files(tmp_path):
    tables = {
        "a": {"0.5": {"seeds": [0], "last": [50.0], "best": [50.0], "x/y": [0.5]}},
        "b": {"0.5": {"seeds": [0], "last": [48.0], "best": [50.0], "x/y": [float("nan")]}},
    }
    lines = sweep.format_comparison(tables, {"a": "baseline", "b": "sst"}, "d").splitlines()
    assert lines[2].endswith("| verdict | x/y | runs |")
    # One seed: the gain, and no verdict.
    assert lines[5] == "| 0.5 | b | sst | 48.00 | 50.00 | -2.00 | no verdict (1 seed) | n/a | 1 |"

    text = sweep.write_comparison(str(tmp_path), tables, {"a": "baseline", "b": "sst"}, "d")
    assert (tmp_path / "comparison.md").read_text() == text + "\n"
    assert (tmp_path / sweep.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "comparison.json").read_text())  # strict JSON: NaN -> null
    assert summary["reference"] == "a" and summary["rows"][1]["gain"] == -2.0
    assert summary["rows"][1]["verdict"] == "no verdict (1 seed)"
    assert summary["rows"][1]["gain_low"] is None and summary["rows"][1]["gains"] == [-2.0]
    assert summary["rows"][1]["scalars"]["x/y"]["mean"] is None


def test_write_comparison_without_matplotlib_prints_the_extra(tmp_path, monkeypatch, capsys):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    sweep.write_comparison(str(tmp_path), HAND_TABLES, HAND_METHODS, "digit_scenes")
    printed = capsys.readouterr().out.splitlines()
    assert printed == [sweep.PLOT_MISSING.format(path=str(tmp_path / sweep.PLOT_FILE))]
    assert "pip install 'mlrpl_jax[plot]'" in printed[0]


def test_plot_comparison_writes_a_png(tmp_path):
    path = sweep.plot_comparison(
        HAND_TABLES, HAND_METHODS, "digit_scenes", str(tmp_path / "plot.png")
    )
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert 300 <= width <= 2000 and 200 <= height <= 2000


def test_apply_overrides_parses_by_the_type_of_the_existing_key():
    config = base_config()
    sweep.apply_overrides(
        config,
        [
            "epochs=3",
            "optim.lr=0.5",
            "known_ratio=1",
            "logging.progress_bar=False",
            "data.data_dir=/a=b,c",
            "data.name=digit_scenes",
        ],
    )
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert config.optim.lr == 0.5 and config.known_ratio == 1.0
    assert isinstance(config.known_ratio, float)
    assert config.logging.progress_bar is False
    assert config.data.data_dir == "/a=b,c"  # only the first '=' splits; commas are kept
    sweep.apply_overrides(config, ["logging.progress_bar=true"])
    assert config.logging.progress_bar is True

    with pytest.raises(
        ConfigError,
        match=r"unknown config key 'optim.lrr'\. Valid keys here: "
        r".*optim\.lr",
    ):
        sweep.apply_overrides(config, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key 'nosuch'"):
        sweep.apply_overrides(config, ["nosuch.key=1"])
    with pytest.raises(ConfigError, match="of type int"):
        sweep.apply_overrides(config, ["epochs=2.5"])
    with pytest.raises(ConfigError, match="of type bool"):
        sweep.apply_overrides(config, ["logging.progress_bar=maybe"])
    with pytest.raises(ConfigError, match="is a section"):
        sweep.apply_overrides(config, ["optim=1"])
    with pytest.raises(ConfigError, match="is not a section"):
        sweep.apply_overrides(config, ["epochs.x=1"])
    with pytest.raises(ConfigError, match="key=value"):
        sweep.apply_overrides(config, ["epochs"])


def test_load_config_file_with_and_without_arg():
    baseline = sweep.load_config_file(str(REPO / "configs" / "baseline_digits.py"))
    assert baseline.to_dict() == digit_scenes_config("baseline").to_dict()
    assert sweep.config_name(str(REPO / "configs" / "baseline_digits.py")) == "baseline_digits"

    tiny_sarb = sweep.load_config_file(str(REPO / "tests" / "support" / "tiny_config.py") + ":sarb")
    assert tiny_sarb.method == "sarb" and tiny_sarb.sarb.mixup_epoch == 0
    assert (
        sweep.load_config_file(str(REPO / "tests" / "support" / "tiny_config.py")).method
        == "baseline"
    )
    assert sweep.config_name("tests/support/tiny_config.py:sarb") == "tiny_config_sarb"

    satl_dsrb = sweep.load_config_file(str(REPO / "configs" / "satl_dsrb_digits.py"))
    assert sweep.method_label(satl_dsrb) == "satl(dsrb)"
    assert sweep.method_label(tiny_sarb) == "sarb"
    with pytest.raises(ConfigError, match="does not exist"):
        sweep.load_config_file(str(REPO / "configs" / "nosuch.py"))


def test_cli_needs_exactly_one_of_config_and_configs(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "mlrpl_jax.sweep", f"--workdir={tmp_path}", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )

    both = run("--config=configs/baseline_digits.py", "--configs=configs/sst_digits.py")
    assert both.returncode != 0 and "exactly one of --config" in both.stderr
    unknown = run("--configs=configs/baseline_digits.py", "--set=optim.lrr=1")
    assert unknown.returncode != 0 and "unknown config key 'optim.lrr'" in unknown.stderr
    assert not any(tmp_path.iterdir())


def test_run_comparison_layout_tables_and_plot(tmp_path, monkeypatch):
    """The wiring of run_comparison, with training replaced by a stub (a real run costs ~30 s)."""
    from mlrpl_jax.core import train

    trained = []

    def fake_train(config, workdir):
        trained.append(workdir)
        pathlib.Path(workdir).mkdir(parents=True)
        last = (
            {"baseline": 40.0, "sarb": 45.0}[config.method] + 10 * config.known_ratio + config.seed
        )
        (pathlib.Path(workdir) / "metrics.jsonl").write_text(json.dumps({"train/loss": 0.5}) + "\n")
        return {"last": {"mAP": last}, "best": {"mAP": last + 1}}

    monkeypatch.setattr(train, "train_and_evaluate", fake_train)
    tiny = str(REPO / "tests" / "support" / "tiny_config.py")
    configs = {sweep.config_name(s): sweep.load_config_file(s) for s in (tiny, tiny + ":sarb")}
    tables = sweep.run_comparison(configs, str(tmp_path), [0.1, 0.5], [0, 1], ("train/loss",))
    assert list(tables) == ["tiny_config", "tiny_config_sarb"]
    assert sorted(trained) == sorted(
        str(tmp_path / n / f"p{r}_s{s}") for n in tables for r in ("0.1", "0.5") for s in (0, 1)
    )
    assert tables["tiny_config_sarb"]["0.5"]["last"] == [50.0, 51.0]
    for name in tables:
        assert json.loads((tmp_path / name / "table.json").read_text()) == tables[name]
        assert (
            (tmp_path / name / "table.md")
            .read_text()
            .startswith(
                "sarb on digit_scenes/tiny"
                if name.endswith("sarb")
                else "baseline on digit_scenes/tiny"
            )
        )
    lines = (tmp_path / "comparison.md").read_text().splitlines()
    # Sample std of 50, 51 is 0.71; the gain is +5 at both seeds, so its interval is a point.
    assert lines[-1] == (
        "| 0.5 | tiny_config_sarb | sarb | 50.50 ± 0.71 | 51.50 ± 0.71 "
        "| +5.00 [+5.00, +5.00] | beats | 0.50 ± 0.00 | 2 |"
    )
    rows = json.loads((tmp_path / "comparison.json").read_text())["rows"]
    assert [(r["config"], r["known_ratio"]) for r in rows] == [
        ("tiny_config", "0.1"),
        ("tiny_config_sarb", "0.1"),
        ("tiny_config", "0.5"),
        ("tiny_config_sarb", "0.5"),
    ]
    assert (tmp_path / sweep.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reference_only_ratios_run_for_the_first_config_alone(tmp_path, monkeypatch):
    from mlrpl_jax.core import train

    trained = []

    def fake_train(config, workdir):
        trained.append(os.path.relpath(workdir, tmp_path))
        pathlib.Path(workdir).mkdir(parents=True)
        (pathlib.Path(workdir) / "metrics.jsonl").write_text("")
        return {"last": {"mAP": 50.0}, "best": {"mAP": 50.0}}

    monkeypatch.setattr(train, "train_and_evaluate", fake_train)
    tiny = str(REPO / "tests" / "support" / "tiny_config.py")
    configs = {sweep.config_name(s): sweep.load_config_file(s) for s in (tiny, tiny + ":sarb")}
    tables = sweep.run_comparison(configs, str(tmp_path), [0.1], [0], reference_only_ratios=(1.0,))
    assert sorted(trained) == [
        "tiny_config/p0.1_s0",
        "tiny_config/p1_s0",
        "tiny_config_sarb/p0.1_s0",
    ]
    assert list(tables["tiny_config"]) == ["0.1", "1"] and list(tables["tiny_config_sarb"]) == [
        "0.1"
    ]
    rows = json.loads((tmp_path / "comparison.json").read_text())["rows"]
    assert [(r["config"], r["known_ratio"]) for r in rows][-1] == ("tiny_config", "1")


def test_tabulate_only_rebuilds_the_comparison_of_runs_made_one_seed_at_a_time(
    tmp_path, monkeypatch
):
    from mlrpl_jax.core import train

    def fake_train(config, workdir):
        pathlib.Path(workdir).mkdir(parents=True)
        last = {"baseline": 40.0, "sarb": 45.0}[config.method] + config.seed
        results = {
            "last": {"epoch": config.epochs - 1, "mAP": last},
            "best": {"epoch": 0, "mAP": last + 1},
        }
        (pathlib.Path(workdir) / "results.json").write_text(json.dumps(results))
        (pathlib.Path(workdir) / "metrics.jsonl").write_text(json.dumps({"train/loss": 0.5}) + "\n")
        return results

    monkeypatch.setattr(train, "train_and_evaluate", fake_train)
    tiny = str(REPO / "tests" / "support" / "tiny_config.py")
    configs = {sweep.config_name(s): sweep.load_config_file(s) for s in (tiny, tiny + ":sarb")}
    for seed in (0, 1):  # the runs of each seed in their own sweep, as a seed-major loop makes them
        sweep.run_comparison(configs, str(tmp_path), [0.1], [seed], ("train/loss",))
    together = sweep.run_comparison(
        configs, str(tmp_path / "together"), [0.1], [0, 1], ("train/loss",)
    )

    def no_training(config, workdir):
        raise AssertionError("tabulate_only trained a run")

    monkeypatch.setattr(train, "train_and_evaluate", no_training)
    tabulated = sweep.run_comparison(
        configs, str(tmp_path), [0.1], [0, 1], ("train/loss",), tabulate_only=True
    )
    assert tabulated == together
    assert (tmp_path / "comparison.md").read_text() == (
        tmp_path / "together" / "comparison.md"
    ).read_text()
    with pytest.raises(sweep.SweepError, match="p0.1_s2 holds no finished run"):
        sweep.run_comparison(configs, str(tmp_path), [0.1], [0, 1, 2], tabulate_only=True)
    config = configs["tiny_config"].copy_and_resolve_references()
    config.epochs += 1
    with pytest.raises(sweep.SweepError, match="stopped before epoch 1"):
        sweep.run_sweep(config, str(tmp_path / "tiny_config"), [0.1], [0], tabulate_only=True)
