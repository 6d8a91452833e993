"""Assume-negative and weak assume-negative BCE (Cole et al. 2021;
docs/methods/partial_losses.md §1)."""

from __future__ import annotations

import jax
import ml_collections

from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.partial_losses import loss_functions
from mlrpl_jax.methods.partial_losses.loss_method import PartialLabelLossMethod


class AssumeNegative(PartialLabelLossMethod):
    """BCE over every entry, the unknown ones counted as negatives."""

    name = "assume_negative"

    def partial_label_loss(
        self, logits: jax.Array, labels: jax.Array, ctx: StepContext
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return loss_functions.assume_negative_bce(logits, labels), {}


# unknown_weight of weak_assume_negative that stands for Cole et al.'s 1 / (C - 1)
COLE_UNKNOWN_WEIGHT = -1.0


class WeakAssumeNegative(PartialLabelLossMethod):
    """Assume-negative BCE whose unknown negatives weigh `unknown_weight` (γ) each."""

    name = "weak_assume_negative"

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        # γ in [0, 1], or -1 for Cole et al.'s 1 / (C - 1)
        return ml_collections.ConfigDict({"unknown_weight": COLE_UNKNOWN_WEIGHT})

    def check_options(self) -> None:
        weight = self.options.unknown_weight
        if weight != COLE_UNKNOWN_WEIGHT and not 0.0 <= weight <= 1.0:
            raise ValueError(
                f"weak_assume_negative.unknown_weight must be in [0, 1], or -1 for "
                f"1/(C - 1) (Cole et al.), got {weight}"
            )

    def unknown_weight(self) -> float:
        """γ: the option, or 1 / (C - 1) for -1."""
        if self.options.unknown_weight == COLE_UNKNOWN_WEIGHT:
            return 1.0 / (self.info.num_classes - 1)
        return float(self.options.unknown_weight)

    def partial_label_loss(
        self, logits: jax.Array, labels: jax.Array, ctx: StepContext
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return loss_functions.weak_assume_negative_bce(
            logits, labels, unknown_weight=self.unknown_weight()
        ), {}
