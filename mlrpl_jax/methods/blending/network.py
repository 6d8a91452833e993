"""The SARB/DSRB model: the shared network plus the learnable blend weights α, β (docs/methods/sarb.md §8.1).

The base (a SharedNetwork, or a SharedHead in head-only parity tests) shares this module's
scope, so its variables keep their usual paths and α, β are scalar params at the top level of
params, beside them: the optimiser and the checkpoint carry them like any other parameter.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.models.network import Features, NetworkOutput

BLEND_PARAMS = ("alpha", "beta")


class BlendingNetwork(nn.Module):
    """base -> (logits, features), with α (instance blend) and β (prototype blend) as params."""

    base: nn.Module  # SharedNetwork or SharedHead
    alpha_init: float = 0.5
    beta_init: float = 0.5

    def setup(self) -> None:
        nn.share_scope(self, self.base)
        self.alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (), jnp.float32)
        self.beta = self.param("beta", nn.initializers.constant(self.beta_init), (), jnp.float32)

    def extract(self, inputs: jax.Array, train: bool) -> Features:
        return self.base.extract(inputs, train)

    def classify(self, semantic: jax.Array) -> jax.Array:
        """Logits (B, C) of semantic features S (B, C, D), blended or not."""
        return self.base.classify(semantic)

    def __call__(self, inputs: jax.Array, train: bool) -> NetworkOutput:
        return self.base(inputs, train)
