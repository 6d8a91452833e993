"""Converted weights against a real PyTorch ResNet (docs/methods/network.md §4.1).

A torchvision-layout ResNet is built here from plain torch.nn (torchvision is not a dependency;
module names are torchvision's, so its state dict is what torchvision's resnetN().state_dict()
holds), randomly initialised with non-trivial BN statistics, saved with torch.save, converted
with mlrpl_jax.tools.import_weights and loaded as our Flax backbone. Both run in float32:

* inference mode: feature maps agree (after the reference's extra 2x2/2 average pool, and
  without it);
* the reference's training mode (`model.train(); backbone.eval(); backbone.layer4.train()`):
  the stem and layer1..layer3 run BN with their stored statistics, which do not move, and get
  no gradient; layer4 normalises with batch statistics and moves its running statistics by
  momentum 0.1 towards the batch mean and the *unbiased* batch variance. Outputs, updated BN
  statistics and layer4 gradients agree;
* without freezing (training from scratch) every BN layer behaves like layer4's.
"""

import functools
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from flax import traverse_util
from torch import nn

from mlrpl_jax.core import train
from mlrpl_jax.models import backbone_weights, torch_layout
from mlrpl_jax.models.resnet import FROZEN_BACKBONE_MODULES, ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH = 8  # torchvision's is 64; tiny keeps ResNet-101 fast
HEIGHT, IMAGE_WIDTH = (
    64,
    48,
)  # non-square; layer3 maps are 4x3, so odd sizes meet the stride-2 padding
# Bounds on max |ours - torch| / max |torch| (both float32, so only summation order differs).
# They sit just above float32 round-off: torch's own float32 features differ from its float64
# ones by ~2e-6 (ResNet-18) and 2-3e-5 (ResNet-101, 33 blocks deep).
TOLERANCE = {18: 1e-5, 101: 5e-5}
# layer4 gradients, per tensor: its training-mode BN (16 values per channel) amplifies round-off.
GRADIENT_TOLERANCE = {18: 2e-5, 101: 2e-4}

# torchvision's block type and blocks per stage (independent of mlrpl_jax.models.resnet).
TORCHVISION_STAGES = {18: (False, (2, 2, 2, 2)), 101: (True, (3, 4, 23, 3))}
TORCHVISION_STATE_DICT_SIZES = {18: 122, 101: 626}  # fc and num_batches_tracked included


# ----------------------------------------------------------------------------- torchvision layout


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3 (v1.5)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    """torchvision.models.ResNet with base width `width`; `features` is the reference backbone."""

    def __init__(self, depth: int, width: int, num_classes: int = 10):
        super().__init__()
        bottleneck, blocks = TORCHVISION_STAGES[depth]
        block = Bottleneck if bottleneck else BasicBlock
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, blocks[0], 1)
        self.layer2 = self._make_layer(block, 2 * width, blocks[1], 2)
        self.layer3 = self._make_layer(block, 4 * width, blocks[2], 2)
        self.layer4 = self._make_layer(block, 8 * width, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None) for _ in range(1, num_blocks)]
        return nn.Sequential(*layers)

    def features(self, x, extra_pool: bool = True):
        """The reference backbone: no global pool / fc, then a 2x2/2 average pool."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.avg_pool2d(x, 2, 2) if extra_pool else x


def random_torch_resnet(depth: int, seed: int = 0) -> TorchResNet:
    """He-initialised convs, BN affine parameters far from 1/0 and running statistics like a trained net's.

    The running statistics are those of random images (so that features keep an O(1) scale
    through 101 layers), then perturbed by random per-channel factors and shifts.
    """
    generator = torch.Generator().manual_seed(seed)
    net = TorchResNet(depth, WIDTH)
    batch_norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.1, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
        for module in batch_norms:
            module.momentum = 1.0  # running statistics := those of the calibration batch
        net.train()
        net.features(torch.randn(8, 3, HEIGHT, IMAGE_WIDTH, generator=generator))
        for module in batch_norms:
            module.momentum = 0.1
            std = module.running_var.sqrt()
            module.running_mean.add_(0.2 * std * torch.randn(std.shape, generator=generator))
            module.running_var.mul_(torch.empty_like(std).uniform_(0.5, 2.0, generator=generator))
            module.num_batches_tracked.fill_(7)
    return net


def set_reference_train_mode(net: TorchResNet) -> None:
    """What the reference does each epoch (docs/methods/network.md §4.1), with the frozen stages' gradients off."""
    net.train()
    net.eval()  # the reference: model.backbone.eval()
    net.layer4.train()
    for name in ("conv1", "bn1", "layer1", "layer2", "layer3"):
        getattr(net, name).requires_grad_(False)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(batch: int, seed: int) -> np.ndarray:
    """NCHW float32 images."""
    return (
        np.random.default_rng(seed).normal(size=(batch, 3, HEIGHT, IMAGE_WIDTH)).astype(np.float32)
    )


def nhwc(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


def assert_close(ours, reference, tolerance: float, what: str) -> None:
    error = relative_error(ours, reference)
    assert error <= tolerance, f"{what}: max |diff| / max |torch| = {error:.2e} > {tolerance:.0e}"


def torch_state(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def converted_variables(net: TorchResNet, depth: int, tmp_path) -> dict:
    """torch.save -> backbone_weights.convert -> train.with_pretrained_backbone -> ResNet variables."""
    torch.save(net.state_dict(), tmp_path / f"resnet{depth}.pth")
    count = backbone_weights.convert(
        str(tmp_path / f"resnet{depth}.pth"), str(tmp_path / "w.npz"), depth
    )
    assert count == len(torch_layout.resnet_key_map(depth))
    empty = {"params": {"backbone": {}}, "batch_stats": {"backbone": {}}}
    loaded = train.with_pretrained_backbone(empty, str(tmp_path / "w.npz"), depth)
    return {collection: loaded[collection]["backbone"] for collection in ("params", "batch_stats")}


def flax_model(
    depth: int, variables: dict, freeze_early_stages: bool = True, extra_pool: bool = True
) -> ResNet:
    """Our ResNet, checked to have exactly the converted variables' structure and shapes."""
    model = ResNet(
        depth=depth, width=WIDTH, extra_pool=extra_pool, freeze_early_stages=freeze_early_stages
    )
    init = functools.partial(model.init, train=False)
    shapes = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, HEIGHT, IMAGE_WIDTH, 3)))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda s: s.shape, shapes)
    return model


def torch_key(path: tuple[str, ...]) -> str:
    """Flax params path -> torchvision parameter name."""
    names = {
        "downsample_conv": "downsample.0",
        "downsample_bn": "downsample.1",
        "kernel": "weight",
        "scale": "weight",
    }
    return ".".join(names.get(p, p) for p in path)


@pytest.fixture(scope="module", params=[18, 101])
def converted(request, tmp_path_factory):
    """(depth, seed of the torch net, converted Flax variables) of a random torch ResNet saved as .pth."""
    depth = request.param
    net = random_torch_resnet(depth, seed=depth)
    assert len(net.state_dict()) == TORCHVISION_STATE_DICT_SIZES[depth]
    return depth, depth, converted_variables(net, depth, tmp_path_factory.mktemp(f"resnet{depth}"))


# ----------------------------------------------------------------------------- inference mode


def test_inference_features_match_torch(converted):
    depth, seed, variables = converted
    net = random_torch_resnet(depth, seed).eval()
    x = images(2, seed=1)
    with torch.no_grad():
        expected = net.features(torch.from_numpy(x))
        expected_unpooled = net.features(torch.from_numpy(x), extra_pool=False)
    channels = 8 * WIDTH * (4 if depth == 101 else 1)
    assert expected.shape == (2, channels, 1, 1) and expected_unpooled.shape == (2, channels, 2, 2)
    pooled, unpooled = flax_model(depth, variables), flax_model(depth, variables, extra_pool=False)
    ours, ours_unpooled = jax.jit(
        lambda v, x: (pooled.apply(v, x, train=False), unpooled.apply(v, x, train=False))
    )(variables, nhwc(x))
    assert_close(ours, nhwc(expected), TOLERANCE[depth], f"ResNet-{depth} features")
    assert_close(
        ours_unpooled,
        nhwc(expected_unpooled),
        TOLERANCE[depth],
        f"ResNet-{depth} without extra pool",
    )
    assert float(torch.std(expected)) > 0.1  # the comparison has teeth: features vary


# ----------------------------------------------------------------------------- training mode


def test_frozen_bn_training_mode_matches_reference(converted):
    """Outputs, BN statistics and gradients after one step in the reference's training mode."""
    depth, seed, variables = converted
    net = random_torch_resnet(depth, seed)
    x = images(4, seed=2)
    set_reference_train_mode(net)
    expected = net.features(torch.from_numpy(x))
    weights = np.random.default_rng(3).normal(size=tuple(expected.shape)).astype(np.float32)
    (expected * torch.from_numpy(weights)).sum().backward()
    state_after = torch_state(net)

    model = flax_model(depth, variables)

    def loss(params):
        out, updates = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            nhwc(x),
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(out * nhwc(weights)), (out, updates["batch_stats"])

    grads, (ours, batch_stats) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    assert_close(
        ours, nhwc(expected.detach()), TOLERANCE[depth], f"ResNet-{depth} training-mode features"
    )

    # Had the frozen stages used batch statistics (torch's plain net.train()), the output would differ.
    all_batch_statistics = random_torch_resnet(depth, seed).train()
    with torch.no_grad():
        assert relative_error(ours, nhwc(all_batch_statistics.features(torch.from_numpy(x)))) > 0.01

    # Running statistics: the frozen stages' are exactly the loaded ones; layer4's moved like torch's.
    expected_stats = traverse_util.flatten_dict(
        torch_layout.resnet_variables_from_torch(state_after, depth)["batch_stats"]
    )
    before = traverse_util.flatten_dict(variables["batch_stats"])
    after = traverse_util.flatten_dict(jax.device_get(batch_stats))
    assert set(after) == set(expected_stats)
    for path, value in after.items():
        if path[0] in FROZEN_BACKBONE_MODULES:
            np.testing.assert_array_equal(value, before[path], err_msg=str(path))
            np.testing.assert_array_equal(expected_stats[path], before[path], err_msg=str(path))
        else:
            assert path[0] == "layer4"
            assert relative_error(value, before[path]) > 1e-3, path  # they did move
            assert_close(value, expected_stats[path], TOLERANCE[depth], str(path))
    for key, value in state_after.items():  # torch counts batches only in training-mode BN
        if key.endswith("num_batches_tracked"):
            assert int(value) == (8 if key.startswith("layer4.") else 7), key

    # Gradients: none for the frozen stages; layer4's agree with torch's.
    parameters = {k: v for k, v in net.named_parameters() if not k.startswith("fc.")}
    flat_grads = traverse_util.flatten_dict(jax.device_get(grads))
    assert {torch_key(path) for path in flat_grads} == set(parameters)
    for path, grad in flat_grads.items():
        key = torch_key(path)
        if path[0] in FROZEN_BACKBONE_MODULES:
            assert parameters[key].grad is None, key
            np.testing.assert_array_equal(grad, 0, err_msg=str(path))
        else:
            reference = parameters[key].grad.numpy()
            reference = reference.transpose(2, 3, 1, 0) if reference.ndim == 4 else reference
            assert_close(grad, reference, GRADIENT_TOLERANCE[depth], f"gradient of {key}")


def test_unfrozen_training_mode_matches_torch(tmp_path):
    """freeze_early_stages=False (training from scratch): every BN layer trains, as in torch's net.train()."""
    depth = 18
    net = random_torch_resnet(depth, seed=5)
    variables = converted_variables(net, depth, tmp_path)
    x = images(4, seed=6)
    net.train()
    with torch.no_grad():
        expected = net.features(torch.from_numpy(x))
    model = flax_model(depth, variables, freeze_early_stages=False)
    ours, updates = model.apply(variables, nhwc(x), train=True, mutable=["batch_stats"])
    assert_close(
        ours, nhwc(expected), TOLERANCE[depth], "unfrozen ResNet-18 training-mode features"
    )
    expected_stats = traverse_util.flatten_dict(
        torch_layout.resnet_variables_from_torch(torch_state(net), depth)["batch_stats"]
    )
    before = traverse_util.flatten_dict(variables["batch_stats"])
    for path, value in traverse_util.flatten_dict(jax.device_get(updates["batch_stats"])).items():
        assert relative_error(value, before[path]) > 1e-3, path
        assert_close(value, expected_stats[path], TOLERANCE[depth], str(path))


# ----------------------------------------------------------------------------- file formats


def test_command_line_reads_pth_with_weights_only(tmp_path):
    net = random_torch_resnet(18, seed=7)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    command = [
        sys.executable,
        "-m",
        "mlrpl_jax.tools.import_weights",
        f"--input={tmp_path / 'resnet18.pth'}",
        f"--output={tmp_path / 'cli.npz'}",
        "--depth=18",
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert f"Wrote {len(torch_layout.resnet_key_map(18))} ResNet-18 tensors" in result.stdout
    with np.load(tmp_path / "cli.npz") as archive:
        written = dict(archive)
    state = torch_state(net)
    assert set(written) == set(state) - {"fc.weight", "fc.bias"} - {
        k for k in state if "num_batches" in k
    }
    for key, value in written.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_wrapped_checkpoint_and_safetensors_give_the_same_weights(tmp_path):
    net = random_torch_resnet(18, seed=8)
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    # A training checkpoint as DataParallel writes it: {'state_dict': {'module.' + name: ...}}.
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "epoch": 3},
        tmp_path / "wrapped.pth",
    )
    safetensors.torch.save_file(net.state_dict(), str(tmp_path / "plain.safetensors"))
    outputs = {}
    for name in ("plain.pth", "wrapped.pth", "plain.safetensors"):
        backbone_weights.convert(str(tmp_path / name), str(tmp_path / f"{name}.npz"), depth=18)
        with np.load(tmp_path / f"{name}.npz") as archive:
            outputs[name] = dict(archive)
    for name in ("wrapped.pth", "plain.safetensors"):
        assert set(outputs[name]) == set(outputs["plain.pth"])
        for key, value in outputs[name].items():
            np.testing.assert_array_equal(
                value, outputs["plain.pth"][key], err_msg=f"{name}: {key}"
            )


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse to build."""


def test_pth_holding_arbitrary_objects_needs_allow_pickle(tmp_path):
    net = random_torch_resnet(18, seed=9)
    torch.save({"state_dict": net.state_dict(), "extra": NotATensor()}, tmp_path / "trusted.pth")
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        backbone_weights.convert(str(tmp_path / "trusted.pth"), str(tmp_path / "w.npz"), depth=18)
    assert not (tmp_path / "w.npz").exists()
    assert backbone_weights.convert(
        str(tmp_path / "trusted.pth"), str(tmp_path / "w.npz"), depth=18, allow_pickle=True
    ) == len(torch_layout.resnet_key_map(18))
