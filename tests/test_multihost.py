"""Two processes as one cluster train exactly like one process with the same global devices.

`python -m mlrpl_jax.main` runs as two local processes (2 simulated CPU devices each, gloo
collectives, coordinator on a free port) and as one process with 4 simulated devices, on the
same tiny config (tests/support/tiny_config.py) with the same global batch. Losses, evaluation
metrics, final parameters, BN statistics and method state must agree, and only process 0 may
write logs, metrics and results. The 2-process baseline run is also the uninterrupted reference
of the resilience test: one process SIGKILLed mid-epoch, SIGTERM to every process, and the
restarted cluster's results equal to the bit.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import method_harness
import numpy as np
import portpicker
import pytest
import tiny_config
from test_notebooks import FAST_COMPILE_XLA_FLAGS

from mlrpl_jax.core import distributed
from mlrpl_jax.core.fault_injection import FAULT_ENV_VAR

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILE = ROOT / "tests" / "support" / "tiny_config.py"
TIMEOUT_S = 600


def main_command(method, data_dir, workdir, *extra):
    return [
        sys.executable,
        "-m",
        "mlrpl_jax.main",
        f"--config={CONFIG_FILE}:{method}",
        f"--config.data.data_dir={data_dir}",
        f"--workdir={workdir}",
        *extra,
    ]


def environment(local_devices, cluster):
    """The subprocess environment. Cluster processes compile everything themselves: a gloo
    context must form within 30 s of the first process reaching a collective, and a persistent
    cache that serves one process's programs but not the other's puts them minutes apart (with
    jax 0.10, a second cluster run over one cache found every program in process 0 and none in
    process 1). Every process compiles with the notebooks' cheaper XLA code generation (about
    40 % less CPU time for a run): the runs compared here all use the same flags."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={local_devices} {FAST_COMPILE_XLA_FLAGS}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    if cluster:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    return env


def run_both(method, data_dir, root):
    """Runs the 2-process cluster and the 1-process run side by side; returns process 1's log."""
    port = portpicker.pick_unused_port()
    runs = [
        (
            main_command(
                method,
                data_dir,
                root / "cluster",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={pid}",
            ),
            2,
            root / f"process_{pid}.log",
        )
        for pid in (0, 1)
    ]
    runs.append((main_command(method, data_dir, root / "single"), 4, root / "single.log"))
    processes = []
    for command, local_devices, log in runs:
        with open(log, "w", encoding="utf-8") as output:
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=ROOT,
                    env=environment(local_devices, cluster=local_devices == 2),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
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


@pytest.fixture(scope="module")
def layout_runs(digit_scenes_dir, tmp_path_factory):
    """run_both of a method, once per module: (its root folder, process 1's log)."""
    done = {}

    def runs(method):
        if method not in done:
            root = tmp_path_factory.mktemp(method)
            done[method] = root, run_both(method, digit_scenes_dir, root)
        return done[method]

    return runs


@pytest.mark.parametrize("method", ["baseline", "sarb"])
def test_two_processes_equal_one_process(method, digit_scenes_dir, layout_runs):
    root, process_1_log = layout_runs(method)
    cluster, single = root / "cluster", root / "single"

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
    method_harness.assert_layout_close(
        *(
            {
                key: np.asarray(value, np.float64)  # per_class_AP: (C,)
                for key, value in result["last"].items()
            }
            for result in results
        ),
        num_terms,
    )

    states = [
        method_harness.restore_final_state(config, str(workdir)) for workdir in (cluster, single)
    ]
    assert int(states[0].step) == int(states[1].step) == 6
    method_harness.assert_params_within_adam_bound(
        states[0].params, states[1].params, config.optim, len(losses), 6, num_terms
    )  # one epoch of 6 steps
    method_harness.assert_layout_close(states[0].batch_stats, states[1].batch_stats, num_terms)
    method_harness.assert_layout_close(states[0].method_state, states[1].method_state, num_terms)
    if method == "sarb":  # the prototype pass ran in the cluster (mixup_epoch = 0)
        assert np.any(np.asarray(states[0].method_state["prototypes"]))

    # Process 0 alone writes: one metrics file, one results file, no INFO logs from process 1.
    assert sorted(p.name for p in cluster.iterdir()) == [
        "checkpoints",
        "metrics.jsonl",
        "results.json",
        "tensorboard",
    ]
    assert "metric_writer.py" not in process_1_log and "checkpoint_manager.py" not in process_1_log


def start_cluster(data_dir, workdir, faults):
    """The 2-process baseline cluster with a checkpoint every 2 steps (3 per epoch of 6), process
    i signalling itself at MLRPL_FAULT_AT=faults[i] (fault_injection.py; '' for none)."""
    port = portpicker.pick_unused_port()
    processes = []
    for pid, fault in enumerate(faults):
        log = open(workdir.parent / f"{workdir.name}_process_{pid}.log", "a", encoding="utf-8")
        processes.append(
            subprocess.Popen(
                main_command(
                    "baseline",
                    data_dir,
                    workdir,
                    "--config.checkpoint.every_steps=2",
                    f"--coordinator_address=localhost:{port}",
                    "--num_processes=2",
                    f"--process_id={pid}",
                ),
                cwd=ROOT,
                env={**environment(2, cluster=True), FAULT_ENV_VAR: fault},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    return processes


def finish(processes):
    """Exit statuses of the cluster's processes."""
    try:
        return [process.wait(timeout=TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def test_cluster_killed_and_preempted_finishes_as_if_uninterrupted(
    digit_scenes_dir, layout_runs, tmp_path
):
    reference = layout_runs("baseline")[0] / "cluster"
    workdir = tmp_path / "cluster"

    def log(pid):
        return (tmp_path / f"cluster_process_{pid}.log").read_text()[-6000:]

    # A machine failure: process 1 is SIGKILLed while step 3 runs; process 0, left waiting in a
    # collective, is stopped by the job's launcher (launch/local_cluster.sh stops them all).
    processes = start_cluster(digit_scenes_dir, workdir, ("", "step:3"))
    assert processes[1].wait(timeout=TIMEOUT_S) == -signal.SIGKILL, log(1)
    processes[0].kill()
    finish(processes)
    # Preemption: SIGTERM to every process at step 5, mid-epoch, after the restart resumed
    # from the checkpoint of step 2 (or from the start, had its asynchronous save not finished
    # before the kill): a synchronous checkpoint of step 5 and exit status 143 everywhere.
    statuses = finish(start_cluster(digit_scenes_dir, workdir, ("step:5:TERM",) * 2))
    assert statuses == [128 + signal.SIGTERM] * 2, log(0) + log(1)
    assert "SIGTERM received: saved the checkpoint of step 5" in log(0)
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["5"]
    assert not (workdir / "results.json").exists()

    assert finish(start_cluster(digit_scenes_dir, workdir, ("", ""))) == [0, 0], log(0) + log(1)
    # Same program, same batches, same gloo reduction order: equal to the bit.
    assert json.loads((workdir / "results.json").read_text()) == json.loads(
        (reference / "results.json").read_text()
    )
    config = tiny_config.get_config("baseline")
    config.data.data_dir = digit_scenes_dir
    resumed, uninterrupted = (
        method_harness.restore_final_state(config, str(w)) for w in (workdir, reference)
    )
    for got, want in zip(
        *(jax.tree.leaves((s.params, s.batch_stats, s.opt_state)) for s in (resumed, uninterrupted))
    ):
        np.testing.assert_array_equal(got, want)


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
    assert detect(
        {
            "JAX_COORDINATOR_ADDRESS": "h:1234",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": "1",
            "SLURM_STEP_NUM_TASKS": "4",
        }
    ) == ("explicit", explicit)
    assert detect({"JAX_COORDINATOR_ADDRESS": "h:1234"}, num_processes=2, process_id=1) == (
        "explicit",
        explicit,
    )
    with pytest.raises(ValueError, match="process_id"):
        detect({}, coordinator_address="h:1234", num_processes=2)
