"""Adding a method is one module: a toy method defined here, and nowhere in the package, is
registered, configured, validated, trained, evaluated and checkpointed by the unchanged core."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from method_harness import digit_run_config, restore_final_state

from mlrpl_jax import losses, methods
from mlrpl_jax.config import (
    ConfigError,
    digit_scenes_config,
    paper_config,
    validate_config,
    with_method_sections,
)
from mlrpl_jax.core import train
from mlrpl_jax.methods.base import LossAux, Method
from mlrpl_jax.methods.thresholds.satl import SemanticAwareThresholdLearning
from mlrpl_jax.methods.thresholds.satl import check_options as check_satl_options
from mlrpl_jax.models.network import NetworkOutput


class ShiftedLogitsNetwork(nn.Module):
    """The shared network with one learnable logit offset per class, declared here."""

    base: nn.Module

    def setup(self):
        nn.share_scope(self, self.base)
        self.class_shift = self.param(
            "class_shift", nn.initializers.zeros, (self.base.num_classes,), jnp.float32
        )

    def __call__(self, images, train):
        output = self.base(images, train)
        return NetworkOutput(logits=output.logits + self.class_shift, features=output.features)


class ToyLogitShift(Method):
    """Partial BCE on shifted logits; the shift is frozen until `start_epoch`."""

    name = "toy_logit_shift"
    paper_batch_size = 16
    replaced_pseudo_label_weights = None  # SATL cannot replace anything of it
    schedule_options = {"start_epoch": "epochs"}

    @classmethod
    def default_config(cls):
        return ml_collections.ConfigDict({"start_epoch": 5, "shift_weight": 1.0})

    def check_options(self):
        if self.options.shift_weight < 0:
            raise ValueError(
                f"toy_logit_shift.shift_weight must be >= 0, got {self.options.shift_weight}"
            )

    def network(self, base):
        return ShiftedLogitsNetwork(base=base)

    def active_params(self, params, epoch):
        flags = jax.tree.map(lambda _: True, params)
        flags["class_shift"] = jnp.asarray(epoch) >= self.options.start_epoch
        return flags

    def loss(self, variables, method_state, batch, ctx):
        output, updates = self.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        bce = losses.partial_bce(output.logits, batch["labels"])
        shift_norm = jnp.mean(variables["params"]["class_shift"] ** 2)
        return bce + self.options.shift_weight * shift_norm, LossAux(
            batch_stats=updates["batch_stats"],
            method_state=method_state,
            metrics={"bce": bce, "shift_norm": shift_norm},
        )


def test_a_subclass_with_a_name_is_selectable_and_a_clash_is_refused():
    assert "toy_logit_shift" in methods.available_methods()
    assert methods.get_method_class("toy_logit_shift") is ToyLogitShift
    assert {"baseline", "sst", "hst", "sarb", "dsrb", "satl"} <= set(methods.available_methods())
    with pytest.raises(ValueError, match="method name 'sst' .* is already taken"):
        type("AnotherSST", (Method,), {"name": "sst", "loss": ToyLogitShift.loss})


def test_the_config_factories_use_what_the_method_declares():
    digits = digit_scenes_config("toy_logit_shift", shift_weight=0.5)
    validate_config(digits)
    assert digits.toy_logit_shift.to_dict() == {
        "start_epoch": 2,
        "shift_weight": 0.5,
    }  # 5 of 20 -> 2 of 8
    paper = paper_config("toy_logit_shift", "coco2014")
    validate_config(paper)
    assert paper.batch_size == 16 and paper.toy_logit_shift.start_epoch == 5
    digits.toy_logit_shift.shfit_weight = 1.0
    with pytest.raises(ConfigError, match="unknown config key 'toy_logit_shift.shfit_weight'"):
        validate_config(digits)


def test_the_option_hook_and_satl_refusal():
    config = digit_scenes_config("toy_logit_shift", shift_weight=-1.0)
    with pytest.raises(ValueError, match="shift_weight must be >= 0"):
        ToyLogitShift(config, None, np.zeros((10, 4), np.float32), np.zeros((10, 10), np.float32))
    satl = digit_scenes_config("satl", base_method="toy_logit_shift")
    validate_config(satl)
    assert satl.toy_logit_shift.start_epoch == 2
    with pytest.raises(
        ValueError, match="cannot replace the pseudo labels of base method 'toy_logit_shift'"
    ):
        SemanticAwareThresholdLearning(satl, None, None, None)
    satl.satl.replace_base_pseudo_labels = False
    check_satl_options(
        SemanticAwareThresholdLearning.method_options(satl),
        SemanticAwareThresholdLearning.threshold_rules,
    )


def test_the_core_trains_evaluates_and_checkpoints_it(digit_scenes_dir, tmp_path):
    config = with_method_sections(
        digit_run_config(
            "toy_logit_shift", digit_scenes_dir, epochs=2, start_epoch=1, shift_weight=0.1
        )
    )
    results = train.train_and_evaluate(config, str(tmp_path))
    assert results["last"]["epoch"] == 1 and 0.0 < results["last"]["mAP"] <= 100.0
    per_class = results["last"]["per_class_AP"]  # also in results.json
    assert len(per_class) == 10 and np.mean(per_class) == pytest.approx(results["last"]["mAP"])
    state = restore_final_state(config, str(tmp_path))
    shift = np.asarray(jax.device_get(state.variables()["params"]["class_shift"]))
    assert shift.shape == (10,) and np.all(np.isfinite(shift)) and np.any(shift != 0)
