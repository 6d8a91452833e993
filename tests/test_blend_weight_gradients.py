"""benchmarks/blend_weight_gradients.py: the path split of α's gradient, clamp steps, Adam's move."""

import blend_weight_gradients
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlrpl_jax import losses
from mlrpl_jax.config import base_config
from mlrpl_jax.methods.blending import blend

# Four images, three classes, D = 2: row 0's class 1 is unknown and its partner row 3 has it
# positive; row 2's class 0 is unknown and row 1 has it positive.
TARGETS = jnp.array([[1, 0, -1], [1, -1, 0], [0, 1, 0], [-1, 1, 1]], jnp.float32)
SEMANTIC = jax.random.normal(jax.random.key(0), (4, 3, 2))
HEAD = jax.random.normal(jax.random.key(1), (2,))


def instance_loss(alpha_features, alpha_targets):
    blended, blended_targets = blend_weight_gradients.split_instance_blend(
        SEMANTIC, TARGETS, alpha_features, alpha_targets
    )
    return losses.partial_bce(blended @ HEAD, blended_targets)


def test_split_blend_equals_the_package_blend_and_its_paths_sum_to_the_gradient():
    blended, blended_targets = blend_weight_gradients.split_instance_blend(
        SEMANTIC, TARGETS, 0.3, 0.3
    )
    expected = blend.instance_blend(SEMANTIC, TARGETS, 0.3)
    np.testing.assert_allclose(blended, expected[0], rtol=1e-6)
    np.testing.assert_allclose(blended_targets, expected[1], rtol=1e-6)

    def joint(alpha):
        return instance_loss(alpha, alpha)

    features, targets = jax.grad(instance_loss, argnums=(0, 1))(0.3, 0.3)
    assert float(features + targets) == pytest.approx(float(jax.grad(joint)(0.3)), rel=1e-5)
    # The target path per blended entry is its logit (d BCE/dy = -z, dy/dα = -1), over the
    # count of selected entries.
    blended_logits = (blended @ HEAD)[jnp.array([0, 2]), jnp.array([1, 0])]
    count = int(jnp.sum(blended_targets != 0))
    assert float(targets) == pytest.approx(float(jnp.sum(blended_logits)) / count, rel=1e-5)


def test_blended_logit_mean_counts_only_the_blended_entries():
    logits = jnp.array([[1.0, 3.0], [-2.0, 5.0]])
    mask = jnp.array([[True, False], [True, False]])
    mean, count = blend_weight_gradients.blended_logit_mean(logits, mask)
    assert float(mean) == pytest.approx(-0.5) and int(count) == 2


def test_clamp_steps_reads_first_move_and_first_clamp():
    records = [
        {"step": 26, "train/alpha": 0.5},
        {"step": 52, "train/alpha": 0.6, "train/bce": 1.0},
        {"step": 60, "eval/map": 0.3},
        {"step": 78, "train/alpha": 1.0},
    ]
    assert blend_weight_gradients.clamp_steps(records, "train/alpha", 0.5) == {
        "first_logged_step_moved": 52,
        "first_logged_step_at_clamp": 78,
        "last": 1.0,
    }
    assert (
        blend_weight_gradients.clamp_steps(records[:2], "train/alpha", 0.5)[
            "first_logged_step_at_clamp"
        ]
        is None
    )


def test_adam_steps_in_lr():
    assert blend_weight_gradients.adam_steps_in_lr(np.array([-2.0, -2.0])) == pytest.approx(-1.0)
    assert blend_weight_gradients.adam_steps_in_lr(np.array([1.0, -1.0])) == 0.0
    assert blend_weight_gradients.adam_steps_in_lr(np.zeros(3)) == 0.0


def test_only_blending_runs_are_read():
    config = base_config()
    for method in ("sarb", "dsrb"):
        config.method = method
        blend_weight_gradients.blending_run(config)
    config.method = "baseline"
    with pytest.raises(ValueError, match="reads SARB and DSRB runs"):
        blend_weight_gradients.blending_run(config)
