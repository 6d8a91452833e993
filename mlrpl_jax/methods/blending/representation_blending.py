"""What SARB and DSRB share: the blend weights, the instance-level blend, the loss and the
prototype schedule (docs/methods/sarb.md §8, §9.1).

L = BCE(z, t) + λ_con w_e L_con(S, t) + [e >= e_m] (λ_I BCE(head(S1), y1) + λ_P BCE(head(S2), y2)):
S1 blends every image with its reversed batch partner where its own label is unknown and the
partner's a known positive (§8.2, the same in both methods); S2 blends unknown classes towards
class prototypes, which each method defines itself (`prototype_blend`, `compute_prototypes`).
α, β are params of BlendingNetwork; they stay untouched by Adam before e_m (§10.2) and are
projected onto [0, 1] after each update (§8.1). The prototypes are method state, recomputed
by a host hook at epochs e_m, e_m + R, ... (§8.3). Partial ASL can replace the BCE of the main term
and of the blended branches (options `known_label_loss`, `blended_loss`; partial_losses.md §2).

The base network is whatever `base_network` returns, as long as it is called as
`(x, train) -> NetworkOutput` and has the linen methods `extract(x, train) -> Features` and
`classify(S) -> logits`: SharedNetwork (images) in training, SharedHead (backbone feature
maps) in head-only parity tests.
"""

from __future__ import annotations

import abc
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlrpl_jax import contrastive, losses
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods.base import LossAux, Method, PyTree, StepContext
from mlrpl_jax.methods.blending import blend
from mlrpl_jax.methods.blending.network import BLEND_PARAMS, BlendingNetwork
from mlrpl_jax.methods.partial_losses import loss_functions
from mlrpl_jax.methods.partial_losses.asymmetric import asymmetric_options
from mlrpl_jax.models.network import Features


def _partial_asl(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return loss_functions.partial_asymmetric_loss(
        logits, labels, **asymmetric_options(), assume_negative=False
    )


def _soft_partial_asl(logits: jax.Array, targets: jax.Array) -> jax.Array:
    return loss_functions.soft_partial_asymmetric_loss(logits, targets, **asymmetric_options())


# The loss of the main term on the known labels (option `known_label_loss`) and of the two
# blended branches on their soft targets (option `blended_loss`): the papers' BCE or partial ASL
# at the ASL paper's values (docs/methods/partial_losses.md §2, §2.1).
KNOWN_LABEL_LOSSES = {"bce": losses.partial_bce, "asl": _partial_asl}
BLENDED_LOSSES = {"bce": losses.partial_bce, "asl": _soft_partial_asl}


@flax.struct.dataclass
class BlendingForward:
    """Train-mode outputs of SARB / DSRB; the blended entries are zeros before e_m."""

    logits: jax.Array  # (B, C) z
    semantic: jax.Array  # (B, C, D) S
    instance_logits: jax.Array  # (B, C) z1 = head(S1)
    instance_targets: jax.Array  # (B, C) y1, differentiable in α
    prototype_logits: jax.Array  # (B, C) z2 = head(S2)
    prototype_targets: jax.Array  # (B, C) y2, differentiable in β
    batch_stats: PyTree  # BN statistics after the forward


class RepresentationBlending(Method):
    """Shared base of SARB and DSRB (not selectable itself: it has no `name`)."""

    schedule_options = {"mixup_epoch": "epochs", "recompute_interval": "epochs"}
    # Prototypes come from a host pass over unmixed images; the step keeps no image state.
    supports_logicmix = True

    @staticmethod
    def shared_options() -> ml_collections.ConfigDict:
        """Options both methods have, with the launch-script values (docs/methods/hyperparameters.md, Appendix A)."""
        section = ml_collections.ConfigDict()
        section.mixup_epoch = 5  # e_m: first blending epoch and first prototype epoch
        section.recompute_interval = 5  # R: prototypes at e_m, e_m + R, e_m + 2R, ...
        section.contrastive_weight = 0.05
        section.alpha_init = 0.5
        section.beta_init = 0.5
        section.learn_alpha = True
        section.learn_beta = True
        # The loss of the main term on the known labels and of the blended branches on their
        # soft targets: 'bce' (the papers) or 'asl' (KNOWN_LABEL_LOSSES, BLENDED_LOSSES)
        section.known_label_loss = "bce"
        section.blended_loss = "bce"
        return section

    def check_options(self) -> None:
        opts = self.options
        if opts.mixup_epoch < 0 or opts.recompute_interval < 1:
            raise ValueError(
                f"{self.name}.mixup_epoch must be >= 0 and {self.name}.recompute_interval "
                f">= 1, got {opts.mixup_epoch} and {opts.recompute_interval}."
            )
        for name in ("alpha_init", "beta_init"):
            if not 0.0 <= opts[name] <= 1.0:
                raise ValueError(f"{self.name}.{name} must lie in [0, 1], got {opts[name]}.")
        for name, choices in (
            ("known_label_loss", KNOWN_LABEL_LOSSES),
            ("blended_loss", BLENDED_LOSSES),
        ):
            if opts[name] not in choices:
                raise ValueError(
                    f"{self.name}.{name} must be one of {sorted(choices)}, got {opts[name]!r}."
                )
        self.check_prototype_options()

    @abc.abstractmethod
    def check_prototype_options(self) -> None:
        """Raises ValueError on prototype options the method cannot use."""

    def check_training_labels(self) -> None:
        self.require_known_positive_per_class("prototypes")

    def first_full_epoch(self) -> int:
        return self.options.mixup_epoch

    def network(self, base: nn.Module) -> BlendingNetwork:
        return BlendingNetwork(
            base=base, alpha_init=self.options.alpha_init, beta_init=self.options.beta_init
        )

    # ------------------------------------------------------------------ state and parameters

    @abc.abstractmethod
    def prototype_table_shape(self) -> tuple[int, ...]:
        """Shape of the prototype table in the method state."""

    def init_method_state(self) -> PyTree:
        """Prototypes (zeros, unused until computed) and the epoch they were computed at (-1: never)."""
        return {
            "prototypes": jnp.zeros(self.prototype_table_shape(), jnp.float32),
            "prototype_epoch": jnp.int32(-1),
        }

    def active_params(self, params: PyTree, epoch: jax.Array) -> PyTree:
        """α, β take part from e_m on (if learnable); everything else from step 0 (§10.2)."""
        blending_active = jnp.asarray(epoch) >= self.options.mixup_epoch
        flags = jax.tree.map(lambda _: True, params)
        flags["alpha"] = blending_active & self.options.learn_alpha
        flags["beta"] = blending_active & self.options.learn_beta
        return flags

    def project_params(self, params: PyTree) -> PyTree:
        """α, β clamped to [0, 1] after each update (§8.1)."""
        return {
            **params,
            **{name: blend.clamp_unit_interval(params[name]) for name in BLEND_PARAMS},
        }

    # ------------------------------------------------------------------ loss

    def branch_weights(self) -> tuple[float, float]:
        """Weights (λ_I, λ_P) of the instance- and prototype-level BCE terms (SARB: 1, 1)."""
        return 1.0, 1.0

    @abc.abstractmethod
    def prototype_blend(
        self,
        features: Features,
        targets: jax.Array,
        method_state: PyTree,
        beta: jax.Array,
        rng: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """Prototype-level blend -> (S2 (B, C, D), y2 (B, C))."""

    def forward(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        epoch: jax.Array,
        rng: jax.Array,
    ) -> BlendingForward:
        """Train-mode forward with both blended branches from e_m on (zeros before, §8.1)."""
        targets = batch["labels"]  # (B, C) in {-1, 0, 1}
        alpha, beta = variables["params"]["alpha"], variables["params"]["beta"]
        output, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        semantic = output.features.semantic  # (B, C, D)

        def classify(blended: jax.Array) -> jax.Array:
            return self.model.apply(variables, blended, method="classify")  # (B, C)

        def blended_branches() -> tuple[jax.Array, ...]:
            instance_features, instance_targets = blend.instance_blend(semantic, targets, alpha)
            prototype_features, prototype_targets = self.prototype_blend(
                output.features, targets, method_state, beta, rng
            )
            return (
                classify(instance_features),
                instance_targets,
                classify(prototype_features),
                prototype_targets,
            )

        def no_blending() -> tuple[jax.Array, ...]:
            logits, blended_targets = (
                jnp.zeros_like(output.logits),
                jnp.zeros(targets.shape, jnp.float32),
            )
            return logits, blended_targets, logits, blended_targets

        # All-zero targets select nothing, so the blended BCE terms are 0 before e_m.
        branches = jax.lax.cond(epoch >= self.options.mixup_epoch, blended_branches, no_blending)
        return BlendingForward(
            output.logits, semantic, *branches, batch_stats=updates["batch_stats"]
        )

    def loss(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux]:
        """§8.4 (SARB) / §9.1 (DSRB): BCE + weighted contrastive + blended branches from e_m."""
        targets = batch["labels"]
        contrastive_rng, blend_rng = jax.random.split(ctx.rng)
        out = self.forward(variables, method_state, batch, ctx.epoch, blend_rng)
        bce = KNOWN_LABEL_LOSSES[self.options.known_label_loss](out.logits, targets)
        contrastive_term = contrastive.contrastive_loss(out.semantic, targets, contrastive_rng)
        warmup = losses.warmup_factor(ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)
        blended_loss = BLENDED_LOSSES[self.options.blended_loss]
        instance_bce = blended_loss(out.instance_logits, out.instance_targets)
        prototype_bce = blended_loss(out.prototype_logits, out.prototype_targets)
        instance_weight, prototype_weight = self.branch_weights()
        total = (
            bce
            + self.options.contrastive_weight * warmup * contrastive_term
            + instance_weight * instance_bce
            + prototype_weight * prototype_bce
        )
        metrics = {
            "bce": bce,
            "contrastive": contrastive_term,
            "instance_bce": instance_bce,
            "prototype_bce": prototype_bce,
            "alpha": variables["params"]["alpha"],
            "beta": variables["params"]["beta"],
        }
        return total, LossAux(
            batch_stats=out.batch_stats, method_state=method_state, metrics=metrics
        )

    # ------------------------------------------------------------------ prototypes (host)

    def prototypes_due(self, epoch: int, prototype_epoch: int) -> bool:
        """Whether epoch `epoch` starts with a prototype pass (§8.3, D8 of §9.4).

        At e >= e_m when (e - e_m) mod R = 0, and also whenever blending is active but no
        prototypes exist yet (prototype_epoch = -1, e.g. a resumed run or a changed e_m).
        """
        if epoch < self.options.mixup_epoch:
            return False
        return (
            prototype_epoch < 0
            or (epoch - self.options.mixup_epoch) % self.options.recompute_interval == 0
        )

    @abc.abstractmethod
    def compute_prototypes(self, state: Any, epoch: int, host: HostContext) -> np.ndarray:
        """The prototype table of `epoch`, from an inference-mode pass over the training data."""

    def on_epoch_start(self, state: Any, epoch: int, host: HostContext) -> Any:
        prototype_epoch = int(jax.device_get(state.method_state["prototype_epoch"]))
        if not self.prototypes_due(epoch, prototype_epoch):
            return state
        method_state = {
            "prototypes": self.compute_prototypes(state, epoch, host).astype(np.float32),
            "prototype_epoch": np.int32(epoch),
        }
        return state.replace(method_state=host.replicate(method_state))
