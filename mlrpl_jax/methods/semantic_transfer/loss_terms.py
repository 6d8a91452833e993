"""What SST and HST compute alike: the loss terms both weigh (docs/methods/sst.md §6.5,
hst.md §7.4) and the logged pseudo-label counts, whose ratios over a logging window are the
pseudo labels' precision and recall against the hidden complete labels."""

import jax
import jax.numpy as jnp

from mlrpl_jax import contrastive, losses
from mlrpl_jax.methods.semantic_transfer import cooccurrence_loss
from mlrpl_jax.methods.semantic_transfer.network import SemanticTransferOutput


def shared_loss_terms(output: SemanticTransferOutput, targets: jax.Array, intra_targets: jax.Array,
                      inter_targets: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
    """Unweighted scalars: BCE of the logits on the known labels t and on each pseudo-label set
    (B, C), the pair co-occurrence loss L_cooc (§5.2) and the contrastive loss L_con (§5.3)."""
    return {
        "bce": losses.partial_bce(output.logits, targets),
        "intra_bce": losses.partial_bce(output.logits, intra_targets),
        "inter_bce": losses.partial_bce(output.logits, inter_targets),
        "cooccurrence": cooccurrence_loss.pair_asymmetric_loss(output.pair_logits, targets),
        "contrastive": contrastive.contrastive_loss(output.semantic, targets, rng),
    }


def transfer_metrics(terms: dict[str, jax.Array], margins: dict[str, jax.Array],
                     intra_targets: jax.Array, inter_targets: jax.Array, targets: jax.Array,
                     complete_labels: jax.Array, pseudo_on: jax.Array) -> dict[str, jax.Array]:
    """The loss terms, the margins and pseudo-label counts of the batch (SST, HST).

    Counts, each a float32 scalar: new pseudo positives (unknown entries turned positive), how
    many of them are positive in the hidden complete labels, and the number of hidden positives
    among the unknown entries. Over a logging window the ratios of their means are the pseudo
    labels' precision and recall; the complete labels never reach the loss.
    """
    hidden_positive = (targets == 0) & (complete_labels == 1)  # (B, C)
    return {
        **terms,
        "intra_margin": margins["intra"],
        "inter_margin": margins["inter"],
        "intra_pseudo_positives": pseudo_on * count_new_positives(intra_targets, targets),
        "inter_pseudo_positives": pseudo_on * count_new_positives(inter_targets, targets),
        "intra_pseudo_true_positives": pseudo_on * jnp.sum(
            (intra_targets == 1) & hidden_positive, dtype=jnp.float32),
        "inter_pseudo_true_positives": pseudo_on * jnp.sum(
            (inter_targets == 1) & hidden_positive, dtype=jnp.float32),
        "hidden_positives": jnp.sum(hidden_positive, dtype=jnp.float32),
    }


def count_new_positives(pseudo_targets: jax.Array, targets: jax.Array) -> jax.Array:
    """Number of unknown entries turned into pseudo positives in the batch (float32 scalar)."""
    return jnp.sum((pseudo_targets == 1) & (targets == 0), dtype=jnp.float32)
