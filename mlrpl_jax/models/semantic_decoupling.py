"""Category-specific attention pooling ("semantic decoupling", docs/methods/network.md §4.3, §4.8.1-2).

g_{b,h,c} = tanh((P1 f_{b,h}) * (P2 e_c));  a_{b,h,c} = w4^T (W3 g + b3) + b4
          = g . (W3^T w4) + (w4 . b3 + b4)                       (exact re-association)
alpha = softmax_h(a);  s_{b,c} = sum_h alpha_{b,h,c} f_{b,h}      (einsum, no 5-D map)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.models.initializers import LinearParams, torch_kernel_init


class SemanticDecoupling(nn.Module):
    """Per-class spatial attention guided by word embeddings.

    Params: 'feature_projection' P1 (D, D_a) and 'word_projection' P2 (D_w, D_a), both
    bias-free; 'hidden' W3 (D_a, D_a) + b3; 'score' w4 (D_a, 1) + b4. b3 and b4 receive a
    zero gradient (softmax shift invariance) but are kept for parity.
    """

    attention_dim: int = 512
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, features: jax.Array, word_embeddings: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """features (B, HW, D), word_embeddings (C, D_w) -> attention (B, HW, C), semantic (B, C, D)."""
        dense = dict(
            features=self.attention_dim,
            use_bias=False,
            kernel_init=torch_kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
        )
        projected_features = nn.Dense(name="feature_projection", **dense)(features)  # (B, HW, D_a)
        projected_words = nn.Dense(name="word_projection", **dense)(word_embeddings)  # (C, D_a)
        hidden_kernel, hidden_bias = LinearParams(
            self.attention_dim, self.attention_dim, name="hidden"
        )()
        score_kernel, score_bias = LinearParams(self.attention_dim, 1, name="score")()

        score_direction = (hidden_kernel @ score_kernel)[:, 0]  # (D_a,) = W3^T w4
        score_offset = hidden_bias @ score_kernel[:, 0] + score_bias[0]  # w4 . b3 + b4
        gated = jnp.tanh(
            projected_features[:, :, None, :] * projected_words[None, None, :, :]
        )  # (B, HW, C, D_a)
        scores = jnp.einsum("bhca,a->bhc", gated, score_direction.astype(self.dtype)) + score_offset
        attention = jax.nn.softmax(
            scores.astype(jnp.promote_types(scores.dtype, jnp.float32)), axis=1
        ).astype(self.dtype)  # (B, HW, C)
        semantic = jnp.einsum("bhc,bhd->bcd", attention, features.astype(self.dtype))  # (B, C, D)
        return attention, semantic
