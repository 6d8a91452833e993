"""benchmarks/paired_run_gains.py: paired gains of run folders from their results.json."""

import json
import pathlib

import paired_run_gains
import pytest


def write_run(folder: pathlib.Path, name: str, last_map: float | None) -> None:
    run = folder / name
    run.mkdir(parents=True)
    if last_map is not None:  # None: an unfinished run, no results.json yet
        (run / "results.json").write_text(
            json.dumps({"last": {"mAP": last_map}, "best": {"mAP": last_map}})
        )


def test_rows_pair_the_finished_seeds_of_the_known_ratio(tmp_path):
    reference, variant = tmp_path / "baseline", tmp_path / "variant"
    for seed, value in enumerate([70.0, 71.0, 72.0]):
        write_run(reference, f"p0.1_s{seed}", value)
    write_run(reference, "p0.3_s0", 90.0)  # another proportion: not read
    write_run(variant, "p0.1_s0", 71.0)
    write_run(variant, "p0.1_s1", 73.0)
    write_run(variant, "p0.1_s2", None)
    write_run(variant, "p0.3_s0", 10.0)
    assert paired_run_gains.finished_last_map(str(reference), 0.1) == {0: 70.0, 1: 71.0, 2: 72.0}
    row = paired_run_gains.variant_row(
        "variant",
        paired_run_gains.finished_last_map(str(variant), 0.1),
        paired_run_gains.finished_last_map(str(reference), 0.1),
    )
    # Gains 1 and 2 on seeds 0 and 1: mean 1.5, s = 0.7071, t(0.975, 1) = 12.706,
    # half width 12.706 · 0.7071 / √2 = 6.353.
    assert row["seeds"] == [0, 1] and row["gain"] == pytest.approx(1.5)
    assert row["gain_low"] == pytest.approx(1.5 - 6.353, abs=1e-3)
    assert row["verdict"] == "not settled"
    assert row["mAP_mean"] == pytest.approx(72.0)
    assert row["mAP_std"] == pytest.approx(1.4142, abs=1e-4)
    assert "| variant | 72.00 ± 1.41 | +1.50 [-4.85, +7.85] | not settled | 2 |" in (
        paired_run_gains.markdown([row])
    )
