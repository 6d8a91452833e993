"""gs:// workdirs end to end, against a local Cloud Storage emulator (tests/support/gcs_emulator.py).

The TPU-pod command of launch/README.md goes through launch/tpu_pod.sh with a stand-in `gcloud`
that records the command it would run on every worker. That command's flags train the tiny
config (tests/support/tiny_config.py) in place of the paper config, as one CPU process (without
--distributed=on), into the emulator's bucket: `python -m mlrpl_jax.main` is preempted (SIGTERM)
mid-epoch, the run is started again, and its results.json in the bucket must equal that of a
run of the same flags on local disk. orbax writes the checkpoint arrays with tensorstore
(TENSORSTORE_GCS_HTTP_URL); everything else goes through etils.epath and gcsfs
(STORAGE_EMULATOR_HOST).
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import portpicker
import pytest
import tiny_config
from absl import flags
from etils import epath
from ml_collections import config_flags
from test_sweep import HAND_METHODS, HAND_TABLES
from test_torch_layout import assert_trees_equal, random_resnet

from mlrpl_jax import cli, sweep
from mlrpl_jax.config import ConfigError
from mlrpl_jax.core import checkpointing, run_inputs, train
from mlrpl_jax.core.fault_injection import FAULT_ENV_VAR
from mlrpl_jax.data import datasets, label_embeddings
from mlrpl_jax.models import backbone_weights

ROOT = epath.Path(__file__).resolve().parent.parent
LAUNCH_README = ROOT / "launch" / "README.md"
TINY_CONFIG = f"{ROOT / 'tests' / 'support' / 'tiny_config.py'}:baseline"
PREEMPTED_AT_STEP = 3  # of the tiny config's one epoch of 6 steps


def documented_tpu_command() -> tuple[dict[str, str], list[str]]:
    """(environment, arguments) of the launch/tpu_pod.sh command in launch/README.md."""
    blocks = re.findall(r"```bash\n(.*?)```", LAUNCH_README.read_text(), re.S)
    [block] = [b for b in blocks if "launch/tpu_pod.sh" in b]
    words = shlex.split(block.replace("\\\n", " "))
    script = words.index("launch/tpu_pod.sh")
    return dict(word.split("=", 1) for word in words[:script]), words[script + 1 :]


def flag_value(arguments: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in arguments if a.startswith(f"--{name}=")]
    return value


def documented_bucket() -> str:
    """The bucket of the documented command's --workdir."""
    return urllib.parse.urlparse(flag_value(documented_tpu_command()[1], "workdir")).netloc


@pytest.fixture(scope="module")
def cloud_storage(tmp_path_factory):
    """An in-memory Cloud Storage emulator on 127.0.0.1 holding the documented command's
    bucket, and the variables that point gcsfs, google-cloud-storage and tensorstore at it."""
    port = portpicker.pick_unused_port()
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    with open(log, "w", encoding="utf-8") as output:
        emulator = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "support" / "gcs_emulator.py"),
                "start",
                "--host=127.0.0.1",
                f"--port={port}",
                "--in-memory",
                f"--default-bucket={documented_bucket()}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    # The emulator has no storage-control API, which gcsfs's bucket-type probe would query.
    variables = {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    saved = {name: os.environ.get(name) for name in variables}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert emulator.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        os.environ.update(variables)
        yield variables
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        emulator.terminate()
        emulator.wait(timeout=30)


def launched_command(tmp_path, data_dir: str) -> tuple[str, list[str]]:
    """(the worker command, its `mlrpl_jax.main` arguments) that launch/tpu_pod.sh runs for
    the documented command, with DATA_DIR=`data_dir`; a stand-in `gcloud` records it."""
    environment, arguments = documented_tpu_command()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorded = tmp_path / "gcloud_arguments"
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(
        f"#!/usr/bin/env bash\nprintf '%s\\n' \"$@\" > {shlex.quote(str(recorded))}\n"
    )
    gcloud.chmod(0o755)
    subprocess.run(
        ["bash", str(ROOT / "launch" / "tpu_pod.sh"), *arguments],
        check=True,
        env={
            **os.environ,
            **environment,
            "DATA_DIR": data_dir,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
    )
    command = flag_value(recorded.read_text().splitlines(), "command")
    return command, shlex.split(command.split(" -m mlrpl_jax.main ", 1)[1])


def as_local_run(arguments: list[str]) -> list[str]:
    """The worker's arguments for one CPU process of the tiny config: the documented config
    replaced by tests/support/tiny_config.py, --distributed=on (TPU VM metadata) dropped."""
    assert arguments[0] == "--distributed=on"
    assert sum(a.startswith("--config=") for a in arguments) == 1
    return [f"--config={TINY_CONFIG}" if a.startswith("--config=") else a for a in arguments[1:]]


def config_of(arguments: list[str]):
    """The config that main.py builds from `arguments` (ml_collections parses the overrides)."""
    argv = ["main", *arguments]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=flag_values, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "workdir", flag_values=flag_values)
    flag_values(argv)
    return flag_values.config


def run_main(arguments: list[str], fault: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlrpl_jax.main", *arguments],
        cwd=ROOT,
        env={**os.environ, FAULT_ENV_VAR: fault},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def train_losses(workdir: str) -> list[tuple[int, float]]:
    lines = (epath.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["train/loss"]) for r in map(json.loads, lines) if "train/loss" in r]


def test_documented_gs_command_preempted_and_resumed_equals_local_disk(
    cloud_storage, digit_scenes_dir, tmp_path
):
    environment, _ = documented_tpu_command()
    command, worker_arguments = launched_command(tmp_path, digit_scenes_dir)
    # Every worker copies the dataset from DATA_FROM to local disk first, with the command a run
    # given a gs:// data_dir names, then reads it there.
    assert run_inputs.stage_data_command(environment["DATA_FROM"], digit_scenes_dir) in command
    assert f"--config.data.data_dir={digit_scenes_dir}" in worker_arguments
    arguments = as_local_run(worker_arguments)
    workdir = flag_value(arguments, "workdir")
    assert workdir.startswith("gs://")

    preempted = run_main(arguments, fault=f"step:{PREEMPTED_AT_STEP}:TERM")
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.stderr[-3000:]
    assert f"saved the checkpoint of step {PREEMPTED_AT_STEP} in {workdir}" in preempted.stderr
    checkpointer = checkpointing.Checkpointer(
        f"{workdir}/checkpoints", keep_last=1, keep_best=0, async_save=False
    )
    assert checkpointer.latest_step() == PREEMPTED_AT_STEP
    checkpointer.close()
    assert not (epath.Path(workdir) / "results.json").exists()

    # The same command again resumes; run in this process (main.py's train_and_evaluate of the
    # config it parses) to save a start-up.
    resumed_results = train.train_and_evaluate(config_of(arguments), workdir)

    local_workdir = str(tmp_path / "local")
    local_results = train.train_and_evaluate(config_of(arguments), local_workdir)
    remote = epath.Path(workdir)
    assert resumed_results == local_results
    assert json.loads((remote / "results.json").read_text()) == local_results
    assert json.loads((tmp_path / "local" / "results.json").read_text()) == local_results
    # metrics.jsonl keeps the preempted run's records (steps 1-3) and the resumed run's after them.
    assert train_losses(workdir) == train_losses(local_workdir)
    assert [step for step, _ in train_losses(workdir)] == list(range(1, 7))
    assert sweep.last_logged_values(workdir, ("test/mAP",)) == sweep.last_logged_values(
        local_workdir, ("test/mAP",)
    )
    # One TensorBoard event file per process that ran, and no write probe left behind.
    events = list((remote / "tensorboard").iterdir())
    assert len(events) == 2 and all(e.name.startswith("events.out.tfevents") for e in events)
    assert not list(remote.glob(".write_probe_*"))


def test_sweep_comparison_files_on_gs_equal_local_ones(cloud_storage, tmp_path):
    remote = epath.Path(f"gs://{documented_bucket()}/sweep_comparison")
    remote_text = sweep.write_comparison(str(remote), HAND_TABLES, HAND_METHODS, "digit_scenes")
    local_text = sweep.write_comparison(str(tmp_path), HAND_TABLES, HAND_METHODS, "digit_scenes")
    assert remote_text == local_text
    for name in ("comparison.md", "comparison.json", sweep.PLOT_FILE):
        assert (remote / name).read_bytes() == (tmp_path / name).read_bytes(), name


@pytest.mark.parametrize("where", ["config", "environment"])
def test_data_dir_on_gs_stops_before_any_work_with_the_staging_command(
    where, tmp_path, monkeypatch
):
    config = tiny_config.get_config()
    bucket_dir = "gs://my-bucket/tensorflow_datasets"
    if where == "config":
        config.data.data_dir = bucket_dir
    else:
        monkeypatch.setenv("TFDS_DATA_DIR", bucket_dir)
    stage = run_inputs.stage_data_command(
        f"{bucket_dir}/digit_scenes/tiny", "$HOME/tensorflow_datasets/digit_scenes/tiny"
    )
    workdir = tmp_path / "work"
    with pytest.raises(ConfigError) as error:
        train.train_and_evaluate(config, str(workdir))
    assert stage in str(error.value)
    assert "--config.data.data_dir=$HOME/tensorflow_datasets " in str(error.value)
    assert not workdir.exists()
    with pytest.raises(cli.app.UsageError, match=re.escape(stage)):
        cli.start(["main"], config)


def test_pretrained_weights_and_embeddings_read_from_gs(cloud_storage, tmp_path):
    remote = epath.Path(f"gs://{documented_bucket()}/inputs")
    variables, state = random_resnet(18)[2:]
    np.savez(tmp_path / "torch_layout.npz", **state)
    backbone_weights.convert(str(tmp_path / "torch_layout.npz"), str(tmp_path / "resnet18.npz"), 18)
    config = tiny_config.get_config()
    class_names = datasets.get_dataset_spec(config.data.name).class_names
    embeddings = np.random.default_rng(0).normal(size=(len(class_names), config.embeddings.dim))
    np.save(tmp_path / "embeddings.npy", embeddings.astype(np.float32))
    for name in ("resnet18.npz", "embeddings.npy"):
        (remote / name).write_bytes((tmp_path / name).read_bytes())

    config.model.pretrained = str(remote / "resnet18.npz")
    config.embeddings.update(kind="npy", path=str(remote / "embeddings.npy"))
    run_inputs.check_run_inputs(config)
    np.testing.assert_array_equal(
        label_embeddings.build_label_embeddings(
            "npy", class_names, path=config.embeddings.path, dim=config.embeddings.dim
        ),
        embeddings.astype(np.float32),
    )
    empty = {"params": {"backbone": {}}, "batch_stats": {"backbone": {}}}
    loaded = train.with_pretrained_backbone(empty, config.model.pretrained, 18)
    assert_trees_equal(loaded["params"]["backbone"], variables["params"])
    assert_trees_equal(loaded["batch_stats"]["backbone"], variables["batch_stats"])
