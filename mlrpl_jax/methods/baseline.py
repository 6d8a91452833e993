"""SSGRL-style baseline: the shared network trained with partial BCE on known labels only.

L = BCE(z, t) over the known entries of the batch (docs/methods/losses.md §5.1). It is the reference
point of every table in the papers and the simplest method plug-in.
"""

from __future__ import annotations

import jax

from mlrpl_jax import losses
from mlrpl_jax.methods.base import LossAux, Method, PyTree, StepContext


class PartialBCEBaseline(Method):
    name = "baseline"
    supports_logicmix = True

    def loss(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux]:
        output, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        bce = losses.partial_bce(output.logits, batch["labels"])
        return bce, LossAux(
            batch_stats=updates["batch_stats"], method_state=method_state, metrics={"bce": bce}
        )
