"""torchvision-layout ResNet backbone with frozen stem..stage 3 and an extra 2x2 pool (docs/methods/network.md §4.1).

NHWC. Padding is explicit and symmetric (3 for the 7x7 stem, 1 for 3x3 convs, 1 with -inf for
the max pool) so that converted torchvision weights compute the same function; 'SAME' would
pad stride-2 layers asymmetrically.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.models.batch_norm import TorchBatchNorm
from mlrpl_jax.models.convolution import Conv
from mlrpl_jax.models.initializers import kaiming_normal_fan_out

# Submodules of ResNet that are never trained: inference-mode BN, no gradient (docs/methods/network.md §4.1).
FROZEN_BACKBONE_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3")

# depth -> (bottleneck blocks?, blocks per stage), as in torchvision.
RESNET_STAGES: dict[int, tuple[bool, tuple[int, int, int, int]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}


def resnet_stages(depth: int) -> tuple[bool, tuple[int, int, int, int]]:
    """(uses bottleneck blocks, number of blocks in layer1..layer4) for a torchvision depth."""
    if depth not in RESNET_STAGES:
        raise ValueError(
            f"Unsupported ResNet depth {depth}; choose one of {sorted(RESNET_STAGES)}."
        )
    return RESNET_STAGES[depth]


def _conv(
    features: int, kernel: int, stride: int, name: str, *, dtype: Any, impl: str, operand_dtype: Any
) -> Conv:
    """torchvision conv: no bias, symmetric zero padding (kernel - 1) / 2."""
    pad = (kernel - 1) // 2
    return Conv(
        features,
        kernel,
        stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=kaiming_normal_fan_out,
        impl=impl,
        dtype=dtype,
        operand_dtype=operand_dtype,
        name=name,
    )


class ResidualBlock(nn.Module):
    """torchvision BasicBlock (two 3x3 convs) or Bottleneck (1x1, 3x3 with the stride, 1x1 x4).

    The projection shortcut 'downsample_conv'/'downsample_bn' exists when the stride or the
    channel count changes (torchvision's downsample.0 / downsample.1). Convolutions: conv_impl
    (models/convolution.py), operands in operand_dtype (None: dtype), accumulated in dtype.
    """

    planes: int
    stride: int
    bottleneck: bool
    project: bool
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    operand_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        frozen_bn = not train
        conv = functools.partial(
            _conv, dtype=self.dtype, impl=self.conv_impl, operand_dtype=self.operand_dtype
        )
        if self.bottleneck:
            out_features = 4 * self.planes
            y = conv(self.planes, 1, 1, "conv1")(x)
            y = nn.relu(TorchBatchNorm(dtype=self.dtype, name="bn1")(y, frozen_bn))
            y = conv(self.planes, 3, self.stride, "conv2")(y)
            y = nn.relu(TorchBatchNorm(dtype=self.dtype, name="bn2")(y, frozen_bn))
            y = conv(out_features, 1, 1, "conv3")(y)
            y = TorchBatchNorm(dtype=self.dtype, name="bn3")(y, frozen_bn)
        else:
            out_features = self.planes
            y = conv(self.planes, 3, self.stride, "conv1")(x)
            y = nn.relu(TorchBatchNorm(dtype=self.dtype, name="bn1")(y, frozen_bn))
            y = conv(self.planes, 3, 1, "conv2")(y)
            y = TorchBatchNorm(dtype=self.dtype, name="bn2")(y, frozen_bn)
        if self.project:
            x = conv(out_features, 1, self.stride, "downsample_conv")(x)
            x = TorchBatchNorm(dtype=self.dtype, name="downsample_bn")(x, frozen_bn)
        return nn.relu(y + x)


class ResNetStage(nn.Module):
    """torchvision layerN: blocks named '0', '1', ...; the first carries the stride."""

    planes: int
    num_blocks: int
    stride: int
    bottleneck: bool
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    operand_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features = 4 * self.planes if self.bottleneck else self.planes
        for i in range(self.num_blocks):
            first = i == 0
            x = ResidualBlock(
                planes=self.planes,
                stride=self.stride if first else 1,
                bottleneck=self.bottleneck,
                project=first and (self.stride != 1 or x.shape[-1] != out_features),
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                operand_dtype=self.operand_dtype,
                name=str(i),
            )(x, train)
        return x


class ResNet(nn.Module):
    """ResNet-{18,34,50,101,152} without pooling/fc, plus a 2x2/2 average pool (docs/methods/network.md §4.1).

    (B, H, W, 3) -> (B, H/64, W/64, 8*width*expansion) with extra_pool (H/32 without). With
    freeze_early_stages (the reference), stem and layer1..layer3 always run inference-mode BN
    and get no gradient (stop_gradient on the output of layer3); layer4 uses batch statistics
    when train=True. Without it (training from scratch) every stage trains like layer4.
    Convolutions use conv_impl (models/convolution.py); those of the frozen stem..stage 3 take
    their operands in frozen_dtype (e.g. bfloat16; None: dtype), accumulated in dtype.
    """

    depth: int = 101
    width: int = 64
    extra_pool: bool = True
    freeze_early_stages: bool = True
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    frozen_dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bottleneck, blocks = resnet_stages(self.depth)
        x = x.astype(self.dtype)
        frozen_dtype = self.frozen_dtype if self.freeze_early_stages else None
        x = _conv(
            self.width,
            7,
            2,
            "conv1",
            dtype=self.dtype,
            impl=self.conv_impl,
            operand_dtype=frozen_dtype,
        )(x)
        stem_train = train and not self.freeze_early_stages
        x = nn.relu(
            TorchBatchNorm(dtype=self.dtype, name="bn1")(x, use_running_average=not stem_train)
        )
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf
        for stage, num_blocks in enumerate(blocks):
            frozen = stage < 3 and self.freeze_early_stages
            x = ResNetStage(
                planes=self.width * 2**stage,
                num_blocks=num_blocks,
                stride=1 if stage == 0 else 2,
                bottleneck=bottleneck,
                dtype=self.dtype,
                conv_impl=self.conv_impl,
                operand_dtype=frozen_dtype if frozen else None,
                name=f"layer{stage + 1}",
            )(x, train=train and not frozen)
            if stage == 2 and self.freeze_early_stages:
                x = jax.lax.stop_gradient(x)
        if self.extra_pool:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        return x
