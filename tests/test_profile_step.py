"""benchmarks/profile_step.py: HLO parsing, op categories and the traced per-op seconds."""

import jax
import jax.numpy as jnp
import profile_step


def small_network(x, kernel, weight):
    """A 3x3 convolution, ReLU, a transpose and a matrix product: one op of each category."""
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = jax.nn.relu(y).reshape(-1, y.shape[-1])  # (N H W, O)
    return jnp.transpose(y) @ weight  # (O, O)


def compiled_small_network():
    args = (jnp.ones((2, 16, 16, 8)), jnp.ones((3, 3, 8, 32)), jnp.ones((512, 32)))
    return jax.jit(small_network).lower(*args).compile(), args


def test_every_op_of_the_module_gets_a_category():
    compiled, _ = compiled_small_network()
    instructions = profile_step.parse_hlo(compiled.as_text())
    categories = {info["category"] for info in instructions.values()}
    assert "convolution" in categories and "matrix product" in categories
    assert all(info["opcode"] and info["shape"] for info in instructions.values())


def test_traced_seconds_name_the_module_ops():
    compiled, args = compiled_small_network()
    instructions = profile_step.parse_hlo(compiled.as_text())
    seconds, wall = profile_step.traced_op_seconds(lambda: compiled(*args), steps=3)
    traced = {name: s for name, s in seconds.items() if name in instructions}
    assert traced, f"no traced event names an HLO op; events: {sorted(seconds)[:20]}"
    assert {instructions[name]["category"] for name in traced} >= {"convolution"}
    assert 0 < sum(traced.values()) and wall > 0
