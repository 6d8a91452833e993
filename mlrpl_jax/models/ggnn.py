"""Gated graph neural network over the class graph (docs/methods/network.md §4.4, §4.8.4).

m = [A h ; A^T h];  z = sig(W_z m + b_z + U_z h + c_z);  r = sig(W_r m + b_r + U_r h + c_r);
h~ = tanh(W_h m + b_h + U_h (r * h) + c_h);  h <- (1 - z) * h + z * h~,  for T steps.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.models.initializers import LinearParams


class GatedGNN(nn.Module):
    """T GRU-style propagation steps with weights shared over steps and nodes.

    Six separate linear maps, each with its own bias, as in the reference: 'message_update',
    'message_reset', 'message_candidate' (W_z, W_r, W_h: 2D -> D) and 'state_update',
    'state_reset', 'state_candidate' (U_z, U_r, U_h: D -> D). The three W m products run as
    one fused (2D -> 3D) matmul, U_z h and U_r h as one (D -> 2D) matmul.
    """

    features: int
    steps: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, nodes: jax.Array, adjacency: jax.Array) -> jax.Array:
        """nodes (B, C, D), adjacency A (C, C) -> final node states (B, C, D)."""
        if nodes.shape[-1] != self.features:
            raise ValueError(
                f"GatedGNN was built for {self.features}-dim node states but got shape {nodes.shape}; "
                f"set features={nodes.shape[-1]}."
            )
        d = self.features
        message = [
            LinearParams(2 * d, d, name=f"message_{gate}")()
            for gate in ("update", "reset", "candidate")
        ]
        state = [
            LinearParams(d, d, name=f"state_{gate}")() for gate in ("update", "reset", "candidate")
        ]
        message_kernel = jnp.concatenate([k for k, _ in message], axis=1).astype(
            self.dtype
        )  # (2D, 3D)
        message_bias = jnp.concatenate([b for _, b in message]).astype(self.dtype)  # (3D,)
        gate_kernel = jnp.concatenate([k for k, _ in state[:2]], axis=1).astype(
            self.dtype
        )  # (D, 2D)
        gate_bias = jnp.concatenate([b for _, b in state[:2]]).astype(self.dtype)  # (2D,)
        candidate_kernel = state[2][0].astype(self.dtype)  # (D, D)
        candidate_bias = state[2][1].astype(self.dtype)  # (D,)

        adjacency = adjacency.astype(self.dtype)
        h = nodes.astype(self.dtype)
        for _ in range(self.steps):
            incoming = jnp.einsum("cj,bjd->bcd", adjacency, h)  # A h
            outgoing = jnp.einsum("jc,bjd->bcd", adjacency, h)  # A^T h
            m = jnp.concatenate([incoming, outgoing], axis=-1)  # (B, C, 2D)
            m_update, m_reset, m_candidate = jnp.split(
                m @ message_kernel + message_bias, 3, axis=-1
            )
            h_update, h_reset = jnp.split(h @ gate_kernel + gate_bias, 2, axis=-1)
            z = jax.nn.sigmoid(m_update + h_update)
            r = jax.nn.sigmoid(m_reset + h_reset)
            candidate = jnp.tanh(m_candidate + (r * h) @ candidate_kernel + candidate_bias)
            h = (1 - z) * h + z * candidate
        return h
