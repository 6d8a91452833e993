"""What SST and HST compute alike: the loss terms both weigh (docs/methods/sst.md §6.5,
hst.md §7.4) and the logged pseudo-label counts, whose ratios over a logging window are the
pseudo labels' precision and recall against the hidden complete labels (counted by the
diagnostics hook, never by the loss)."""

import jax
import jax.numpy as jnp

from mlrpl_jax import contrastive, losses
from mlrpl_jax.methods.base import PyTree, StepContext
from mlrpl_jax.methods.semantic_transfer import cooccurrence_loss
from mlrpl_jax.methods.semantic_transfer.network import SemanticTransferOutput


def shared_loss_terms(
    output: SemanticTransferOutput,
    targets: jax.Array,
    intra_targets: jax.Array,
    inter_targets: jax.Array,
    rng: jax.Array,
) -> dict[str, jax.Array]:
    """Unweighted scalars: BCE of the logits on the known labels t and on each pseudo-label set
    (B, C), the pair co-occurrence loss L_cooc (§5.2) and the contrastive loss L_con (§5.3)."""
    return {
        "bce": losses.partial_bce(output.logits, targets),
        "intra_bce": losses.partial_bce(output.logits, intra_targets),
        "inter_bce": losses.partial_bce(output.logits, inter_targets),
        "cooccurrence": cooccurrence_loss.pair_asymmetric_loss(output.pair_logits, targets),
        "contrastive": contrastive.contrastive_loss(output.semantic, targets, rng),
    }


def transfer_metrics(
    terms: dict[str, jax.Array],
    margins: dict[str, jax.Array],
    intra_targets: jax.Array,
    inter_targets: jax.Array,
    targets: jax.Array,
    pseudo_on: jax.Array,
) -> dict[str, jax.Array]:
    """The loss terms, the margins and the numbers of new pseudo positives of the batch (SST,
    HST): unknown entries turned positive, each a float32 scalar."""
    return {
        **terms,
        "intra_margin": margins["intra"],
        "inter_margin": margins["inter"],
        "intra_pseudo_positives": pseudo_on * count_new_positives(intra_targets, targets),
        "inter_pseudo_positives": pseudo_on * count_new_positives(inter_targets, targets),
    }


def transfer_diagnostic_inputs(
    intra_targets: jax.Array, inter_targets: jax.Array, pseudo_on: jax.Array
) -> dict[str, jax.Array]:
    """What `pseudo_label_diagnostics` needs from the loss: the pseudo labels (B, C) and
    whether they are on (float32 scalar)."""
    return {"intra_targets": intra_targets, "inter_targets": inter_targets, "pseudo_on": pseudo_on}


def pseudo_label_diagnostics(
    inputs: dict[str, jax.Array], targets: jax.Array, complete_labels: jax.Array
) -> dict[str, jax.Array]:
    """Counts against the hidden complete labels (B, C), each a float32 scalar: how many new
    pseudo positives are positive in them, and the number of hidden positives among the unknown
    entries. Over a logging window the ratios of their means to those of `transfer_metrics`'
    counts are the pseudo labels' precision and recall (Method.diagnostics: never in a loss)."""
    hidden_positive = (targets == 0) & (complete_labels == 1)  # (B, C)
    pseudo_on = inputs["pseudo_on"]
    return {
        "intra_pseudo_true_positives": pseudo_on
        * jnp.sum((inputs["intra_targets"] == 1) & hidden_positive, dtype=jnp.float32),
        "inter_pseudo_true_positives": pseudo_on
        * jnp.sum((inputs["inter_targets"] == 1) & hidden_positive, dtype=jnp.float32),
        "hidden_positives": jnp.sum(hidden_positive, dtype=jnp.float32),
    }


class PseudoLabelDiagnostics:
    """`Method.diagnostics` of SST and HST: `pseudo_label_diagnostics` of the inputs their loss
    returns (`transfer_diagnostic_inputs`), on the labels it trained on."""

    def diagnostics(
        self,
        inputs: PyTree,
        method_state: PyTree,
        batch: dict[str, jax.Array],
        complete_labels: jax.Array,
        ctx: StepContext,
    ) -> tuple[dict[str, jax.Array], PyTree]:
        del ctx
        return pseudo_label_diagnostics(inputs, batch["labels"], complete_labels), method_state


def count_new_positives(pseudo_targets: jax.Array, targets: jax.Array) -> jax.Array:
    """Number of unknown entries turned into pseudo positives in the batch (float32 scalar)."""
    return jnp.sum((pseudo_targets == 1) & (targets == 0), dtype=jnp.float32)
