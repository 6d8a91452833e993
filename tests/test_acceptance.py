"""The acceptance check of a new host (mlrpl_jax/core/host_acceptance.py): the command on the
tiny config on 8 simulated CPU devices, the MFU against a chip's peak, the verdict."""

import json
import math
import pathlib
import subprocess
import sys

import pytest
from tiny_config import tiny_digit_config

from mlrpl_jax.core import host_acceptance
from mlrpl_jax.data.pipeline import DatasetNotPreparedError

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_acceptance_command_reports_devices_step_flops_input_rate_and_verdict(
    tmp_path, digit_scenes_dir
):
    """A subprocess, as the launch scripts run it: importing the command here would define the
    absl flags mlrpl_jax.main defines too."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlrpl_jax.acceptance",
            "--config=tests/support/tiny_config.py:baseline",
            f"--config.data.data_dir={digit_scenes_dir}",
            f"--workdir={tmp_path}",
            "--steps=1",
            "--input_batches=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / host_acceptance.RESULT_FILE).read_text())
    topology, dry, flops, inputs = (
        report["topology"],
        report["dry_run"],
        report["flops"],
        report["input"],
    )
    assert topology["platform"] == "cpu" and topology["process_count"] == 1
    assert topology["device_count"] == len(topology["devices"]) == 8  # tests/conftest.py
    assert report["config"]["train_images_shape"] == [16, 32, 32, 3]
    assert dry["step_s_all"] == [dry["step_s_median"]] and math.isfinite(dry["loss"])
    # XLA reports the FLOPs of the program one device runs; the rate divides them by the step.
    assert flops["train_step_flops_per_device"] > 0
    assert flops["achieved_flops_per_s_per_device"] == (
        flops["train_step_flops_per_device"] / dry["step_s_median"]
    )
    assert flops["mfu"] is None and flops["peak"] is None  # no peak for a CPU
    assert inputs["images_timed"] == 2 * 16 and inputs["batches_timed"] == 2
    assert inputs["slowest_process_images_per_s"] == min(inputs["images_per_s_per_process"]) > 0
    assert report["input_needed_images_per_s"] == round(16 / dry["step_s_median"], 1)
    keeps_up = inputs["slowest_process_images_per_s"] >= report["input_needed_images_per_s"]
    assert report["verdict"].startswith("OK: " if keeps_up else "INPUT-BOUND: ")
    assert report["verdict"].endswith("peak unknown for 'cpu', MFU not computed")
    assert result.stdout.rstrip().splitlines()[-2] == report["verdict"]


def test_an_unprepared_dataset_stops_the_check_before_any_compile(tmp_path):
    config = tiny_digit_config("baseline", batch_size=8, epochs=1, data_dir=str(tmp_path / "none"))
    with pytest.raises(DatasetNotPreparedError, match="digit_scenes/tiny"):
        host_acceptance.run(config, str(tmp_path / "work"), steps=1, input_batches=2)


def report_with(
    flops=None, step_s=0.1, device_kind="cpu", dtype="float32", slowest=100.0, needed=80.0, loss=0.5
):
    dry = {
        "train_step_flops_per_device": flops,
        "step_s_median": step_s,
        "loss": loss,
        "last_step_skipped": False,
    }
    return {
        "dry_run": dry,
        "flops": host_acceptance.flop_rate(dry, device_kind, dtype),
        "topology": {"device_kind": device_kind},
        "input_needed_images_per_s": needed,
        "input": {"slowest_process_images_per_s": slowest},
    }


def test_mfu_is_the_achieved_rate_over_the_chips_peak_for_the_compute_dtype():
    # A v5e chip (bf16 peak 197 TFLOP/s) doing 9.85 TFLOP in 0.1 s runs at half its peak
    # (up to the rounding of two float divisions: rel 1e-12).
    report = report_with(flops=9.85e12, device_kind="TPU v5 lite", dtype="bfloat16")
    assert report["flops"]["mfu"] == pytest.approx(0.5, rel=1e-12)
    assert report["flops"]["peak_basis"] == "TPU v5e bf16"
    assert report["flops"]["peak_flops_per_s_per_device"] == 197e12
    assert host_acceptance.verdict(report) == (
        "OK: the input pipeline keeps up (100.0 images/s per process against 80.0 consumed); "
        "MFU 50.0% of TPU v5e bf16"
    )
    # float32 at default precision runs on an H100's tf32 tensor cores (494.5 TFLOP/s).
    h100 = report_with(flops=49.45e12, device_kind="NVIDIA H100 80GB HBM3")["flops"]
    assert h100["peak_basis"].startswith("H100 SXM tf32") and h100["peak"]["fp32"] == 67e12
    assert h100["mfu"] == pytest.approx(1.0, rel=1e-12)


def test_verdict_names_an_input_bound_host_and_a_step_that_does_not_train():
    bound = host_acceptance.verdict(report_with(slowest=50.0, needed=80.0))
    assert bound.startswith(
        "INPUT-BOUND: the input pipeline gives 50.0 images/s per process against 80.0 consumed"
    )
    assert host_acceptance.verdict(report_with(loss=float("nan"))).startswith("FAIL: ")


@pytest.fixture
def stand_ins(tmp_path):
    """A stand-in python (and srun, gcloud) on PATH that records every command line it is given
    in `record` and exits with $ACCEPTANCE_STATUS when it runs the acceptance check."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    scripts = {
        "python": f'echo "$*" >> {record}\n'
        'if [[ "$1 $2" == "-m mlrpl_jax.acceptance" ]]; then\n'
        '  exit "${ACCEPTANCE_STATUS:-0}"\nfi',
        "srun": 'while [[ "$1" == --* ]]; do shift; done\nexec "$@"',
        "gcloud": f'echo "$*" >> {record}',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": str(bin_dir / "python"),
        "PORT": "1",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "TPU_NAME": "t",
        "ZONE": "z",
    }

    def launch(script, *, status=0, skip=False):
        if record.exists():
            record.unlink()
        result = subprocess.run(
            ["bash", str(REPO / "launch" / script), "--config=c.py", "--workdir=w"],
            env={**env, "ACCEPTANCE_STATUS": str(status), "SKIP_ACCEPTANCE": str(int(skip))},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.returncode, record.read_text().splitlines()

    return launch


def test_launch_scripts_run_the_acceptance_check_before_training_unless_skipped(stand_ins):
    args = "--config=c.py --workdir=w"
    cluster = " --coordinator_address=localhost:1 --num_processes=2 --process_id="
    status, lines = stand_ins("local_cluster.sh")
    assert status == 0 and sorted(lines[:2]) == [
        f"-m mlrpl_jax.acceptance {args}{cluster}{i}" for i in (0, 1)
    ]
    assert sorted(lines[2:]) == [f"-m mlrpl_jax.main {args}{cluster}{i}" for i in (0, 1)]
    status, lines = stand_ins("local_cluster.sh", status=1)  # a FAIL verdict: no training
    assert status == 1 and all("mlrpl_jax.acceptance" in line for line in lines)
    assert all("mlrpl_jax.main" in line for line in stand_ins("local_cluster.sh", skip=True)[1])

    status, lines = stand_ins("slurm_gpu.sbatch")
    assert status == 0  # lines[0]: the script's check that JAX finds a GPU
    assert lines[1:] == [f"-m mlrpl_jax.acceptance {args}", f"-m mlrpl_jax.main {args}"]
    assert stand_ins("slurm_gpu.sbatch", status=1)[0] == 1
    assert stand_ins("slurm_gpu.sbatch", skip=True)[1][1:] == [f"-m mlrpl_jax.main {args}"]

    status, [gcloud] = stand_ins("tpu_pod.sh")
    pod_args = "--distributed=on --config=c.py --workdir=w"
    assert status == 0 and f"python -m mlrpl_jax.acceptance {pod_args} && " in gcloud
    assert gcloud.endswith(f"python -m mlrpl_jax.main {pod_args}")
    assert "mlrpl_jax.acceptance" not in stand_ins("tpu_pod.sh", skip=True)[1][0]
