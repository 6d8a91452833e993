"""EMA-teacher curriculum pseudo labels on the partial-BCE baseline (docs/methods/ema.md §2).

The pseudo-labelling of 2WayAug-PL (Chong et al., LogicMix, Pattern Recognition 2026): from
epoch `warmup_epochs` on, at the start of every epoch the model EMA in inference mode scores
every training image (unaugmented); an unknown entry whose teacher logit is above
`positive_logit` becomes a positive pseudo label, one below `negative_logit` a negative one,
every other unknown entry stays unknown. The table is replaced at every refresh, never
accumulated. Known labels always win. The step completes each image's labels with its pseudo
labels (`training_labels`) before LogicMix mixes them, as the published recipe does; the loss is
the baseline's partial BCE over the batch's known and pseudo-labelled entries.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods.base import PARTIAL_LABELS, PyTree, StepContext
from mlrpl_jax.methods.baseline import PartialBCEBaseline


def teacher_pseudo_labels(
    logits: np.ndarray, negative_logit: float, positive_logit: float
) -> np.ndarray:
    """int8 (B, C): +1 where logit > positive_logit, -1 where logit < negative_logit, else 0."""
    return np.where(logits > positive_logit, 1, np.where(logits < negative_logit, -1, 0)).astype(
        np.int8
    )


def with_pseudo_labels(labels: jax.Array, pseudo_labels: jax.Array, index: jax.Array) -> jax.Array:
    """Partial labels (B, C) with their unknown (0) entries filled from the rows `index` (B,) of
    the per-image table `pseudo_labels` (N, C) in {-1, 0, +1}; known entries are kept."""
    rows = pseudo_labels[index].astype(labels.dtype)  # (B, C)
    return jnp.where(labels != 0, labels, rows)


class EMATeacherPseudoLabels(PartialBCEBaseline):
    name = "ema_teacher"
    # The LogicMix recipe's model EMA (its config.py: ema = 0.999), the teacher of the pseudo labels.
    model_ema_decay = 0.999
    replaced_pseudo_label_weights = None  # the thresholds are the method: SATL cannot replace them
    schedule_options = {"warmup_epochs": "epochs"}
    # Pseudo labels join each image's labels before the mix (`training_labels`), so a mixed row
    # ORs its images' completed labels (docs/methods/logicmix.md §4).
    supports_logicmix = True

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(
            {
                # First epoch trained on pseudo labels. Published: 20 of 60 epochs; here the same
                # third of the papers' 20 epochs (docs/methods/ema.md §2).
                "warmup_epochs": 7,
                # Teacher-logit thresholds (published: (-4, 4), sigmoid 0.018 and 0.982).
                "negative_logit": -4.0,
                "positive_logit": 4.0,
            }
        )

    def check_options(self) -> None:
        options = self.options
        if self.config.ema.decay <= 0.0:
            raise ValueError(
                "ema_teacher scores the training images with the model EMA: set "
                "config.ema.decay > 0 (the published recipe: 0.999)"
            )
        if options.warmup_epochs < 0:
            raise ValueError(f"ema_teacher.warmup_epochs must be >= 0, got {options.warmup_epochs}")
        if not options.negative_logit <= 0.0 <= options.positive_logit:
            raise ValueError(
                "ema_teacher needs negative_logit <= 0 <= positive_logit (a pseudo label's sign "
                f"is its teacher logit's), got {options.negative_logit}, {options.positive_logit}"
            )

    def first_full_epoch(self) -> int:
        return self.options.warmup_epochs

    def init_method_state(self) -> PyTree:
        # Per-image pseudo labels by 'index' (N, C) in {-1, 0, +1}; none before the warm-up ends.
        return {"pseudo_labels": np.zeros((self.info.num_train, self.info.num_classes), np.int8)}

    def training_labels(self, batch: dict[str, jax.Array], method_state: PyTree) -> jax.Array:
        """The partial labels with their unknown entries filled from the pseudo-label table by
        the row's 'index' (the inherited loss trains on them)."""
        return with_pseudo_labels(batch["labels"], method_state["pseudo_labels"], batch["index"])

    def diagnostics(
        self,
        inputs: PyTree,
        method_state: PyTree,
        batch: dict[str, jax.Array],
        complete_labels: jax.Array,
        ctx: StepContext,
    ) -> tuple[dict[str, jax.Array], PyTree]:
        """Counts over the batch's unknown entries (docs/methods/ema.md §2.3): pseudo labels
        of each sign, how many of them the hidden labels confirm, and the hidden positives and
        negatives among the unknowns (precision = confirmed / pseudo labels, recall = confirmed
        / hidden of that sign, over any window). On a LogicMix row all three label sets are the
        OR over its images: a pseudo label is an entry its partial labels leave unknown and its
        training labels do not."""
        del inputs, ctx
        unknown = batch[PARTIAL_LABELS] == 0  # (B, C)
        pseudo = batch["labels"]  # (B, C): the partial labels completed by the pseudo labels
        hidden_positive, hidden_negative = complete_labels > 0, complete_labels < 0
        positive, negative = unknown & (pseudo > 0), unknown & (pseudo < 0)

        def count(mask: jax.Array) -> jax.Array:
            return jnp.sum(mask, dtype=jnp.float32)

        return {
            "pseudo_positives": count(positive),
            "pseudo_positives_true": count(positive & hidden_positive),
            "pseudo_negatives": count(negative),
            "pseudo_negatives_true": count(negative & hidden_negative),
            "unknown_hidden_positives": count(unknown & hidden_positive),
            "unknown_hidden_negatives": count(unknown & hidden_negative),
        }, method_state

    def on_epoch_start(self, state: Any, epoch: int, host: HostContext) -> Any:
        """From the warm-up's end on, replaces the pseudo labels by the teacher's current ones."""
        if epoch < self.options.warmup_epochs:
            return state
        pseudo = np.zeros((self.info.num_train, self.info.num_classes), np.int8)  # (N, C)
        for outputs, index in host.training_set_pass(state, self.teacher_logits):
            real = index >= 0
            pseudo[index[real]] = teacher_pseudo_labels(
                outputs["logits"][real], self.options.negative_logit, self.options.positive_logit
            )
        pseudo[self.info.train_partial_labels != 0] = 0  # known labels win
        host.log(
            int(jax.device_get(state.step)),
            {
                "teacher/pseudo_positives": float(np.sum(pseudo > 0)),
                "teacher/pseudo_negatives": float(np.sum(pseudo < 0)),
                "teacher/unknown_entries": float(np.sum(self.info.train_partial_labels == 0)),
            },
        )
        return state.replace(
            method_state={**state.method_state, "pseudo_labels": host.replicate(pseudo)}
        )

    def teacher_logits(self, state: Any, images: jax.Array) -> dict[str, jax.Array]:
        """Inference-mode logits (B, C) of the model EMA."""
        return {"logits": self.predict(state.ema_variables(), state.method_state, images)}
