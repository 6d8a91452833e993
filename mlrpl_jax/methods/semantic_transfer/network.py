"""The SST/HST model: the shared network plus the pairwise co-occurrence head (docs/methods/sst.md §6.1, §7.1).

The base is a SharedNetwork (images) or a SharedHead (backbone feature maps, for head-only
parity tests); it shares this module's scope, so its variables keep their usual paths
('backbone', 'head' or the head's own submodules) and the co-occurrence head sits beside them
as 'cooccurrence'. HST's learnable margins are scalar params at the top level.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from mlrpl_jax.methods.semantic_transfer.cooccurrence_head import CooccurrenceHead
from mlrpl_jax.models.network import Features


@flax.struct.dataclass
class SemanticTransferOutput:
    logits: jax.Array  # (B, C)
    pair_logits: jax.Array  # (B, P) in Π_C order
    semantic: jax.Array  # (B, C, D) semantic features S (never the GGNN output)


class SemanticTransferNetwork(nn.Module):
    """base -> (logits z, pair logits u, semantic features S).

    The co-occurrence head reads S with pair dim D_a = base.attention_dim and hidden width
    base.output_dim, as the reference (intra_fc_1: D -> D_a, intra_fc_2: 2 D_a -> D_o).
    `learnable_margins` names scalar params initialised to 1.0 (HST §7.1).
    """

    base: nn.Module  # SharedNetwork or SharedHead
    learnable_margins: tuple[str, ...] = ()

    def setup(self) -> None:
        nn.share_scope(self, self.base)
        self.cooccurrence = CooccurrenceHead(
            num_classes=self.base.num_classes,
            pair_dim=self.base.attention_dim,
            hidden_dim=self.base.output_dim,
            dtype=self.base.dtype,
        )
        for name in self.learnable_margins:
            self.param(name, nn.initializers.ones, (), jnp.float32)

    def extract(self, inputs: jax.Array, train: bool) -> Features:
        """Features of the base only (no GGNN, no pair head): what prototype passes need."""
        return self.base.extract(inputs, train)

    def __call__(self, inputs: jax.Array, train: bool) -> SemanticTransferOutput:
        features = self.base.extract(inputs, train)
        return SemanticTransferOutput(
            logits=self.base.classify(features.semantic),
            pair_logits=self.cooccurrence(features.semantic),
            semantic=features.semantic,
        )
