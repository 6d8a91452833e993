"""SATL with a calibration split: a share of the known labels held out of every loss, for H± only.

    python benchmarks/satl_calibration_split.py --config=configs/satl_digits.py \
        --workdir=workdirs/satl_calibration_split --known_ratios=0.1,0.3 --seeds=0,1,2 \
        --calibration_fraction=0.3 --set=data.data_dir=data/tfds --set=satl.memory_epochs=3.0 \
        --report_scalars=satl/positive_precision,satl/classes_with_positive_threshold

An experiment, not a method: on the digit scenes it made the pseudo labels precise and cost
3–6 mAP (docs/results/digit_methods.md, "Fix tried: a calibration split";
docs/results/satl_experiments.md). It trains `--config` (a SATL config) with
`satl.calibration_fraction` = f: entry (i, c) is held out when it is known and u(i, c) < f,
u drawn from the run seed and the image's dataset index, so the held-out set is fixed for the
run and the same for any device layout. Held-out entries are unknown (0) to every loss and the
only entries counted into H±. Every other flag is `mlrpl_jax.sweep`'s (one --config).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags

from mlrpl_jax import sweep
from mlrpl_jax.methods.thresholds.satl import SemanticAwareThresholdLearning


class CalibrationSplitSATL(SemanticAwareThresholdLearning):
    """SATL whose H± count only a held-out share of the known labels, which no loss sees."""

    name = "satl_calibration_split"

    @classmethod
    def default_config(cls) -> ml_collections.ConfigDict:
        """SATL's options and f = `calibration_fraction` (0: H± from all known labels, §4.3)."""
        section = SemanticAwareThresholdLearning.default_config()
        section.calibration_fraction = 0.0
        return section

    def check_options(self) -> None:
        super().check_options()
        if not 0.0 <= self.options.calibration_fraction < 1.0:
            raise ValueError(
                "satl.calibration_fraction must be in [0, 1), got "
                f"{self.options.calibration_fraction}"
            )

    def split_known_labels(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """(labels the losses train on, labels counted into H±): the held-out entries
        (`calibration_entries`) are 0 in the first and the only non-zero entries of the second."""
        labels = batch["labels"]  # (B, C)
        fraction = self.options.calibration_fraction
        if not fraction:
            return labels, labels
        calibration = calibration_entries(labels, batch["index"], fraction, self.config.seed)
        return jnp.where(calibration, 0.0, labels), jnp.where(calibration, labels, 0.0)


def calibration_entries(
    labels: jax.Array, index: jax.Array, fraction: float, seed: int
) -> jax.Array:
    """(B, C) bool: the known entries held out for calibration, a `fraction` of them.

    Each (image, class) entry draws u ~ U[0, 1) from the run seed and the image's dataset index,
    so the held-out set is fixed for the whole run and independent of batch order and layout;
    an entry is held out when it is known and u < fraction.
    """
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5A71)
    draws = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (labels.shape[1],)))(
        index
    )  # (B, C)
    return (labels != 0) & (draws < fraction)


def main(argv: list[str]) -> None:
    """`mlrpl_jax.sweep`'s main with the config's method switched to the class above."""
    config = sweep._CONFIG.value
    if config is None or config.method != SemanticAwareThresholdLearning.name:
        raise app.UsageError(
            "--config must be a satl config file, e.g. --config=configs/satl_digits.py"
        )
    config.method = CalibrationSplitSATL.name
    with config.satl.unlocked():
        config.satl.calibration_fraction = flags.FLAGS.calibration_fraction
    sweep.main(argv)


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_float(
        "calibration_fraction", 0.3, "Share f of the known labels held out for H±, in (0, 1)."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
