"""PyTorch default initialisers for Flax parameters (docs/methods/network.md §4.7).

Flax's defaults (LeCun normal kernels, zero biases) differ from PyTorch's, so every layer of
the shared network names its initialiser explicitly with one of these.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = nn.initializers.Initializer

# torch.nn.Linear / Conv2d weight: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
# Works for Dense kernels (in, out) and conv kernels (kh, kw, in, out): fan_in = in * kh * kw.
torch_kernel_init: Initializer = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# torchvision ResNet convs: kaiming_normal(mode='fan_out', nonlinearity='relu'), std = sqrt(2 / fan_out).
kaiming_normal_fan_out: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def uniform_symmetric(bound: float) -> Initializer:
    """U(-bound, bound), the building block of every PyTorch default initialiser."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


def torch_bias_init(fan_in: int) -> Initializer:
    """Bias of torch.nn.Linear / Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform_symmetric(1.0 / math.sqrt(fan_in))


def element_wise_init(width: int) -> Initializer:
    """Weight and bias of the per-class (element-wise) classifiers: U(-1/sqrt(D), 1/sqrt(D))."""
    return uniform_symmetric(1.0 / math.sqrt(width))


class LinearParams(nn.Module):
    """Owns the kernel (in, out) and bias (out,) of a PyTorch-initialised linear map.

    It does not apply them: the caller fuses or re-associates products (docs/methods/network.md §4.8)
    while the parameters stay exactly those of the reference layer.
    """

    in_features: int
    out_features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", torch_kernel_init, (self.in_features, self.out_features))
        bias = self.param("bias", torch_bias_init(self.in_features), (self.out_features,))
        return kernel, bias
