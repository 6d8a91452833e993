"""The shared base of the partial-label loss methods: the shared network, one loss on its logits."""

from __future__ import annotations

import abc

import jax

from mlrpl_jax.methods.base import LossAux, Method, PyTree, StepContext


class PartialLabelLossMethod(Method):
    """A method whose whole training signal is `partial_label_loss(logits, labels, ctx)`.

    Subclasses set `name` and define the loss from the partial labels only (batch['labels']).
    """

    supports_logicmix = True  # no method state is kept from the batch

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
        value, metrics = self.partial_label_loss(output.logits, batch["labels"], ctx)
        return value, LossAux(
            batch_stats=updates["batch_stats"], method_state=method_state, metrics=metrics
        )

    @abc.abstractmethod
    def partial_label_loss(
        self, logits: jax.Array, labels: jax.Array, ctx: StepContext
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(scalar loss, scalars to log) from logits (B, C) and partial labels (B, C)."""
