"""Batch normalisation with PyTorch semantics (docs/methods/network.md §4.1, §10.4).

y = (x - mu) / sqrt(var_biased + eps) * scale + bias over all axes but the last; in training
mode the running statistics move by momentum m (PyTorch convention) towards the batch mean
and the *unbiased* batch variance var_biased * n / (n - 1), n = number of reduced elements.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class TorchBatchNorm(nn.Module):
    """BatchNorm2d/1d of PyTorch on channel-last inputs.

    Params 'scale' (1) and 'bias' (0); batch_stats 'mean' (0) and 'var' (1). Flax's own
    BatchNorm updates its running variance with the biased estimate, hence this module.
    """

    epsilon: float = 1e-5
    momentum: float = 0.1  # PyTorch convention: weight of the new batch statistic
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # at least float32
        if use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            axes = tuple(range(x.ndim - 1))
            n = x.size // features
            if n < 2:
                raise ValueError(
                    f"TorchBatchNorm in training mode needs more than one value per channel, got input "
                    f"shape {x.shape}; use a larger batch or use_running_average=True."
                )
            mean = jnp.mean(x32, axis=axes)
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)  # biased, used to normalise
            if not self.is_initializing():
                batch_mean = jax.lax.stop_gradient(mean)
                unbiased_var = jax.lax.stop_gradient(var) * (n / (n - 1))
                running_mean.value = (
                    1 - self.momentum
                ) * running_mean.value + self.momentum * batch_mean
                running_var.value = (
                    1 - self.momentum
                ) * running_var.value + self.momentum * unbiased_var
        y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
        return y.astype(self.dtype)
