"""Pairwise co-occurrence head of SST/HST (docs/methods/network.md §4.6), computed with the exact
re-association of §4.8.3.

Reference:  q_c = W1 s_c + b1;  rho_k = ReLU(W2 [q_i ; q_j] + b2);  u_k = nu_k . (W3' rho_k + b3') + lambda_k
Here:       rho_k = ReLU(L_i + R_j + b2) with L = W2^L q, R = W2^R q per class (B, C, H),
            u_k = (W3'^T nu_k) . rho_k + (nu_k . b3' + lambda_k),
so neither the (B, P, 2 D_a) pair concatenation nor the (B, P, H) x (H, H) product is formed.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.models.initializers import LinearParams, element_wise_init
from mlrpl_jax.pairs import num_pairs, pair_indices


class PairClassifierParams(nn.Module):
    """Owns the per-pair element-wise classifier nu (P, H) and lambda (P,), U(±1/sqrt(H))."""

    num_pairs: int
    features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        init = element_wise_init(self.features)
        kernel = self.param("kernel", init, (self.num_pairs, self.features))
        bias = self.param("bias", init, (self.num_pairs,))
        return kernel, bias


class CooccurrenceHead(nn.Module):
    """Semantic features (B, C, D) -> pair logits u (B, P) in Π_C order.

    Params (torch name in brackets): 'class_projection' W1 (D, D_a) [intra_fc_1],
    'pair_hidden' W2 (2 D_a, H) [intra_fc_2], 'pair_output' W3' (H, H) [intra_fc_3],
    'pair_classifiers' nu (P, H), lambda (P,) [intra_classifiers]. Linear layers use PyTorch's
    default init; D is inferred from the input.
    """

    num_classes: int
    pair_dim: int = 512
    hidden_dim: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, semantic: jax.Array) -> jax.Array:
        if semantic.ndim != 3 or semantic.shape[1] != self.num_classes:
            raise ValueError(
                f"CooccurrenceHead expects semantic features (B, {self.num_classes}, D), got shape "
                f"{semantic.shape}."
            )
        feature_dim = semantic.shape[-1]
        projection_kernel, projection_bias = LinearParams(
            feature_dim, self.pair_dim, name="class_projection"
        )()
        hidden_kernel, hidden_bias = LinearParams(
            2 * self.pair_dim, self.hidden_dim, name="pair_hidden"
        )()
        output_kernel, output_bias = LinearParams(
            self.hidden_dim, self.hidden_dim, name="pair_output"
        )()
        pair_weight, pair_bias = PairClassifierParams(
            num_pairs(self.num_classes), self.hidden_dim, name="pair_classifiers"
        )()

        dtype = self.dtype
        projected = semantic.astype(dtype) @ projection_kernel.astype(
            dtype
        ) + projection_bias.astype(dtype)  # q (B, C, D_a)
        left_right_kernel = jnp.concatenate(
            [hidden_kernel[: self.pair_dim], hidden_kernel[self.pair_dim :]], axis=1
        )  # [W2^L | W2^R] as (D_a, 2H)
        left_right = projected @ left_right_kernel.astype(dtype)  # (B, C, 2H)
        left, right = (
            left_right[..., : self.hidden_dim],
            left_right[..., self.hidden_dim :],
        )  # (B, C, H) each
        first, second = pair_indices(self.num_classes)
        pair_hidden = jax.nn.relu(
            left[:, first] + right[:, second] + hidden_bias.astype(dtype)
        )  # rho (B, P, H)

        folded_weight = pair_weight @ output_kernel.T  # W3'^T nu_k per pair, (P, H)
        folded_bias = pair_weight @ output_bias + pair_bias  # nu_k . b3' + lambda_k, (P,)
        return jnp.einsum(
            "bph,ph->bp", pair_hidden, folded_weight.astype(dtype)
        ) + folded_bias.astype(dtype)  # u (B, P)
