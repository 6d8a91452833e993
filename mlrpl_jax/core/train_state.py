"""The whole mutable training state as one PyTree, and the split of parameters it relies on.

Frozen parameters (the backbone up to its last stride-16 stage: ResNet stem..stage 3, docs/methods/
§4.1, §10.1; EfficientNet-Lite0 stem..stage 5, docs/backbones.md) live outside the optimiser:
they are never differentiated, have no Adam moments and are not decayed.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import optax
from flax import traverse_util

from mlrpl_jax.models.network import is_frozen_param

PyTree = Any


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of optimiser steps taken
    params: PyTree  # trainable parameters (the optimiser's domain)
    frozen_params: PyTree  # parameters that never change
    batch_stats: PyTree  # BN running statistics (frozen stages' entries never change)
    opt_state: optax.OptState
    method_state: PyTree  # banks, prototypes, threshold statistics, margins, ...
    rng: jax.Array  # base PRNG key (uint32 (2,)); step keys are fold_in(rng, step)
    # Model EMA {'params' (as params), 'batch_stats'} (core/model_ema.py); {} when not kept
    ema: PyTree = flax.struct.field(default_factory=dict)

    def variables(self, params: PyTree | None = None) -> dict[str, PyTree]:
        """Model variables with `params` (default: the current trainable ones) merged in."""
        trainable = self.params if params is None else params
        return {
            "params": merge_params(trainable, self.frozen_params),
            "batch_stats": self.batch_stats,
        }

    def ema_variables(self) -> dict[str, PyTree]:
        """Model variables of the EMA (docs/methods/ema.md §1); ValueError when none is kept."""
        if not self.ema:
            raise ValueError("this run keeps no model EMA; set config.ema.decay > 0")
        return {
            "params": merge_params(self.ema["params"], self.frozen_params),
            "batch_stats": self.ema["batch_stats"],
        }

    def evaluated_variables(self) -> dict[str, PyTree]:
        """What evaluation runs: the EMA's variables when the run keeps one, else `variables()`."""
        return self.ema_variables() if self.ema else self.variables()


def split_params(
    params: PyTree, freeze_early_stages: bool, backbone: str = "resnet"
) -> tuple[PyTree, PyTree]:
    """Splits a full params tree into (trainable, frozen) nested dicts (`backbone` = config.model.backbone)."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(params))
    frozen = {k: v for k, v in flat.items() if freeze_early_stages and is_frozen_param(k, backbone)}
    trainable = {k: v for k, v in flat.items() if k not in frozen}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge_params(trainable: PyTree, frozen: PyTree) -> PyTree:
    """Inverse of split_params."""
    flat = traverse_util.flatten_dict(trainable)
    flat.update(traverse_util.flatten_dict(frozen))
    return traverse_util.unflatten_dict(flat)
