"""benchmarks/reference_torch_step.py, the PyTorch side of the speed table (docs/performance.md):
tiny smoke runs of a blending and a non-blending model in both modes write the keys our
benchmarks/train_step.py writes in `harness_fields`, and the model has the trainable parameter
counts of docs/methods/network.md §4.9 at the paper configuration."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "reference_torch_step.py"
# The reference harness's keys, as benchmarks/train_step.py's `harness_fields` writes them.
HARNESS_KEYS = {
    "impl",
    "model",
    "mode",
    "image_size",
    "batch",
    "threads",
    "warmup",
    "steps",
    "median_s",
    "times_s",
    "peak_rss_mb",
}
EXTRA_KEYS = {"benchmark", "torch_version", "cpu_amx", "load_average_before", "load_average_after"}
# docs/methods/network.md §4.9, COCO (SARB / DSRB including α and β).
TRAINABLE_PARAMETERS = {"sst": 35_491_497, "sarb": 29_628_499, "dsrb": 29_628_499}
STAGE4_PARAMETERS = 14_964_736


def test_harness_keys_are_those_of_our_side():
    tree = ast.parse((ROOT / "benchmarks" / "train_step.py").read_text(encoding="utf-8"))
    function = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "harness_fields"
    )
    returned = next(node.value for node in ast.walk(function) if isinstance(node, ast.Return))
    assert {key.value for key in returned.keys} == HARNESS_KEYS


@pytest.mark.parametrize(
    "model, mode",
    [
        ("sarb", "train_step"),
        ("sarb", "eval_forward"),
        ("sst", "train_step"),
        ("sst", "eval_forward"),
    ],
)
def test_tiny_run_writes_one_harness_line(model, mode, tmp_path):
    output = tmp_path / "results" / "train_step.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            f"--model={model}",
            f"--mode={mode}",
            "--image_size=64",
            "--batch=2",
            "--width=8",
            "--steps=1",
            "--warmup=0",
            "--threads=1",
            f"--output={output}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "non-finite" not in result.stderr
    written = output.read_text(encoding="utf-8").splitlines()
    assert len(written) == 1 and written[0] == result.stdout.strip().splitlines()[-1]
    line = json.loads(written[0])
    assert set(line) == HARNESS_KEYS | EXTRA_KEYS
    assert {
        k: line[k]
        for k in (
            "benchmark",
            "impl",
            "model",
            "mode",
            "image_size",
            "batch",
            "threads",
            "warmup",
            "steps",
        )
    } == {
        "benchmark": "train_step",
        "impl": "pytorch",
        "model": model,
        "mode": mode,
        "image_size": 64,
        "batch": 2,
        "threads": 1,
        "warmup": 0,
        "steps": 1,
    }
    assert len(line["times_s"]) == 1 and line["median_s"] == line["times_s"][0] > 0
    assert line["peak_rss_mb"] > 0 and line["torch_version"] == torch.__version__
    assert len(line["load_average_before"]) == len(line["load_average_after"]) == 3


def test_paper_configuration_has_the_reference_parameter_counts():
    import reference_torch_step as module  # the script imports torch, checked above

    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        for model_name, expected in TRAINABLE_PARAMETERS.items():
            model = module.ReferenceModel(model_name, num_classes=80, width=64)
            assert module.trainable_parameter_count(model) == expected, model_name
            assert (
                module.trainable_parameter_count(model.network.backbone.layer4) == STAGE4_PARAMETERS
            )
