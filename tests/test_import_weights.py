"""The weight-import tool (mlrpl_jax.tools.import_weights, its library
mlrpl_jax/models/backbone_weights.py) and loading its output as the backbone.

Layout parity of the conversion itself (torch layout -> Flax ResNet, checked against a NumPy
ResNet run straight from torch-layout weights) is in test_torch_layout.py; parity with a real
PyTorch ResNet (.pth files, inference and frozen-BN training mode) is in test_torch_parity.py
(torch is in the [dev] extra).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from test_torch_layout import assert_trees_equal, random_resnet

from mlrpl_jax.core import train
from mlrpl_jax.models import backbone_weights, torch_layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def resnet18():
    """(Flax variables, torchvision-layout state dict incl. fc and BN counters) of a width-2 ResNet-18."""
    _, _, variables, state = random_resnet(18)
    return variables, state


def test_npz_round_trip_strips_wrapper_and_extras(tmp_path, resnet18):
    variables, state = resnet18
    source = tmp_path / "wrapped.npz"
    np.savez(source, **{f"module.{k}": v for k, v in state.items()})
    output = tmp_path / "out" / "resnet18.npz"
    count = backbone_weights.convert(str(source), str(output), depth=18)
    with np.load(output) as archive:
        written = dict(archive)
    assert count == len(written) == len(torch_layout.resnet_key_map(18))
    assert "fc.weight" not in written and not any(
        k.endswith("num_batches_tracked") for k in written
    )
    assert all(v.dtype == np.float32 for v in written.values())
    assert_trees_equal(torch_layout.resnet_variables_from_torch(written, 18), variables)


def test_output_loads_as_pretrained_backbone(tmp_path, resnet18):
    variables, state = resnet18
    np.savez(tmp_path / "in.npz", **state)
    backbone_weights.convert(str(tmp_path / "in.npz"), str(tmp_path / "w.npz"), depth=18)

    def zeros(tree):
        return {k: zeros(v) if isinstance(v, dict) else np.zeros_like(v) for k, v in tree.items()}

    model_variables = {
        "params": {"backbone": zeros(variables["params"]), "head": {"w": np.ones(2)}},
        "batch_stats": {"backbone": zeros(variables["batch_stats"])},
    }
    loaded = train.with_pretrained_backbone(model_variables, str(tmp_path / "w.npz"), 18)
    assert_trees_equal(loaded["params"]["backbone"], variables["params"])
    assert_trees_equal(loaded["batch_stats"]["backbone"], variables["batch_stats"])
    np.testing.assert_array_equal(loaded["params"]["head"]["w"], np.ones(2))


def test_wrong_depth_and_format_errors(tmp_path, resnet18):
    _, state = resnet18
    np.savez(tmp_path / "in.npz", **state)
    with pytest.raises(backbone_weights.WeightImportError, match="Not a torchvision ResNet-50"):
        backbone_weights.convert(str(tmp_path / "in.npz"), str(tmp_path / "w.npz"), depth=50)
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(backbone_weights.WeightImportError, match="Unknown weights format"):
        backbone_weights.convert(str(tmp_path / "w.h5"), str(tmp_path / "w.npz"), depth=18)
    with pytest.raises(backbone_weights.WeightImportError, match="not found"):
        backbone_weights.convert(str(tmp_path / "absent.npz"), str(tmp_path / "w.npz"), depth=18)


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    (tmp_path / "resnet101.pth").write_bytes(b"not read")
    with pytest.raises(backbone_weights.WeightImportError, match=r"mlrpl_jax\[torch\]"):
        backbone_weights.convert(
            str(tmp_path / "resnet101.pth"), str(tmp_path / "w.npz"), depth=101
        )


def test_safetensors_without_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if safetensors were not installed
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    (tmp_path / "resnet101.safetensors").write_bytes(b"not read")
    with pytest.raises(backbone_weights.WeightImportError, match="pip install safetensors"):
        backbone_weights.convert(
            str(tmp_path / "resnet101.safetensors"), str(tmp_path / "w.npz"), depth=101
        )


def test_missing_weights_error_names_the_conversion_command(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="python -m mlrpl_jax.tools.import_weights --input=resnet101.pth"
    ):
        train.with_pretrained_backbone({}, str(tmp_path / "absent.npz"), 101)


def test_command_line(tmp_path, resnet18):
    _, state = resnet18
    np.savez(tmp_path / "in.npz", **state)
    command = [
        sys.executable,
        "-m",
        "mlrpl_jax.tools.import_weights",
        f"--input={tmp_path / 'in.npz'}",
        f"--output={tmp_path / 'w.npz'}",
        "--depth=18",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "--config.model.pretrained=" in result.stdout and (tmp_path / "w.npz").exists()
    usage = subprocess.run(
        command[:3] + ["--help"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert "EXECUTES ARBITRARY CODE" in usage.stdout
