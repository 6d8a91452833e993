"""Two processes as one cluster train exactly like one process with the same global devices.

`python -m mlrpl_jax.main` runs as two local processes (2 simulated CPU devices each, gloo
collectives, coordinator on a free port) and as one process with 4 simulated devices, on the
same tiny config (tests/tiny_config.py) with the same global batch. Losses, evaluation
metrics, final parameters, BN statistics and method state must agree, and only process 0 may
write logs, metrics and results.
"""

import json
import os
import pathlib
import subprocess
import sys

import method_harness
import numpy as np
import portpicker
import pytest
import tiny_config

from mlrpl_jax.core import distributed

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILE = ROOT / "tests" / "tiny_config.py"
TIMEOUT_S = 600


def main_command(method, data_dir, workdir, *extra):
    return [sys.executable, "-m", "mlrpl_jax.main", f"--config={CONFIG_FILE}:{method}",
            f"--config.data.data_dir={data_dir}", f"--workdir={workdir}", *extra]


def environment(local_devices, cluster):
    """The subprocess environment. Cluster processes compile everything themselves: a gloo
    context must form within 30 s of the first process reaching a collective, and a persistent
    cache that serves one process's programs but not the other's puts them minutes apart."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    if cluster:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def run_both(method, data_dir, root):
    """Runs the 2-process cluster and the 1-process run side by side; returns process 1's log."""
    port = portpicker.pick_unused_port()
    runs = [(main_command(method, data_dir, root / "cluster", f"--coordinator_address=localhost:{port}",
                          "--num_processes=2", f"--process_id={pid}"), 2, root / f"process_{pid}.log")
            for pid in (0, 1)]
    runs.append((main_command(method, data_dir, root / "single"), 4, root / "single.log"))
    processes = []
    for command, local_devices, log in runs:
        with open(log, "w", encoding="utf-8") as output:
            processes.append(subprocess.Popen(
                command, cwd=ROOT, env=environment(local_devices, cluster=local_devices == 2),
                stdout=output, stderr=subprocess.STDOUT))
    try:
        for process, (_, _, log) in zip(processes, runs):
            process.wait(timeout=TIMEOUT_S)
            assert process.returncode == 0, f"{log}:\n{log.read_text()[-6000:]}"
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return runs[1][2].read_text()


def train_losses(workdir):
    return [entry["train/loss"] for entry in method_harness.logged_train_metrics(str(workdir))]


@pytest.mark.parametrize("method", ["baseline", "sarb"])
def test_two_processes_equal_one_process(method, digit_scenes_dir, tmp_path):
    process_1_log = run_both(method, digit_scenes_dir, tmp_path)
    cluster, single = tmp_path / "cluster", tmp_path / "single"

    config = tiny_config.get_config(method)
    config.data.data_dir = digit_scenes_dir
    # The two layouts run the same float32 program but sum in other orders (gloo vs in-process
    # all-reduce): losses, evaluation metrics, BN statistics and method state agree to
    # reduction_rtol of the step's longest sum, the parameters to twice Adam's largest
    # displacement over the 6 steps (method_harness).
    num_terms = method_harness.digit_run_longest_sum(config)
    losses = train_losses(cluster)
    assert len(losses) == 6  # 96 scenes / global batch 16, logged every step
    method_harness.assert_layout_close(losses, train_losses(single), num_terms)
    results = [json.loads((workdir / "results.json").read_text()) for workdir in (cluster, single)]
    assert results[0]["last"].keys() == results[1]["last"].keys()
    method_harness.assert_layout_close(*({key: float(value) for key, value in result["last"].items()}
                                         for result in results), num_terms)

    states = [method_harness.restore_final_state(config, str(workdir)) for workdir in (cluster, single)]
    assert int(states[0].step) == int(states[1].step) == 6
    method_harness.assert_params_within_adam_bound(states[0].params, states[1].params, config.optim,
                                                   len(losses), 6, num_terms)  # one epoch of 6 steps
    method_harness.assert_layout_close(states[0].batch_stats, states[1].batch_stats, num_terms)
    method_harness.assert_layout_close(states[0].method_state, states[1].method_state, num_terms)
    if method == "sarb":  # the prototype pass ran in the cluster (mixup_epoch = 0)
        assert np.any(np.asarray(states[0].method_state["prototypes"]))

    # Process 0 alone writes: one metrics file, one results file, no INFO logs from process 1.
    assert sorted(p.name for p in cluster.iterdir()) == ["checkpoints", "metrics.jsonl",
                                                         "results.json", "tensorboard"]
    assert "metric_writer.py" not in process_1_log and "checkpoint_manager.py" not in process_1_log


def test_cluster_detection_from_the_environment():
    detect = distributed.detect_cluster
    assert detect({}) == ("single", {})
    assert detect({"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "4"}) == ("single", {})
    assert detect({"SLURM_STEP_NUM_TASKS": "4"}) == ("slurm", {})
    assert detect({"TPU_WORKER_HOSTNAMES": "w-0"}) == ("single", {})
    assert detect({"TPU_WORKER_HOSTNAMES": "w-0,w-1"}) == ("tpu_pod", {})
    assert detect({}, mode="on") == ("auto_detected", {})
    assert detect({"SLURM_STEP_NUM_TASKS": "4"}, mode="off") == ("single", {})
    explicit = {"coordinator_address": "h:1234", "num_processes": 2, "process_id": 1}
    assert detect({"JAX_COORDINATOR_ADDRESS": "h:1234", "JAX_NUM_PROCESSES": "2",
                   "JAX_PROCESS_ID": "1", "SLURM_STEP_NUM_TASKS": "4"}) == ("explicit", explicit)
    assert detect({"JAX_COORDINATOR_ADDRESS": "h:1234"}, num_processes=2,
                  process_id=1) == ("explicit", explicit)
    with pytest.raises(ValueError, match="process_id"):
        detect({}, coordinator_address="h:1234", num_processes=2)
