"""Model EMA: an exponential moving average of the trained weights (docs/methods/ema.md §1).

After every applied optimiser step, for each trainable parameter and each BN running statistic

    ema <- ema + (1 - decay) (new - ema)        (= decay ema + (1 - decay) new)

starting from the initial weights. This incremental form leaves a value that did not change
(a frozen stage's BN statistic) bit-identical. The EMA lives in TrainState.ema, so it is
replicated, donated and checkpointed with the rest of the state; evaluation uses it when kept.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

PyTree = Any

# What results.json says was evaluated (TrainState.evaluated_variables).
EMA_WEIGHTS = "ema"
TRAINED_WEIGHTS = "trained"


def check_decay(decay: float) -> None:
    """ValueError unless 0 <= decay < 1 (0 = no EMA)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(
            f"ema.decay must be in [0, 1) (0 = no model EMA; the LogicMix recipe "
            f"uses 0.999), got {decay}"
        )


def initial_ema(params: PyTree, batch_stats: PyTree, decay: float) -> PyTree:
    """{} when `decay` is 0 (no EMA), else copies of the initial {'params', 'batch_stats'}."""
    check_decay(decay)
    if decay == 0.0:
        return {}
    return jax.tree.map(np.array, {"params": params, "batch_stats": batch_stats})


def updated_ema(ema: PyTree, params: PyTree, batch_stats: PyTree, decay: float) -> PyTree:
    """The EMA after one step that produced `params` and `batch_stats` ({} stays {})."""
    if not ema:
        return ema
    rate = 1.0 - decay

    def moved(old: jax.Array, new: jax.Array) -> jax.Array:
        return old + rate * (new - old)

    return {
        "params": jax.tree.map(moved, ema["params"], params),
        "batch_stats": jax.tree.map(moved, ema["batch_stats"], batch_stats),
    }


def evaluated_weights(config: ml_collections.ConfigDict) -> str:
    """'ema' when the run keeps a model EMA (and evaluates it), else 'trained'."""
    return EMA_WEIGHTS if config.ema.decay > 0.0 else TRAINED_WEIGHTS
