"""Per-class (element-wise) linear classifier and the output head (docs/methods/network.md §4.5).

o_{b,c} = tanh(W_o [h_{b,c} ; s_{b,c}] + b_o);  z_{b,c} = omega_c . o_{b,c} + kappa_c.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.models.initializers import element_wise_init, torch_bias_init, torch_kernel_init


class ElementWiseLinear(nn.Module):
    """One independent linear classifier per class: (B, C, D) -> (B, C).

    Params 'kernel' omega (C, D) and 'bias' kappa (C,), both U(-1/sqrt(D), 1/sqrt(D)).
    """

    num_classes: int
    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-2:] != (self.num_classes, self.features):
            raise ValueError(
                f"ElementWiseLinear expects inputs (..., {self.num_classes}, {self.features}) "
                f"(classes, features) but got shape {x.shape}."
            )
        init = element_wise_init(self.features)
        kernel = self.param("kernel", init, (self.num_classes, self.features), jnp.float32)
        bias = self.param("bias", init, (self.num_classes,), jnp.float32)
        x = x.astype(self.dtype)
        return jnp.einsum("...cd,cd->...c", x, kernel.astype(self.dtype)) + bias.astype(self.dtype)


class OutputHead(nn.Module):
    """fc + tanh over [GGNN output ; semantic feature] (GGNN first), then per-class logits.

    Submodules 'fc' (2D -> D_o, PyTorch Linear init) and 'classifiers' (ElementWiseLinear).
    """

    num_classes: int
    input_features: int  # width of [h ; s], i.e. 2 D
    features: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, nodes: jax.Array, semantic: jax.Array) -> jax.Array:
        """nodes (B, C, D), semantic (B, C, D) -> logits (B, C)."""
        joined = jnp.concatenate([nodes, semantic], axis=-1)  # (B, C, 2D)
        if joined.shape[-1] != self.input_features:
            raise ValueError(
                f"OutputHead was built for {self.input_features} input features but [nodes ; semantic] "
                f"has {joined.shape[-1]}; set input_features to that width."
            )
        fc = nn.Dense(
            self.features,
            kernel_init=torch_kernel_init,
            bias_init=torch_bias_init(self.input_features),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="fc",
        )
        hidden = jnp.tanh(fc(joined))  # (B, C, D_o)
        return ElementWiseLinear(
            self.num_classes, self.features, dtype=self.dtype, name="classifiers"
        )(hidden)
