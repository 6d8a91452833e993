"""Does training many seeds in one program (vmap over a seed axis) raise throughput on this machine?

    python benchmarks/seed_vmap_step.py --seeds=8 --batch=32

Times the cached regime's trainable part (the shared head on EfficientNet-Lite0's 2x2x1280 maps,
docs/methods/network.md §4.2-4.5) with Adam: one seed's jitted step, and the same step vmapped
over `--seeds` parameter sets and batches. If the vmapped step costs about seeds × one step,
the step is compute-bound and a seed axis saves only each run's set-up and compilation.
Prints one JSON line, appended to benchmarks/results/seed_vmap_step.jsonl.
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
import timing_harness
from absl import app, flags

from mlrpl_jax.models.network import SharedHead

MAP_SHAPE = (2, 2, 1280)  # EfficientNet-Lite0 at 64 px


def seconds_per_call(fn, calls: int) -> float:
    """Mean seconds of `calls` calls of the JAX function fn after one warm-up call."""
    return statistics.fmean(timing_harness.timed_calls(lambda: jax.block_until_ready(fn()), calls))


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    classes, seeds = args.classes, args.seeds
    head = SharedHead(
        classes,
        np.random.default_rng(0).standard_normal((classes, 32), np.float32),
        np.eye(classes, dtype=np.float32),
        feature_dim=128,
        attention_dim=64,
        output_dim=128,
    )
    optimizer = optax.adam(1e-3)

    def step(params, batch_stats, opt_state, maps, labels):
        def loss_fn(p):
            out, updated = head.apply(
                {"params": p, "batch_stats": batch_stats}, maps, True, mutable=["batch_stats"]
            )
            return optax.sigmoid_binary_cross_entropy(out.logits, labels).mean(), updated

        (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), updated["batch_stats"], opt_state, loss

    def init(key):
        variables = head.init(key, jnp.zeros((1, *MAP_SHAPE)), False)
        return variables["params"], variables["batch_stats"], optimizer.init(variables["params"])

    rng = np.random.default_rng(0)
    maps = jnp.asarray(rng.standard_normal((seeds, args.batch, *MAP_SHAPE), np.float32))
    labels = jnp.asarray(rng.integers(0, 2, (seeds, args.batch, classes)).astype(np.float32))
    single = init(jax.random.PRNGKey(0))
    stacked = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), seeds))
    one_step = jax.jit(step)
    vmapped_step = jax.jit(jax.vmap(step))
    load_before = timing_harness.load_average()
    single_s = seconds_per_call(lambda: one_step(*single, maps[0], labels[0]), args.calls)
    vmapped_s = seconds_per_call(
        lambda: vmapped_step(*stacked, maps, labels), max(args.calls // seeds, 5)
    )
    line = {
        "benchmark": "seed_vmap_step",
        "seeds": seeds,
        "batch": args.batch,
        "classes": classes,
        "single_seed_step_s": round(single_s, 5),
        "vmapped_step_s": round(vmapped_s, 5),
        "vmapped_over_sequential": round(vmapped_s / (seeds * single_s), 3),
        "threads": timing_harness.cpu_threads(),
        "device_kind": jax.devices()[0].device_kind,
        **timing_harness.conditions(load_before),
    }
    print(timing_harness.append_line(args.output, line))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_integer("seeds", 8, "Seeds on the vmapped axis.")
    flags.DEFINE_integer("batch", 32, "Images per seed and step.")
    flags.DEFINE_integer("classes", 10, "Classes (digit scenes: 10).")
    flags.DEFINE_integer("calls", 50, "Timed calls of the single-seed step.")
    flags.DEFINE_string(
        "output", timing_harness.results_path("seed_vmap_step.jsonl"), "JSON lines."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
