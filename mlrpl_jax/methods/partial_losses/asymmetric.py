"""Partial asymmetric loss and its assume-negative form (Ridnik et al. 2021;
docs/methods/partial_losses.md §2)."""

from __future__ import annotations

from typing import ClassVar

import jax
import ml_collections

from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.partial_losses import loss_functions
from mlrpl_jax.methods.partial_losses.loss_method import PartialLabelLossMethod


def asymmetric_options() -> ml_collections.ConfigDict:
    """ASL's focusing parameters and probability margin, at the ASL paper's multi-label values."""
    return ml_collections.ConfigDict({"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05})


def check_asymmetric_options(name: str, options: ml_collections.ConfigDict) -> None:
    for key in ("gamma_pos", "gamma_neg"):
        if options[key] < 0:
            raise ValueError(f"{name}.{key} must be >= 0, got {options[key]}")
    if not 0.0 <= options.clip < 1.0:
        raise ValueError(
            f"{name}.clip (the probability margin m) must be in [0, 1), got {options.clip}"
        )


class PartialAsymmetricLoss(PartialLabelLossMethod):
    """ASL on the known labels only; the unknown ones take no part."""

    name = "partial_asl"
    assume_negative: ClassVar[bool] = False

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        return asymmetric_options()

    def check_options(self) -> None:
        check_asymmetric_options(self.name, self.options)

    def partial_label_loss(
        self, logits: jax.Array, labels: jax.Array, ctx: StepContext
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return loss_functions.partial_asymmetric_loss(
            logits,
            labels,
            gamma_pos=self.options.gamma_pos,
            gamma_neg=self.options.gamma_neg,
            clip=self.options.clip,
            assume_negative=self.assume_negative,
        ), {}


class AssumeNegativeAsymmetricLoss(PartialAsymmetricLoss):
    """ASL over every entry, the unknown ones counted as negatives."""

    name = "assume_negative_asl"
    assume_negative = True
