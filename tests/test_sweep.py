"""The sweep driver: one run per (proportion, seed), resumable, and its mean ± std table."""
import json
import math

from mlrpl_jax import sweep
from test_end_to_end import tiny_run_config


def test_sweep_trains_each_run_once_and_tabulates(digit_scenes_dir, tmp_path):
    config = tiny_run_config(digit_scenes_dir, 1)
    table = sweep.run_sweep(config, str(tmp_path), [0.5], [0, 1], ("train/loss", "never/logged"))
    entry = table["0.5"]
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
    assert again["0.5"]["last"] == entry["last"] and again["0.5"]["train/loss"] == entry["train/loss"]
    assert [(tmp_path / f"p0.5_s{s}" / "metrics.jsonl").stat().st_size for s in (0, 1)] == log_sizes


def test_last_logged_values_takes_the_last_record_holding_each_name(tmp_path):
    records = [{"step": 1, "a": 1.0}, {"step": 2, "b": 5.0}, {"step": 3, "a": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    values = sweep.last_logged_values(str(tmp_path), ("a", "b", "c"))
    assert values["a"] == 2.0 and values["b"] == 5.0 and math.isnan(values["c"])
    assert sweep.last_logged_values(str(tmp_path / "absent"), ()) == {}


def test_format_table_mean_std_and_partially_logged_scalars():
    table = {"0.1": {"last": [30.0, 32.0], "best": [31.0, 33.0], "satl/positive_precision": [0.8, float("nan")]},
             "0.5": {"last": [50.0, 50.0], "best": [51.0, 51.0], "satl/positive_precision": [float("nan")] * 2}}
    text = sweep.format_table(table, "satl", "digit_scenes")
    lines = text.splitlines()
    assert lines[0] == "satl on digit_scenes: test mAP (%), mean ± std over seeds"
    assert lines[2] == "| known proportion | last epoch | best epoch | satl/positive_precision | runs |"
    assert lines[4] == "| 0.1 | 31.00 ± 1.00 | 32.00 ± 1.00 | 0.80 ± 0.00 (1/2 runs) | 2 |"
    assert lines[5] == "| 0.5 | 50.00 ± 0.00 | 51.00 ± 0.00 | n/a | 2 |"
