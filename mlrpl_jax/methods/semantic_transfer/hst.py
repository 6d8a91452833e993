"""HST — Heterogeneous Semantic Transfer (docs/methods/hst.md §7).

SST's model with learnable margins (differential threshold learning, §7.1), soft pseudo-label
scores with PyTorch's clamp gradient (§7.2), class prototypes from K-means instead of a bank
(§7.3) and the prototype loss (§7.4). The prototypes (C, K, D) are method state, recomputed
between epochs by a host hook and checkpointed with the rest.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mlrpl_jax import losses
from mlrpl_jax.class_prototypes import PositiveFeatureCollector
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods.base import LossAux, Method, PyTree, StepContext
from mlrpl_jax.methods.semantic_transfer import pseudo_labels
from mlrpl_jax.methods.semantic_transfer.loss_terms import (
    PseudoLabelDiagnostics,
    shared_loss_terms,
    transfer_diagnostic_inputs,
    transfer_metrics,
)
from mlrpl_jax.methods.semantic_transfer.network import SemanticTransferNetwork

MARGINS = ("intra", "inter")
PROTO_LOSS_SIGNS = ("reference", "paper")


def margin_param_name(which: str) -> str:
    """Name of the learnable margin scalar in the model's params ('intra_margin', 'inter_margin')."""
    return f"{which}_margin"


class HeterogeneousSemanticTransfer(PseudoLabelDiagnostics, Method):
    name = "hst"
    paper_batch_size = 32
    # Its prototypes come from a host pass over unmixed images; the step keeps no image state.
    supports_logicmix = True
    replaced_pseudo_label_weights = ("intra_pseudo_bce_weight", "inter_pseudo_bce_weight")
    schedule_options = {"generate_label_epoch": "epochs", "prototype_interval": "epochs"}

    def check_options(self) -> None:
        opts = self.options
        if opts.proto_loss_sign not in PROTO_LOSS_SIGNS:
            raise ValueError(
                f"hst.proto_loss_sign must be one of {PROTO_LOSS_SIGNS}, got "
                f"{opts.proto_loss_sign!r}"
            )
        if opts.num_prototypes < 1 or opts.prototype_interval < 1 or opts.generate_label_epoch < 0:
            raise ValueError(
                "hst.num_prototypes and hst.prototype_interval must be >= 1 and "
                f"hst.generate_label_epoch >= 0, got {opts.num_prototypes}, "
                f"{opts.prototype_interval} and {opts.generate_label_epoch}"
            )

    def check_training_labels(self) -> None:
        self.require_known_positive_per_class("K-means prototypes")

    def first_full_epoch(self) -> int:
        return self.options.generate_label_epoch

    @property
    def learnable_margins(self) -> tuple[str, ...]:
        """Parameter names of the margins trained by Adam (the others are constants)."""
        return tuple(
            margin_param_name(which)
            for which in MARGINS
            if self.options[f"{which}_margin_learnable"]
        )

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        """Script values of docs/methods/hyperparameters.md, Appendix A (reference argument names in comments)."""
        return ml_collections.ConfigDict(
            {
                "generate_label_epoch": 5,  # e_g, generateLabelEpoch
                # A learnable margin starts at 1.0 whatever its configured value (reference, §7.1,
                # §12.3); the value is used only for a margin that is not learnable.
                "intra_margin": 1.0,  # intraMargin
                "intra_margin_learnable": True,  # isIntraMarginLearnable
                "inter_margin": 1.0,  # interMargin
                "inter_margin_learnable": True,  # isInterMarginLearnable
                # BCE(z, t^intra), BCE(z, t^inter): weight 1 in the reference; SATL sets them to 0
                # when its thresholds replace HST's pseudo labels
                "intra_pseudo_bce_weight": 1.0,
                "inter_pseudo_bce_weight": 1.0,
                "intra_bce_weight": 0.1,  # intraBCEWeight: BCE(r^intra, t)
                "cooccurrence_weight": 10.0,  # intraCooccurrenceWeight
                "inter_bce_weight": 0.1,  # interBCEWeight: BCE(r^inter, t)
                "contrastive_weight": 0.05,  # interInstanceDistanceWeight
                "prototype_weight": 0.05,  # interPrototypeDistanceWeight
                "num_prototypes": 10,  # prototypeNumber K
                "recompute_prototypes": True,  # useRecomputePrototype
                "prototype_interval": 5,  # computePrototypeEpoch: epochs between K-means passes
                "proto_loss_sign": "reference",  # 'reference' mean(1 + tδ) | 'paper' mean(1 - tδ) (§12.3)
            }
        )

    def network(self, base: nn.Module) -> SemanticTransferNetwork:
        """The HST model around `base` (a SharedNetwork, or a SharedHead for feature maps)."""
        return SemanticTransferNetwork(base=base, learnable_margins=self.learnable_margins)

    def init_method_state(self) -> PyTree:
        """Prototypes Π (C, K, D), zeros until the first prototype epoch (they are gated off)."""
        shape = (self.info.num_classes, self.options.num_prototypes, self.config.model.feature_dim)
        return {"prototypes": jnp.zeros(shape, jnp.float32)}

    def margins(self, params: PyTree) -> dict[str, jax.Array]:
        """m_intra, m_inter: the learnable params, or the configured constants (§7.1)."""
        return {
            which: (
                params[margin_param_name(which)]
                if margin_param_name(which) in self.learnable_margins
                else jnp.float32(self.options[f"{which}_margin"])
            )
            for which in MARGINS
        }

    def active_params(self, params: PyTree, epoch: jax.Array) -> PyTree | None:
        """The margins are outside the graph, so untouched by Adam, before epoch e_g (§10.2)."""
        if not self.learnable_margins:
            return None
        started = epoch >= self.options.generate_label_epoch
        return {
            key: started if key in self.learnable_margins else jax.tree.map(lambda _: True, value)
            for key, value in params.items()
        }

    def is_prototype_epoch(self, epoch: int) -> bool:
        """K-means at e_g and every `prototype_interval` epochs after (clean fix of §12.3)."""
        since = epoch - self.options.generate_label_epoch
        if since < 0:
            return False
        return since == 0 or (
            self.options.recompute_prototypes and since % self.options.prototype_interval == 0
        )

    def prototype_seed(self, epoch: int) -> int:
        """K-means seed of `epoch`'s prototypes, derived from config.seed (§10.5)."""
        return int(np.random.SeedSequence([self.config.seed, epoch]).generate_state(1)[0])

    def on_epoch_start(self, state: Any, epoch: int, host: HostContext) -> Any:
        """Recomputes Π from an inference-mode pass over the augmented training loader (§7.3)."""
        if not self.is_prototype_epoch(epoch):
            return state
        collector = PositiveFeatureCollector(self.info.num_classes, self.config.model.feature_dim)
        for outputs, labels in host.inference_pass(state, self._semantic_features, epoch):
            collector.add(outputs["semantic"], labels)
        prototypes = collector.kmeans(self.options.num_prototypes, self.prototype_seed(epoch))
        logging.info(
            "epoch %d: HST prototypes from %d known positives (fewest per class: %d)",
            epoch,
            int(collector.counts.sum()),
            int(collector.counts.min()),
        )
        method_state = dict(state.method_state)
        method_state["prototypes"] = host.replicate(prototypes)
        return state.replace(method_state=method_state)

    def _semantic_features(
        self, variables: dict[str, PyTree], method_state: PyTree, images: jax.Array
    ) -> dict[str, jax.Array]:
        features = self.model.apply(
            variables, images, train=False, method=SemanticTransferNetwork.extract
        )
        return {"semantic": features.semantic}  # (B, C, D)

    def loss(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux]:
        """§7.4: three classification BCEs, the DTL score BCEs, L_cooc, L_con and L_proto."""
        opts = self.options
        output, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        targets = batch["labels"]  # (B, C)
        prototypes = method_state["prototypes"]  # (C, K, D)
        margins = self.margins(variables["params"])
        intra_scores = pseudo_labels.hst_intra_scores(
            output.pair_logits, targets, margins["intra"]
        )  # r^intra (B, C)
        inter_scores = pseudo_labels.hst_inter_scores(
            output.semantic, prototypes, margins["inter"]
        )  # r^inter (B, C)
        intra_targets = pseudo_labels.hst_binary_pseudo_labels(intra_scores, targets)
        inter_targets = pseudo_labels.hst_binary_pseudo_labels(inter_scores, targets)
        pseudo_on = (ctx.epoch >= opts.generate_label_epoch).astype(jnp.float32)
        warmup = losses.warmup_factor(ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)

        terms = {
            **shared_loss_terms(output, targets, intra_targets, inter_targets, ctx.rng),
            "intra_score_bce": losses.partial_bce(intra_scores, targets),
            "inter_score_bce": losses.partial_bce(inter_scores, targets),
            "prototype": pseudo_labels.prototype_loss(
                output.semantic, targets, prototypes, sign=opts.proto_loss_sign
            ),
        }
        total = (
            terms["bce"]
            + pseudo_on
            * (
                opts.intra_pseudo_bce_weight * terms["intra_bce"]
                + opts.inter_pseudo_bce_weight * terms["inter_bce"]
                + opts.intra_bce_weight * terms["intra_score_bce"]
                + opts.inter_bce_weight * terms["inter_score_bce"]
                + opts.prototype_weight * terms["prototype"]
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
            method_state=method_state,
            metrics=metrics,
            diagnostic_inputs=transfer_diagnostic_inputs(intra_targets, inter_targets, pseudo_on),
        )
