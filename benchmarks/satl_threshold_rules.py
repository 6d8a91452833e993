"""SATL with the alternative threshold rules of docs/methods/satl.md §4.4, `bayes` and `gauss`.

    python benchmarks/satl_threshold_rules.py --config=configs/satl_digits.py \
        --workdir=workdirs/satl_bayes --known_ratios=0.1,0.3 --seeds=0,1,2 \
        --threshold_rule=bayes --set=data.data_dir=data/tfds \
        --report_scalars=satl/positive_precision,satl/negative_precision

An ablation, not a method: neither rule has been measured. It trains `--config` (a SATL
config) with τ± from one of them instead of SATL's `precision` rule:

* `bayes`: τ+ = τ- = the cut e_k that minimises the known-label errors L+ + T-;
* `gauss`: τ+ = max(μ- + κσ-, cut), τ- = min(μ+ - κσ+, cut), μ±, σ± the moments of H± at the bin
  centres, κ = `--gauss_kappa`;

both without pseudo labels for a class with fewer than n_min known positives or negatives.
Every other flag is `mlrpl_jax.sweep`'s (one --config).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from mlrpl_jax import sweep
from mlrpl_jax.methods.thresholds import histogram_thresholds
from mlrpl_jax.methods.thresholds.satl import SemanticAwareThresholdLearning

RULES = ("bayes", "gauss")


class AlternativeRuleSATL(SemanticAwareThresholdLearning):
    """SATL whose τ± come from `bayes` or `gauss` (satl.threshold_rule, satl.gauss_kappa)."""

    name = "satl_alternative_threshold_rule"
    threshold_rules = RULES

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        section = SemanticAwareThresholdLearning.default_config()
        section.threshold_rule = "bayes"  # 'bayes' | 'gauss'
        section.gauss_kappa = 2.0  # κ of the 'gauss' rule
        return section

    def thresholds(self, positive: jax.Array, negative: jax.Array) -> tuple[jax.Array, jax.Array]:
        positive = jnp.asarray(positive, jnp.float32)
        negative = jnp.asarray(negative, jnp.float32)
        if self.options.threshold_rule == "bayes":
            return bayes_thresholds(positive, negative, min_count=self.options.min_count)
        return gauss_thresholds(
            positive, negative, kappa=self.options.gauss_kappa, min_count=self.options.min_count
        )


def bayes_cut(positive: jax.Array, negative: jax.Array) -> jax.Array:
    """τ_c = e_k with k = argmin_k (L+[c, k] + T-[c, k]), the known-label error-minimising cut, (C,)."""
    errors = histogram_thresholds.counts_below(positive) + histogram_thresholds.tail_counts(
        negative
    )  # (C, K)
    return histogram_thresholds.bin_edges(positive.shape[1])[jnp.argmin(errors, axis=1)]


def enough_known_labels(positive: jax.Array, negative: jax.Array, min_count: float) -> jax.Array:
    """(C,) bool: n+ and n- both reach n_min."""
    return (jnp.sum(positive, axis=1) >= min_count) & (jnp.sum(negative, axis=1) >= min_count)


def bayes_thresholds(
    positive: jax.Array, negative: jax.Array, *, min_count: float
) -> tuple[jax.Array, jax.Array]:
    """`bayes`: τ+ = τ- = the Bayes cut; no pseudo labels unless n+, n- >= n_min."""
    cut = bayes_cut(positive, negative)
    enough = enough_known_labels(positive, negative, min_count)
    return jnp.where(enough, cut, jnp.inf), jnp.where(enough, cut, 0.0)


def histogram_moments(histogram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and standard deviation (C,) of the scores, each taken at its bin centre."""
    centres = histogram_thresholds.bin_centres(histogram.shape[1])
    count = jnp.maximum(jnp.sum(histogram, axis=1), 1e-12)
    mean = jnp.sum(histogram * centres, axis=1) / count
    variance = jnp.sum(histogram * jnp.square(centres - mean[:, None]), axis=1) / count
    return mean, jnp.sqrt(variance)


def gauss_thresholds(
    positive: jax.Array, negative: jax.Array, *, kappa: float, min_count: float
) -> tuple[jax.Array, jax.Array]:
    """`gauss`: τ+ = max(μ- + κσ-, cut), τ- = min(μ+ - κσ+, cut), guarded as `bayes`."""
    cut = bayes_cut(positive, negative)
    mean_pos, std_pos = histogram_moments(positive)
    mean_neg, std_neg = histogram_moments(negative)
    enough = enough_known_labels(positive, negative, min_count)
    tau_pos = jnp.maximum(mean_neg + kappa * std_neg, cut)
    tau_neg = jnp.minimum(mean_pos - kappa * std_pos, cut)
    return jnp.where(enough, tau_pos, jnp.inf), jnp.where(enough, tau_neg, 0.0)


def main(argv: list[str]) -> None:
    """`mlrpl_jax.sweep`'s main with the config's method switched to the class above."""
    config = sweep._CONFIG.value
    if config is None or config.method != SemanticAwareThresholdLearning.name:
        raise app.UsageError(
            "--config must be a satl config file, e.g. --config=configs/satl_digits.py"
        )
    config.method = AlternativeRuleSATL.name
    with config.satl.unlocked():
        config.satl.threshold_rule = flags.FLAGS.threshold_rule
        config.satl.gauss_kappa = flags.FLAGS.gauss_kappa
    sweep.main(argv)


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_enum("threshold_rule", "bayes", list(RULES), "The rule that sets τ±.")
    flags.DEFINE_float("gauss_kappa", 2.0, "κ of the gauss rule.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
