"""Large-loss rejection and temporary correction, LL-R and LL-Ct (Kim et al. 2022;
docs/methods/partial_losses.md §4)."""

from __future__ import annotations

from typing import ClassVar

import jax
import ml_collections

from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.partial_losses import loss_functions
from mlrpl_jax.methods.partial_losses.loss_method import PartialLabelLossMethod


class LargeLossRejection(PartialLabelLossMethod):
    """Assume-negative BCE without the unknowns of largest loss, a share growing each epoch."""

    name = "ll_r"
    correct: ClassVar[bool] = False
    # Δ_rel = 0 leaves plain assume-negative BCE: SATL's thresholds can replace the modification.
    replaced_pseudo_label_weights = ("delta_rel",)
    schedule_options = {"delta_rel": "per_epoch"}

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        # Δ_rel: percent of the batch's unknown entries added to the modified share per epoch
        return ml_collections.ConfigDict({"delta_rel": 0.1})

    def check_options(self) -> None:
        if not 0.0 <= self.options.delta_rel <= 100.0:
            raise ValueError(
                f"{self.name}.delta_rel (percent per epoch) must be in [0, 100], "
                f"got {self.options.delta_rel}"
            )

    def first_full_epoch(self) -> int:
        return 1  # no entry is modified in epoch 0

    def partial_label_loss(
        self, logits: jax.Array, labels: jax.Array, ctx: StepContext
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        rate = loss_functions.large_loss_rejection_rate(ctx.epoch, self.options.delta_rel)
        loss = loss_functions.large_loss_modified(logits, labels, rate, correct=self.correct)
        return loss, {"modified_share": rate}


class LargeLossCorrection(LargeLossRejection):
    """As LL-R, but the unknowns of largest loss count as positives for the step."""

    name = "ll_ct"
    correct = True
