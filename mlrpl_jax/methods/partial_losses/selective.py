"""Class-aware selective loss (Ben-Baruch et al. 2022; docs/methods/partial_losses.md §3)."""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.partial_losses import loss_functions
from mlrpl_jax.methods.partial_losses.asymmetric import (
    asymmetric_options,
    check_asymmetric_options,
)
from mlrpl_jax.methods.partial_losses.loss_method import PartialLabelLossMethod


class SelectiveLoss(PartialLabelLossMethod):
    """Asymmetric loss whose unknowns are ignored (frequent classes, likely positives) or negatives.

    The class prior is the positive rate among each class's known training labels.
    """

    name = "selective_loss"

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        options = asymmetric_options()
        options.update(prior_threshold=0.05, likelihood_topk=5)
        return options

    def check_options(self) -> None:
        check_asymmetric_options(self.name, self.options)
        if not 0.0 <= self.options.prior_threshold <= 1.0:
            raise ValueError(
                f"selective_loss.prior_threshold must be in [0, 1], "
                f"got {self.options.prior_threshold}"
            )
        if self.options.likelihood_topk < 0:
            raise ValueError(
                f"selective_loss.likelihood_topk must be >= 0, got {self.options.likelihood_topk}"
            )

    def check_training_labels(self) -> None:
        # ValueError naming any class without a known label (its prior is undefined)
        loss_functions.known_label_class_prior(self.info.train_partial_labels)

    @functools.cached_property
    def class_prior(self) -> np.ndarray:
        """π̂ (C,): positive rate among the known training labels of each class."""
        return loss_functions.known_label_class_prior(self.info.train_partial_labels)

    def partial_label_loss(
        self, logits: jax.Array, labels: jax.Array, ctx: StepContext
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        options = self.options
        return loss_functions.selective_asymmetric_loss(
            logits,
            labels,
            self.class_prior,
            gamma_pos=options.gamma_pos,
            gamma_neg=options.gamma_neg,
            clip=options.clip,
            prior_threshold=options.prior_threshold,
            likelihood_topk=options.likelihood_topk,
        ), {}
