"""The shared network of all methods: backbone -> reduction -> decoupling -> GGNN -> head (docs/methods/network.md §4).

Method plug-ins call `extract` and `classify` as linen methods, e.g. classify blended semantic
features inside the same `apply` (docs/methods/network.md §4.5 "head(S)").
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlrpl_jax.models import efficientnet_lite
from mlrpl_jax.models.batch_norm import TorchBatchNorm
from mlrpl_jax.models.classifier import OutputHead
from mlrpl_jax.models.ggnn import GatedGNN
from mlrpl_jax.models.initializers import torch_kernel_init
from mlrpl_jax.models.resnet import FROZEN_BACKBONE_MODULES, ResNet
from mlrpl_jax.models.semantic_decoupling import SemanticDecoupling

__all__ = [
    "BACKBONES",
    "FROZEN_BACKBONE_MODULES",
    "Features",
    "NetworkOutput",
    "SharedHead",
    "SharedNetwork",
    "build_backbone",
    "frozen_backbone_modules",
    "is_frozen_param",
]

# config.model.backbone -> the backbone's submodules that never train (stem..last stride-16 stage).
BACKBONES: dict[str, tuple[str, ...]] = {
    "resnet": FROZEN_BACKBONE_MODULES,
    "efficientnet_lite0": efficientnet_lite.FROZEN_BACKBONE_MODULES,
}


def frozen_backbone_modules(backbone: str) -> tuple[str, ...]:
    """Names of the frozen submodules of `backbone` (a key of BACKBONES)."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[backbone]


def build_backbone(
    backbone_name: str,
    *,
    depth: int = 101,
    width: int = 64,
    extra_pool: bool = True,
    freeze_early_stages: bool = True,
    dtype: Any = jnp.float32,
    conv_impl: str = "auto",
    frozen_dtype: Any = None,
) -> nn.Module:
    """The backbone module `backbone_name` (a key of BACKBONES): images (B, H, W, 3) -> feature
    map. depth, width and extra_pool apply to 'resnet' only."""
    frozen_backbone_modules(backbone_name)  # validates the name
    if backbone_name == "efficientnet_lite0":
        return efficientnet_lite.EfficientNetLite0(
            freeze_early_stages=freeze_early_stages,
            dtype=dtype,
            conv_impl=conv_impl,
            frozen_dtype=frozen_dtype,
        )
    return ResNet(
        depth=depth,
        width=width,
        extra_pool=extra_pool,
        freeze_early_stages=freeze_early_stages,
        dtype=dtype,
        conv_impl=conv_impl,
        frozen_dtype=frozen_dtype,
    )


@flax.struct.dataclass
class Features:
    """Intermediate features of the shared head."""

    reduced: jax.Array  # (B, HW, D) reduced feature map f
    attention: jax.Array  # (B, HW, C) softmax over HW
    semantic: jax.Array  # (B, C, D) semantic features s
    grid: tuple[int, int] = flax.struct.field(pytree_node=False)  # (h, w) of the feature map


@flax.struct.dataclass
class NetworkOutput:
    logits: jax.Array  # (B, C)
    features: Features


def is_frozen_param(path: tuple[str, ...], backbone: str = "resnet") -> bool:
    """Whether a flattened SharedNetwork params path belongs to the frozen part of `backbone`."""
    return len(path) >= 2 and path[0] == "backbone" and path[1] in frozen_backbone_modules(backbone)


class SharedHead(nn.Module):
    """Everything after the backbone (docs/methods/network.md §4.2-4.5).

    1x1 conv (no bias) + TorchBatchNorm, no activation -> SemanticDecoupling -> GatedGNN ->
    OutputHead. word_embeddings E (C, D_w) and adjacency A (C, C) are constants, not params;
    the GGNN's out-matrix is A^T.
    """

    num_classes: int
    word_embeddings: np.ndarray
    adjacency: np.ndarray
    feature_dim: int = 1024
    attention_dim: int = 512
    output_dim: int = 1024
    ggnn_steps: int = 3
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.num_classes
        words, adjacency = np.shape(self.word_embeddings), np.shape(self.adjacency)
        if len(words) != 2 or words[0] != c:
            raise ValueError(
                f"word_embeddings must have shape (num_classes={c}, D_w), got {words}."
            )
        if adjacency != (c, c):
            raise ValueError(
                f"adjacency must have shape (num_classes, num_classes) = ({c}, {c}), got {adjacency}."
            )
        self.reduction_conv = nn.Conv(
            self.feature_dim,
            (1, 1),
            use_bias=False,
            kernel_init=torch_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        self.reduction_bn = TorchBatchNorm(dtype=self.dtype)
        self.semantic_decoupling = SemanticDecoupling(
            attention_dim=self.attention_dim, dtype=self.dtype
        )
        self.ggnn = GatedGNN(features=self.feature_dim, steps=self.ggnn_steps, dtype=self.dtype)
        self.output_head = OutputHead(
            num_classes=c,
            input_features=2 * self.feature_dim,
            features=self.output_dim,
            dtype=self.dtype,
        )

    def extract(self, feature_map: jax.Array, train: bool) -> Features:
        """Backbone map (B, h, w, C_in) -> reduced map, attention and semantic features."""
        batch, h, w, _ = feature_map.shape
        reduced = self.reduction_bn(self.reduction_conv(feature_map.astype(self.dtype)), not train)
        reduced = reduced.reshape(batch, h * w, self.feature_dim)  # (B, HW, D)
        words = jnp.asarray(self.word_embeddings, jnp.float32)  # (C, D_w)
        attention, semantic = self.semantic_decoupling(reduced, words)
        return Features(reduced=reduced, attention=attention, semantic=semantic, grid=(h, w))

    def classify(self, semantic: jax.Array) -> jax.Array:
        """head(S): semantic features (B, C, D) -> logits (B, C) through the GGNN and output head."""
        nodes = self.ggnn(semantic, jnp.asarray(self.adjacency, jnp.float32))
        return self.output_head(nodes, semantic)

    def __call__(self, feature_map: jax.Array, train: bool) -> NetworkOutput:
        features = self.extract(feature_map, train)
        return NetworkOutput(logits=self.classify(features.semantic), features=features)


class SharedNetwork(nn.Module):
    """Backbone ('backbone') followed by the SharedHead ('head'): images (B, H, W, 3) -> logits.

    backbone_name 'resnet' is the torchvision-layout ResNet (depth, width, extra_pool apply);
    'efficientnet_lite0' is EfficientNet-Lite0 (those three are ignored). The backbone's
    convolutions use conv_impl, its frozen part's conv operands frozen_dtype (models/convolution.py).
    """

    num_classes: int
    word_embeddings: np.ndarray
    adjacency: np.ndarray
    backbone_name: str = "resnet"
    depth: int = 101
    width: int = 64
    extra_pool: bool = True
    freeze_early_stages: bool = True
    feature_dim: int = 1024
    attention_dim: int = 512
    output_dim: int = 1024
    ggnn_steps: int = 3
    dtype: Any = jnp.float32
    conv_impl: str = "auto"
    frozen_dtype: Any = None

    def setup(self) -> None:
        self.backbone = build_backbone(
            self.backbone_name,
            depth=self.depth,
            width=self.width,
            extra_pool=self.extra_pool,
            freeze_early_stages=self.freeze_early_stages,
            dtype=self.dtype,
            conv_impl=self.conv_impl,
            frozen_dtype=self.frozen_dtype,
        )
        self.head = SharedHead(
            num_classes=self.num_classes,
            word_embeddings=self.word_embeddings,
            adjacency=self.adjacency,
            feature_dim=self.feature_dim,
            attention_dim=self.attention_dim,
            output_dim=self.output_dim,
            ggnn_steps=self.ggnn_steps,
            dtype=self.dtype,
        )

    def extract(self, images: jax.Array, train: bool) -> Features:
        return self.head.extract(self.backbone(images, train), train)

    def classify(self, semantic: jax.Array) -> jax.Array:
        return self.head.classify(semantic)

    def __call__(self, images: jax.Array, train: bool) -> NetworkOutput:
        return self.head(self.backbone(images, train), train)
