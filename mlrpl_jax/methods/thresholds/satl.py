"""SATL — semantic-aware threshold learning, as a wrapper around a base method (docs/methods/satl.md §4).

This is **our design following the abstract of arXiv 2507.23263** (docs/methods/satl.md §0, §4), not the
paper's method: no method text or code of the paper is public. Per category it keeps decayed
histograms H+, H- (C, K) of the sigmoid scores of known positives and known negatives
(§4.2-4.3), derives category-specific thresholds τ+, τ- from them (§4.4), turns the scores of
unknown labels into hard pseudo labels (§4.5) and adds a distribution-anchored differential
ranking loss (§4.6):

    L = L_base + λ_r r(t) L_rank + [e >= E_w] λ_p BCE(z, ŷ)          (§4.7)

L_base is the whole loss of `config.satl.base_method` (any other registered method), which
runs unchanged; with `replace_base_pseudo_labels` the base's own pseudo-label terms (the
options it declares in `replaced_pseudo_label_weights`, e.g. SST's and HST's intra/inter BCE)
get weight 0, so SATL's thresholds take their place (§3.3). z are the logits of the base's
train-mode forward, captured with `flax.linen.intercept_methods`, so SATL adds no forward pass.
The histograms, thresholds and ranking loss are in
mlrpl_jax/methods/thresholds/histogram_thresholds.py. The experiments in benchmarks/ subclass
SATL through its hooks: `init_histograms` / `histogram_counts` (the histograms in the state),
`thresholds_from_state`, `threshold_scores` and `pseudo_label_bce`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlrpl_jax import losses
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods import get_method_class, registered_methods
from mlrpl_jax.methods.base import PARTIAL_LABELS, LossAux, Method, PyTree, StepContext
from mlrpl_jax.methods.thresholds import histogram_thresholds, premise_monitor

COUNT_KEYS = (
    "pseudo_positives",
    "true_pseudo_positives",
    "pseudo_negatives",
    "true_pseudo_negatives",
    "hidden_positives",
    "hidden_negatives",
)


class SemanticAwareThresholdLearning(Method):
    """SATL (docs/methods/satl.md §4) on top of the base method named in `config.satl.base_method`."""

    name = "satl"
    paper_batch_size = 32
    schedule_options = {"warmup_epochs": "epochs"}
    # Values of satl.threshold_rule that `thresholds` computes.
    threshold_rules: ClassVar[tuple[str, ...]] = histogram_thresholds.THRESHOLD_RULES

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        """Design defaults of docs/methods/satl.md §4.8 (symbols in comments)."""
        section = ml_collections.ConfigDict()
        section.base_method = "baseline"  # any registered method but satl
        section.replace_base_pseudo_labels = True  # zero the base's replaced_pseudo_label_weights
        section.num_bins = 100  # K
        section.memory_epochs = 1.0  # λ = exp(-1 / (memory_epochs S)), S = steps per epoch
        section.warmup_epochs = 5  # E_w: first epoch whose pseudo labels enter the loss
        section.threshold_rule = "precision"  # 'precision' | 'pos_only'
        section.min_precision = 0.9  # ρ+
        section.max_missed_positive_fraction = 0.05  # ε-
        section.min_count = 20.0  # n_min, an effective (decayed) count
        section.pseudo_weight = 1.0  # λ_p
        section.ranking_weight = 0.1  # λ_r
        section.ranking_margin = 0.5  # m, on probabilities
        section.ranking_smoothness = 10.0  # β of the smooth hinge
        section.premise_bins = 100  # bins of the premise monitor's histograms (diagnostics only)
        return section

    @classmethod
    def method_options(cls, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        """config.satl over `default_config()`; subclasses (the experiments in benchmarks/)
        keep the `satl` section, so SATL's config files and --set=satl.* apply to them."""
        options = cls.default_config()
        if SemanticAwareThresholdLearning.name in config:
            options.update(config[SemanticAwareThresholdLearning.name].to_dict())
        return options

    @classmethod
    def config_sections(
        cls, config: ml_collections.ConfigDict
    ) -> dict[str, ml_collections.ConfigDict]:
        """Sections a config of this method may hold: `satl` and the base method's own section."""
        base_name = cls.method_options(config).base_method
        sections = {SemanticAwareThresholdLearning.name: cls.default_config()}
        base_section = get_method_class(base_name).default_config()
        if base_section is not None:
            sections[base_name] = base_section
        return sections

    def check_options(self) -> None:
        check_options(self.options, self.threshold_rules)

    def build_model(self, word_embeddings: np.ndarray, adjacency: np.ndarray) -> nn.Module:
        """The base method's model; the base itself is built here from the same config."""
        self.base = get_method_class(self.options.base_method)(
            base_method_config(self.config, self.options), self.info, word_embeddings, adjacency
        )
        return self.base.model

    def init_variables(self, rng: jax.Array, image_shape: tuple[int, ...]) -> dict[str, PyTree]:
        return self.base.init_variables(rng, image_shape)

    def init_method_state(self) -> PyTree:
        """{'base': the base's state, 'satl': the histograms of `init_histograms`, per-class
        epoch counts (C,) and the premise monitor's epoch histograms (C, K_p)}."""
        num_classes = self.info.num_classes
        premise_shape = (num_classes, self.options.premise_bins)
        return {
            "base": self.base.init_method_state(),
            "satl": {
                **self.init_histograms(),
                "counts": {key: jnp.zeros(num_classes, jnp.float32) for key in COUNT_KEYS},
                "premise": {
                    group: jnp.zeros(premise_shape, jnp.float32) for group in premise_monitor.GROUPS
                },
            },
        }

    def check_training_labels(self) -> None:
        self.base.check_training_labels()

    def first_full_epoch(self) -> int:
        return max(self.options.warmup_epochs, self.base.first_full_epoch())

    def active_params(self, params: PyTree, epoch: jax.Array) -> PyTree | None:
        return self.base.active_params(params, epoch)

    def project_params(self, params: PyTree) -> PyTree:
        return self.base.project_params(params)

    def predict(
        self, variables: dict[str, PyTree], method_state: PyTree, images: jax.Array
    ) -> jax.Array:
        return self.base.predict(variables, method_state["base"], images)

    def init_histograms(self) -> dict[str, jax.Array]:
        """Zeros of the decayed score histograms in the state: H+, H- (C, K) (§4.2)."""
        shape = (self.info.num_classes, self.options.num_bins)
        return {
            "positive_histogram": jnp.zeros(shape, jnp.float32),
            "negative_histogram": jnp.zeros(shape, jnp.float32),
        }

    def histogram_counts(
        self, scores: jax.Array, labels: jax.Array, histogram_labels: jax.Array
    ) -> dict[str, jax.Array]:
        """This batch's counts (C, K) for each histogram of `init_histograms` (§4.3): the
        detached `scores` (B, C) of the entries `histogram_labels` (B, C) marks known positive
        and known negative. `labels` (B, C) are the batch's known labels, for the histograms a
        subclass adds."""
        del labels  # H± count `histogram_labels`
        positive, negative = histogram_thresholds.score_histograms(
            scores, histogram_labels, self.options.num_bins
        )
        return {"positive_histogram": positive, "negative_histogram": negative}

    def thresholds(self, positive: jax.Array, negative: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(τ+, τ-) float32 (C,) of the configured rule (§4.4) from H+, H- (C, K)."""
        opts = self.options
        return histogram_thresholds.category_thresholds(
            positive,
            negative,
            rule=opts.threshold_rule,
            min_precision=opts.min_precision,
            max_missed_positive_fraction=opts.max_missed_positive_fraction,
            min_count=opts.min_count,
        )

    def thresholds_from_state(self, stats: PyTree) -> tuple[jax.Array, jax.Array]:
        """(τ+, τ-) (C,) the step uses, from SATL's state `stats`: `thresholds` of H±."""
        return self.thresholds(stats["positive_histogram"], stats["negative_histogram"])

    def split_known_labels(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """(labels the losses train on, labels counted into H±), both (B, C) in {-1, 0, +1}: the
        batch's `labels` twice (§4.3). The experiments in benchmarks/satl_calibration_split.py
        and benchmarks/satl_oracle_calibration.py change them."""
        return batch["labels"], batch["labels"]

    def base_batch(
        self, batch: dict[str, jax.Array], trained_labels: jax.Array, base_state: PyTree
    ) -> dict[str, jax.Array]:
        """The batch the base's loss sees, as the step would build it for the base alone
        (core/train.py `training_batch`): its labels the base's `training_labels` of
        `trained_labels` (e.g. completed by the EMA teacher's pseudo labels), these kept under
        PARTIAL_LABELS."""
        labels = self.base.training_labels({**batch, "labels": trained_labels}, base_state)
        return {**batch, PARTIAL_LABELS: trained_labels, "labels": labels}

    def base_loss_and_logits(
        self,
        variables: dict[str, PyTree],
        base_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux, jax.Array]:
        """The base's loss and aux, and the logits (B, C) of its one train-mode forward."""
        outputs = []

        def capture(call, args, kwargs, context):
            output = call(*args, **kwargs)
            top_level = not isinstance(context.module.parent, nn.Module)
            if top_level and context.method_name == "__call__" and kwargs.get("train"):
                outputs.append(output)
            return output

        with nn.intercept_methods(capture):
            base_loss, base_aux = self.base.loss(variables, base_state, batch, ctx)
        if len(outputs) != 1:
            raise RuntimeError(
                f"satl needs exactly one train-mode forward in the loss of base method "
                f"'{self.base.name}', found {len(outputs)}"
            )
        return base_loss, base_aux, outputs[0].logits

    def loss(
        self,
        variables: dict[str, PyTree],
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> tuple[jax.Array, LossAux]:
        """§4.7: base loss + λ_r r(t) L_rank + [e >= E_w] λ_p BCE(z, ŷ); H± from the global batch."""
        opts = self.options
        labels = batch["labels"]  # (B, C) in {-1, 0, +1}
        trained_labels, histogram_labels = self.split_known_labels(batch)
        base_batch = self.base_batch(batch, trained_labels, method_state["base"])
        base_loss, base_aux, logits = self.base_loss_and_logits(
            variables, method_state["base"], base_batch, ctx
        )
        stats = method_state["satl"]
        scores = jax.nn.sigmoid(logits.astype(jnp.float32))  # (B, C), the student's
        # The scores that set the histograms, the thresholds and the pseudo labels.
        detached = self.threshold_scores(scores, method_state, batch, ctx)  # (B, C)

        # Thresholds and ranking anchors from the state before this step's update (§4.4).
        tau_pos, tau_neg = self.thresholds_from_state(stats)
        pseudo = histogram_thresholds.threshold_pseudo_labels(
            detached, labels, tau_pos, tau_neg
        )  # (B, C)
        pseudo_on = (ctx.epoch >= opts.warmup_epochs).astype(jnp.float32)
        pseudo_bce, pseudo_metrics = self.pseudo_label_bce(logits, pseudo, detached, stats)
        ranking = histogram_thresholds.distribution_ranking_loss(
            scores,
            trained_labels,
            stats["positive_histogram"],
            stats["negative_histogram"],
            margin=opts.ranking_margin,
            smoothness=opts.ranking_smoothness,
        )
        ramp = losses.warmup_factor(ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)
        total = (
            base_loss
            + opts.ranking_weight * ramp * ranking
            + pseudo_on * opts.pseudo_weight * pseudo_bce
        )

        decay = math.exp(-1.0 / (opts.memory_epochs * ctx.steps_per_epoch))
        counts = self.histogram_counts(detached, labels, histogram_labels)
        # The counts and premise histograms pass unchanged: `diagnostics` fills them.
        new_stats = {
            **stats,
            **{
                key: histogram_thresholds.decayed_update(stats[key], batch_counts, decay)
                for key, batch_counts in counts.items()
            },
        }
        metrics = {
            **base_aux.metrics,
            "satl/ranking": ranking,
            "satl/pseudo_bce": pseudo_bce,
            "satl/pseudo_on": pseudo_on,
            "satl/pseudo_positives": jnp.sum(pseudo == 1, dtype=jnp.float32),
            "satl/pseudo_negatives": jnp.sum(pseudo == -1, dtype=jnp.float32),
            "satl/classes_with_positive_threshold": jnp.sum(
                jnp.isfinite(tau_pos), dtype=jnp.float32
            ),
            "satl/mean_negative_threshold": jnp.mean(tau_neg),
            **pseudo_metrics,
        }
        diagnostic_inputs = {
            "base": base_aux.diagnostic_inputs,
            "base_labels": base_batch["labels"],
            "pseudo_labels": pseudo,
            "scores": detached,
        }
        return total, LossAux(
            batch_stats=base_aux.batch_stats,
            method_state={"base": base_aux.method_state, "satl": new_stats},
            metrics=metrics,
            diagnostic_inputs=diagnostic_inputs,
        )

    def threshold_scores(
        self,
        scores: jax.Array,
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> jax.Array:
        """Detached scores (B, C) of the batch for the histograms, thresholds and pseudo labels:
        the student's train-mode `scores` (§4.1)."""
        del method_state, batch, ctx  # a subclass may score the batch otherwise
        return jax.lax.stop_gradient(scores)

    def pseudo_label_bce(
        self, logits: jax.Array, pseudo: jax.Array, scores: jax.Array, stats: PyTree
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """BCE(z, ŷ) of the hard pseudo labels ŷ (B, C) (§4.7) and the metrics it adds (none);
        `scores` (B, C), the detached threshold scores, and `stats`, SATL's state, are for a
        subclass that weighs the pseudo labels."""
        del scores, stats
        return losses.partial_bce(logits, pseudo), {}

    def diagnostics(
        self,
        inputs: PyTree,
        method_state: PyTree,
        batch: dict[str, jax.Array],
        complete_labels: jax.Array,
        ctx: StepContext,
    ) -> tuple[dict[str, jax.Array], PyTree]:
        """The base's diagnostics, on the batch its loss saw, and this epoch's per-class counts
        of pseudo labels against the hidden labels (§4.10), which `on_epoch_end` logs as
        precision and recall, and the premise monitor's histograms of known and hidden scores
        (premise_monitor.py). `inputs` holds the pseudo labels and the (detached) scores
        (B, C) they were drawn from."""
        trained_labels, _ = self.split_known_labels(batch)
        scalars, base_state = self.base.diagnostics(
            inputs["base"],
            method_state["base"],
            {**batch, PARTIAL_LABELS: trained_labels, "labels": inputs["base_labels"]},
            complete_labels,
            ctx,
        )
        stats = method_state["satl"]
        batch_counts = histogram_thresholds.pseudo_label_counts(
            inputs["pseudo_labels"], batch["labels"], complete_labels
        )
        batch_premise = premise_monitor.premise_histograms(
            inputs["scores"],
            trained_labels,
            batch["labels"],
            complete_labels,
            self.options.premise_bins,
        )
        new_epoch = ctx.step_in_epoch == 0
        counts = {
            key: jnp.where(new_epoch, 0.0, stats["counts"][key]) + batch_counts[key]
            for key in COUNT_KEYS
        }
        premise = {
            group: jnp.where(new_epoch, 0.0, stats["premise"][group]) + batch_premise[group]
            for group in premise_monitor.GROUPS
        }
        return scalars, {
            "base": base_state,
            "satl": {**stats, "counts": counts, "premise": premise},
        }

    def on_epoch_start(self, state: Any, epoch: int, host: HostContext) -> Any:
        return self.with_base_hook(self.base.on_epoch_start, state, epoch, host)

    def on_epoch_end(self, state: Any, epoch: int, host: HostContext) -> Any:
        """Logs the epoch's thresholds, pseudo-label precision / recall (§4.10) and premise
        monitor, then runs the base hook."""
        stats = jax.device_get(state.method_state["satl"])
        tau_pos, tau_neg = jax.device_get(self.thresholds_from_state(stats))
        class_names = self.info.spec.class_names
        host.log(
            int(jax.device_get(state.step)),
            {
                **epoch_diagnostics(tau_pos, tau_neg, stats["counts"], class_names),
                **premise_monitor.epoch_premise_scalars(stats["premise"], class_names),
            },
        )
        return self.with_base_hook(self.base.on_epoch_end, state, epoch, host)

    @staticmethod
    def with_base_hook(hook, state: Any, epoch: int, host: HostContext) -> Any:
        """Runs a base host hook on a view of `state` whose method state is the base's own."""
        method_state = state.method_state
        base_view = hook(state.replace(method_state=method_state["base"]), epoch, host)
        return base_view.replace(method_state={**method_state, "base": base_view.method_state})


def check_options(options: ml_collections.ConfigDict, threshold_rules: tuple[str, ...]) -> None:
    """Raises ValueError on a base method or option value SATL (or a subclass computing
    `threshold_rules`) cannot use."""
    if options.base_method == SemanticAwareThresholdLearning.name:
        raise ValueError("satl.base_method cannot be 'satl'")
    base = get_method_class(options.base_method)
    if options.replace_base_pseudo_labels and base.replaced_pseudo_label_weights is None:
        replaceable = [
            name
            for name, method in registered_methods().items()
            if method.replaced_pseudo_label_weights is not None
            and name != SemanticAwareThresholdLearning.name
        ]
        raise ValueError(
            f"satl cannot replace the pseudo labels of base method '{options.base_method}' "
            f"(supported: {', '.join(sorted(replaceable))}); set "
            "satl.replace_base_pseudo_labels=False to add SATL on top of them"
        )
    if options.threshold_rule not in threshold_rules:
        raise ValueError(
            f"satl.threshold_rule must be one of {', '.join(threshold_rules)}, "
            f"got {options.threshold_rule!r}"
        )
    if options.num_bins < 2 or options.memory_epochs <= 0 or options.warmup_epochs < 0:
        raise ValueError(
            f"satl.num_bins must be >= 2, satl.memory_epochs > 0 and satl.warmup_epochs "
            f">= 0, got {options.num_bins}, {options.memory_epochs}, {options.warmup_epochs}"
        )
    if options.premise_bins < 2:
        raise ValueError(f"satl.premise_bins must be >= 2, got {options.premise_bins}")
    check_unit_interval(options, "min_precision")


def check_unit_interval(options: ml_collections.ConfigDict, key: str) -> None:
    """Raises ValueError unless satl.`key` lies in (0, 1]."""
    if not 0.0 < options[key] <= 1.0:
        raise ValueError(f"satl.{key} must be in (0, 1], got {options[key]}")


def base_method_config(
    config: ml_collections.ConfigDict, options: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """The config the base method is built from: method = base, its pseudo-label weights zeroed
    if SATL replaces them."""
    base_config = config.copy_and_resolve_references()
    with base_config.unlocked():
        base_config.method = options.base_method
        base = get_method_class(options.base_method)
        if options.replace_base_pseudo_labels and base.replaced_pseudo_label_weights:
            section = base.method_options(config)
            for key in base.replaced_pseudo_label_weights:
                section[key] = 0.0
            base_config[options.base_method] = section
    return base_config


def epoch_diagnostics(
    tau_pos: np.ndarray,
    tau_neg: np.ndarray,
    counts: dict[str, np.ndarray],
    class_names: tuple[str, ...],
) -> dict[str, float]:
    """Scalars of §4.10 from one epoch's per-class counts (C,) and the thresholds (C,) at its end.

    Per class: τ+ (left out while +inf, i.e. no positive pseudo labels), τ- and, where defined,
    the precision and recall of positive and negative pseudo labels; overall: the same ratios
    over all classes, the numbers of pseudo labels and of classes with a finite τ+.
    """
    scalars: dict[str, float] = {}
    ratios = {
        "positive_precision": ("true_pseudo_positives", "pseudo_positives"),
        "positive_recall": ("true_pseudo_positives", "hidden_positives"),
        "negative_precision": ("true_pseudo_negatives", "pseudo_negatives"),
        "negative_recall": ("true_pseudo_negatives", "hidden_negatives"),
    }
    for c, name in enumerate(class_names):
        if np.isfinite(tau_pos[c]):
            scalars[f"satl/threshold_pos/{name}"] = float(tau_pos[c])
        scalars[f"satl/threshold_neg/{name}"] = float(tau_neg[c])
        for ratio, (numerator, denominator) in ratios.items():
            if counts[denominator][c] > 0:
                scalars[f"satl/{ratio}/{name}"] = float(
                    counts[numerator][c] / counts[denominator][c]
                )
    for ratio, (numerator, denominator) in ratios.items():
        total = float(np.sum(counts[denominator]))
        if total > 0:
            scalars[f"satl/{ratio}"] = float(np.sum(counts[numerator])) / total
    scalars["satl/epoch_pseudo_positives"] = float(np.sum(counts["pseudo_positives"]))
    scalars["satl/epoch_pseudo_negatives"] = float(np.sum(counts["pseudo_negatives"]))
    scalars["satl/classes_with_positive_threshold"] = float(np.sum(np.isfinite(tau_pos)))
    return scalars
