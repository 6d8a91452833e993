"""SST — Structured Semantic Transfer (docs/methods/sst.md §6).

Intra-image pseudo positives from the predicted co-occurrence of each image's known positives
(§6.2) and cross-image ones from a bank of recent known-positive features (§6.3), with margins
that fall by a fixed schedule (§6.4). The bank is method state updated inside the jitted step
from the global batch; the margins are a pure function of the epoch, so neither depends on
host-side bookkeeping and both survive a checkpoint/restore exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlrpl_jax import losses
from mlrpl_jax.data.info import DataInfo
from mlrpl_jax.methods.base import LossAux, Method, PyTree, StepContext
from mlrpl_jax.methods.semantic_transfer import pseudo_labels
from mlrpl_jax.methods.semantic_transfer.loss_terms import (
    PseudoLabelDiagnostics,
    shared_loss_terms,
    transfer_diagnostic_inputs,
    transfer_metrics,
)
from mlrpl_jax.methods.semantic_transfer.network import SemanticTransferNetwork


def margin_schedule(
    initial: float, decay: float, floor: float, start_epoch: int, num_epochs: int
) -> np.ndarray:
    """Margins in force during epochs 0..num_epochs-1 (docs/methods/sst.md §6.4), float32 (num_epochs,).

    After epoch e >= start_epoch the margin becomes max(floor, m - decay), by repeated float64
    subtraction as in the reference, then rounded once to float32.
    """
    margins, margin = [], float(initial)
    for epoch in range(num_epochs):
        margins.append(margin)
        if epoch >= start_epoch:
            margin = max(floor, margin - decay)
    return np.asarray(margins, np.float64).astype(np.float32)


class StructuredSemanticTransfer(PseudoLabelDiagnostics, Method):
    name = "sst"
    replaced_pseudo_label_weights = ("intra_bce_weight", "inter_bce_weight")
    schedule_options = {"generate_label_epoch": "epochs", "margin_decay": "per_epoch"}

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        info: DataInfo,
        word_embeddings: np.ndarray,
        adjacency: np.ndarray,
    ):
        super().__init__(config, info, word_embeddings, adjacency)
        opts = self.options
        self.margins = {
            which: margin_schedule(
                opts[f"{which}_margin"],
                opts.margin_decay,
                opts.margin_floor,
                opts.generate_label_epoch,
                max(config.epochs, 1),
            )
            for which in ("intra", "inter")
        }  # float32 tables (num_epochs,)

    def check_options(self) -> None:
        opts = self.options
        if opts.bank_size < 1 or opts.generate_label_epoch < 0:
            raise ValueError(
                f"sst.bank_size must be >= 1 and sst.generate_label_epoch >= 0, got "
                f"{opts.bank_size} and {opts.generate_label_epoch}"
            )

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        """Script values of docs/methods/hyperparameters.md, Appendix A (reference argument names in comments)."""
        return ml_collections.ConfigDict(
            {
                "generate_label_epoch": 5,  # e_g, generateLabelEpoch: first epoch with pseudo labels
                "intra_margin": 0.95,  # intraBCEMargin: initial intra margin
                "inter_margin": 0.95,  # interBCEMargin: initial inter margin
                "margin_decay": 0.025,  # per epoch from e_g on (hard-coded in the reference)
                "margin_floor": 0.75,  # (hard-coded in the reference)
                "intra_bce_weight": 1.0,  # intraBCEWeight
                "cooccurrence_weight": 10.0,  # intraCooccurrenceWeight
                "inter_bce_weight": 1.0,  # interBCEWeight
                "contrastive_weight": 0.05,  # interDistanceWeight
                "bank_size": 100,  # interExampleNumber: N_Q positives per class
            }
        )

    def network(self, base: nn.Module) -> SemanticTransferNetwork:
        """The SST model around `base` (a SharedNetwork, or a SharedHead for feature maps)."""
        return SemanticTransferNetwork(base=base)

    def first_full_epoch(self) -> int:
        return self.options.generate_label_epoch

    def init_method_state(self) -> PyTree:
        """The positive-feature bank (C, N_Q, D), zeros, as a ring buffer (§6.3)."""
        return {
            "bank": pseudo_labels.init_positive_bank(
                self.info.num_classes, self.options.bank_size, self.config.model.feature_dim
            )
        }

    def margins_at(self, epoch: jax.Array) -> dict[str, jax.Array]:
        """Float32 intra and inter margins of `epoch` (traced), from the §6.4 table."""
        return {
            which: jnp.asarray(table)[jnp.clip(epoch, 0, len(table) - 1)]
            for which, table in self.margins.items()
        }

    def loss(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux]:
        """§6.5: BCE(z,t) + [e>=e_g](λ1 BCE(z,t^intra) + λ2 BCE(z,t^inter))
        + w_e (λ3 L_cooc + λ4 L_con)."""
        opts = self.options
        output, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        targets = batch["labels"]  # (B, C)
        bank = pseudo_labels.positive_bank_update(method_state["bank"], output.semantic, targets)
        margins = self.margins_at(ctx.epoch)
        intra_targets = pseudo_labels.sst_intra_pseudo_labels(
            output.pair_logits, targets, margins["intra"]
        )
        inter_targets = pseudo_labels.sst_inter_pseudo_labels(
            output.semantic, targets, bank["rows"], margins["inter"]
        )
        pseudo_on = (ctx.epoch >= opts.generate_label_epoch).astype(jnp.float32)
        warmup = losses.warmup_factor(ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)

        terms = shared_loss_terms(output, targets, intra_targets, inter_targets, ctx.rng)
        total = (
            terms["bce"]
            + pseudo_on
            * (
                opts.intra_bce_weight * terms["intra_bce"]
                + opts.inter_bce_weight * terms["inter_bce"]
            )
            + warmup
            * (
                opts.cooccurrence_weight * terms["cooccurrence"]
                + opts.contrastive_weight * terms["contrastive"]
            )
        )
        metrics = transfer_metrics(terms, margins, intra_targets, inter_targets, targets, pseudo_on)
        return total, LossAux(
            batch_stats=updates["batch_stats"],
            method_state={"bank": bank},
            metrics=metrics,
            diagnostic_inputs=transfer_diagnostic_inputs(intra_targets, inter_targets, pseudo_on),
        )
