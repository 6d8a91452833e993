"""SATL's threshold designs of issue 25 that were measured and not kept: class-prior matching,
asymmetric thresholds, precision-weighted pseudo labels and scores from the model EMA.

    python benchmarks/satl_threshold_designs.py --config=configs/satl_digits.py:cached \
        --workdir=workdirs/satl_prior --known_ratios=0.1 --seeds=0,1 \
        --set=satl.threshold_rule=prior \
        --report_scalars=satl/positive_precision,satl/premise_ks_positive_mean

An experiment, not a method: in the cached benchmark regime at p = 0.1 over 8 seeds none of
them differed from default SATL (docs/results/satl_experiments.md), so they left the package.
It trains `--config` (a SATL config) with SATL's options plus these, in its `satl` section
(docs/methods/satl.md, "Experiments outside the package"):

* `threshold_rule`: also `prior` (τ+ at the top ρ π̂_c of the unknown scores, ρ =
  `prior_fraction`, π̂_c the known labels' class prior) and `asymmetric` (τ+ the higher of
  `precision`'s and `prior`'s, τ- at the negative precision ρ- = `min_negative_precision`);
  both read H^u, the decayed histogram of the unknown entries' scores, which this class keeps;
* `pseudo_label_weighting = 'precision'`: each pseudo label's BCE weighted by the known-label
  precision of its set (logged as `satl/mean_pseudo_weight`);
* `score_source = 'ema_teacher'`: histograms, thresholds and pseudo labels from the model EMA's
  inference-mode scores of the batch (needs `ema.decay` > 0, e.g. `--set=ema.decay=0.99`).

With the defaults it is SATL. Every flag is `mlrpl_jax.sweep`'s (one --config).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from absl import app

from mlrpl_jax import losses, sweep
from mlrpl_jax.methods.base import PyTree, StepContext
from mlrpl_jax.methods.thresholds import histogram_thresholds
from mlrpl_jax.methods.thresholds.satl import SemanticAwareThresholdLearning, check_unit_interval

PRIOR_RULES = ("prior", "asymmetric")  # also read H^u, the histogram of the unknown entries' scores
PSEUDO_LABEL_WEIGHTINGS = ("hard", "precision")
# Whose scores fill H±, H^u and are cut into pseudo labels: the training student's (satl.md §4.1)
# or the model EMA's in inference mode on the same batch.
SCORE_SOURCES = ("student", "ema_teacher")
_TINY = 1e-12


class ThresholdDesignSATL(SemanticAwareThresholdLearning):
    """SATL with the designs' options in `config.satl` (module docstring)."""

    name = "satl_threshold_designs"
    threshold_rules: ClassVar[tuple[str, ...]] = histogram_thresholds.THRESHOLD_RULES + PRIOR_RULES

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        section = SemanticAwareThresholdLearning.default_config()
        section.threshold_rule = "precision"  # 'precision' | 'pos_only' | 'prior' | 'asymmetric'
        section.prior_fraction = 0.5  # ρ of 'prior' and 'asymmetric': top ρ π̂_c of unknowns
        section.min_negative_precision = 0.95  # ρ- of 'asymmetric'
        section.pseudo_label_weighting = "hard"  # 'hard' | 'precision' (estimated precision)
        section.score_source = "student"  # 'student' | 'ema_teacher' (needs config.ema.decay > 0)
        return section

    @classmethod
    def model_ema_in_loss(cls, config: ml_collections.ConfigDict) -> str:
        """With `score_source = 'ema_teacher'` the loss scores its batch with the model EMA."""
        if cls.method_options(config).score_source == "ema_teacher":
            return "satl.score_source='ema_teacher'"
        return ""

    def check_options(self) -> None:
        super().check_options()
        options = self.options
        if options.score_source not in SCORE_SOURCES:
            raise ValueError(
                f"satl.score_source must be one of {', '.join(SCORE_SOURCES)}, "
                f"got {options.score_source!r}"
            )
        if options.pseudo_label_weighting not in PSEUDO_LABEL_WEIGHTINGS:
            raise ValueError(
                f"satl.pseudo_label_weighting must be one of "
                f"{', '.join(PSEUDO_LABEL_WEIGHTINGS)}, "
                f"got {options.pseudo_label_weighting!r}"
            )
        for key in ("prior_fraction", "min_negative_precision"):
            check_unit_interval(options, key)

    def init_histograms(self) -> dict[str, jax.Array]:
        """SATL's H± and the unknown entries' H^u (C, K)."""
        histograms = super().init_histograms()
        return {
            **histograms,
            "unknown_histogram": jnp.zeros_like(histograms["positive_histogram"]),
        }

    def histogram_counts(
        self, scores: jax.Array, labels: jax.Array, histogram_labels: jax.Array
    ) -> dict[str, jax.Array]:
        """SATL's counts of H± and those of H^u: the scores (B, C) where `labels` is 0."""
        return {
            **super().histogram_counts(scores, labels, histogram_labels),
            "unknown_histogram": histogram_thresholds.score_histogram(
                scores, labels == 0, self.options.num_bins
            ),
        }

    def thresholds(
        self, positive: jax.Array, negative: jax.Array, unknown: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """(τ+, τ-) float32 (C,) of the configured rule; `unknown` (C, K), H^u, is needed by the
        `prior` and `asymmetric` rules."""
        opts = self.options
        return design_thresholds(
            positive,
            negative,
            rule=opts.threshold_rule,
            min_precision=opts.min_precision,
            max_missed_positive_fraction=opts.max_missed_positive_fraction,
            min_count=opts.min_count,
            unknown=unknown,
            prior_fraction=opts.prior_fraction,
            min_negative_precision=opts.min_negative_precision,
        )

    def thresholds_from_state(self, stats: PyTree) -> tuple[jax.Array, jax.Array]:
        return self.thresholds(
            stats["positive_histogram"], stats["negative_histogram"], stats["unknown_histogram"]
        )

    def threshold_scores(
        self,
        scores: jax.Array,
        method_state: PyTree,
        batch: dict[str, jax.Array],
        ctx: StepContext,
    ) -> jax.Array:
        """SATL's detached scores (B, C) of the student's `scores`, or with `score_source =
        'ema_teacher'` of the sigmoid of the model EMA's inference-mode logits (no BN update) on
        the same images."""
        if self.options.score_source == "ema_teacher":
            if ctx.ema_variables is None:
                raise ValueError(
                    "satl.score_source='ema_teacher' needs the model EMA in ctx.ema_variables, "
                    "which the train step passes (core/train.py loss_gradients_and_diagnostics)"
                )
            teacher_logits = self.predict(ctx.ema_variables, method_state, batch["image"])
            scores = jax.nn.sigmoid(teacher_logits.astype(jnp.float32))
        return super().threshold_scores(scores, method_state, batch, ctx)

    def pseudo_label_bce(
        self, logits: jax.Array, pseudo: jax.Array, scores: jax.Array, stats: PyTree
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """BCE(z, ŷ) with weights (B, C) 1 (`hard`) or the known-label precision of each pseudo
        label's set (`precision`), and `satl/mean_pseudo_weight`, their mean over the pseudo
        labels (0 without any)."""
        if self.options.pseudo_label_weighting == "precision":
            weights = pseudo_label_precision(
                scores,
                pseudo,
                stats["positive_histogram"],
                stats["negative_histogram"],
                min_count=self.options.min_count,
            )
            bce = weighted_pseudo_bce(logits, pseudo, weights)
        else:
            bce, _ = super().pseudo_label_bce(logits, pseudo, scores, stats)
            weights = (pseudo != 0).astype(jnp.float32)
        mean_weight = histogram_thresholds.masked_mean(weights, pseudo != 0)
        return bce, {"satl/mean_pseudo_weight": mean_weight}


def head_precision(positive: jax.Array, negative: jax.Array, min_count: float) -> jax.Array:
    """Precision (C, K) of "negative if s < e_{k+1}" on the known labels, counted as 1 where
    fewer than n_min known entries score below e_{k+1}, made non-increasing in k by a cumulative
    minimum."""
    pos_head, neg_head = jnp.cumsum(positive, axis=1), jnp.cumsum(negative, axis=1)  # (C, K)
    head = pos_head + neg_head
    precision = jnp.where(head >= min_count, neg_head / jnp.maximum(head, _TINY), 1.0)
    return jax.lax.cummin(precision, axis=1)


def prior_matching_thresholds(
    positive: jax.Array,
    negative: jax.Array,
    unknown: jax.Array,
    *,
    prior_fraction: float,
    min_count: float,
) -> jax.Array:
    """τ+_c (C,) of the `prior` rule: the lowest edge e_k whose tail of unknown scores
    T^u[c, k] holds at most ρ π̂_c n^u_c entries, with the class prior π̂_c = n+_c / (n+_c + n-_c)
    of the known labels (unbiased when labels are hidden uniformly at random) and ρ =
    `prior_fraction`.

    +inf where that tail is empty (the fraction falls inside the top occupied bin), or where
    fewer than n_min known or unknown entries were counted. Only counts of the known labels
    enter, never their scores.
    """
    num_known = jnp.sum(positive, axis=1) + jnp.sum(negative, axis=1)  # (C,)
    prior = jnp.sum(positive, axis=1) / jnp.maximum(num_known, _TINY)
    unknown_tail = histogram_thresholds.tail_counts(unknown)  # (C, K), non-increasing in k
    target = prior_fraction * prior * unknown_tail[:, 0]  # (C,)
    within = unknown_tail <= target[:, None]
    first = jnp.argmax(within, axis=1)  # (C,)
    selected = jnp.take_along_axis(unknown_tail, first[:, None], axis=1)[:, 0]
    valid = (
        jnp.any(within, axis=1)
        & (selected > 0)
        & (num_known >= min_count)
        & (unknown_tail[:, 0] >= min_count)
    )
    return jnp.where(valid, histogram_thresholds.bin_edges(positive.shape[1])[first], jnp.inf)


def negative_precision_thresholds(
    positive: jax.Array, negative: jax.Array, *, min_negative_precision: float, min_count: float
) -> jax.Array:
    """τ-_c (C,) of the `asymmetric` rule: the highest upper bin edge e_{k+1} below which the
    known entries are negatives with `head_precision` >= ρ- and number at least n_min; 0 if none."""
    num_bins = positive.shape[1]
    head = jnp.cumsum(positive + negative, axis=1)  # (C, K): known entries below e_{k+1}
    qualifies = (head_precision(positive, negative, min_count) >= min_negative_precision) & (
        head >= min_count
    )
    last = jnp.max(jnp.where(qualifies, jnp.arange(num_bins), -1), axis=1)  # (C,)
    upper_edges = (jnp.arange(num_bins, dtype=jnp.float32) + 1.0) / num_bins
    return jnp.where(last >= 0, upper_edges[jnp.maximum(last, 0)], 0.0)


def design_thresholds(
    positive: jax.Array,
    negative: jax.Array,
    *,
    rule: str,
    min_precision: float,
    max_missed_positive_fraction: float,
    min_count: float,
    unknown: jax.Array | None = None,
    prior_fraction: float | None = None,
    min_negative_precision: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(τ+, τ-) float32 (C,) of `rule`; τ- never exceeds τ+.

    * `precision`, `pos_only`: SATL's (histogram_thresholds.category_thresholds);
    * `prior`: τ+ = `prior_matching_thresholds` (needs `unknown` and `prior_fraction`), τ- as
      in `precision`;
    * `asymmetric`: τ+ = the higher of the `precision` and the `prior` τ+ (few, confident
      positives), τ- = `negative_precision_thresholds` (needs `min_negative_precision`).
    """
    if rule not in PRIOR_RULES:
        return histogram_thresholds.category_thresholds(
            positive,
            negative,
            rule=rule,
            min_precision=min_precision,
            max_missed_positive_fraction=max_missed_positive_fraction,
            min_count=min_count,
        )
    if unknown is None or prior_fraction is None:
        raise ValueError(
            f"threshold rule {rule!r} needs the histogram of the unknown entries' "
            "scores and prior_fraction"
        )
    positive = jnp.asarray(positive, jnp.float32)
    negative = jnp.asarray(negative, jnp.float32)
    prior_pos = prior_matching_thresholds(
        positive,
        negative,
        jnp.asarray(unknown, jnp.float32),
        prior_fraction=prior_fraction,
        min_count=min_count,
    )
    if rule == "prior":
        tau_pos = prior_pos
        tau_neg = histogram_thresholds.missed_positive_thresholds(
            positive, max_missed_positive_fraction=max_missed_positive_fraction, min_count=min_count
        )
    else:
        if min_negative_precision is None:
            raise ValueError("threshold rule 'asymmetric' needs min_negative_precision")
        precision_pos = histogram_thresholds.positive_precision_thresholds(
            positive, negative, min_precision=min_precision, min_count=min_count
        )
        tau_pos = jnp.maximum(precision_pos, prior_pos)
        tau_neg = negative_precision_thresholds(
            positive, negative, min_negative_precision=min_negative_precision, min_count=min_count
        )
    return tau_pos, jnp.minimum(tau_neg, tau_pos)


def pseudo_label_precision(
    scores: jax.Array,
    pseudo_labels: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    *,
    min_count: float,
) -> jax.Array:
    """Weights (B, C) of the `precision` pseudo-label weighting: the known-label precision of
    each pseudo label's set, `tail_precision` at its bin for a +1, `head_precision` for a -1,
    0 where there is no pseudo label."""
    positive = jnp.asarray(positive, jnp.float32)
    negative = jnp.asarray(negative, jnp.float32)
    bins = histogram_thresholds.score_bins(scores, positive.shape[1])  # (B, C)
    classes = jnp.arange(positive.shape[0])[None, :]  # (1, C)
    pos_weight = histogram_thresholds.tail_precision(positive, negative, min_count)[classes, bins]
    neg_weight = head_precision(positive, negative, min_count)[classes, bins]  # (B, C)
    return jnp.where(
        pseudo_labels == 1, pos_weight, jnp.where(pseudo_labels == -1, neg_weight, 0.0)
    )


def weighted_pseudo_bce(logits: jax.Array, pseudo: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ w BCE(z, ŷ) / |{ŷ != 0}| over the batch (B, C), in float32: a pseudo label of estimated
    precision w counts w times, so low-precision sets also weigh less in total."""
    elementwise = losses.partial_bce_elementwise(logits.astype(jnp.float32), pseudo)  # 0 at ŷ = 0
    count = jnp.sum(pseudo != 0, dtype=jnp.float32)
    return jnp.sum(weights * elementwise) / jnp.maximum(count, 1.0)


def with_design_options(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config`, a SATL config, switched to the class above, its `satl` section given the
    designs' options at their defaults (so that --set=satl.<option> finds them)."""
    config.method = ThresholdDesignSATL.name
    with config.satl.unlocked():
        for key, value in ThresholdDesignSATL.default_config().items():
            if key not in config.satl:
                config.satl[key] = value
    return config


def main(argv: list[str]) -> None:
    """`mlrpl_jax.sweep`'s main with the config's method switched to the class above."""
    config = sweep._CONFIG.value
    if config is None or config.method != SemanticAwareThresholdLearning.name:
        raise app.UsageError(
            "--config must be a satl config file, e.g. --config=configs/satl_digits.py"
        )
    with_design_options(config)
    sweep.main(argv)


if __name__ == "__main__":
    app.run(main)
