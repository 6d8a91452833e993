"""Does training many seeds in one program (vmap over a seed axis) raise throughput on this machine?

    python benchmarks/seed_vmap_step.py --seeds=8 --batch=32

Times the cached regime's trainable part (the shared head on EfficientNet-Lite0's 2x2x1280 maps,
docs/methods/network.md §4.2-4.5) with Adam: one seed's jitted step, and the same step vmapped
over `--seeds` parameter sets and batches. If the vmapped step costs about seeds × one step,
the step is compute-bound and a seed axis saves only each run's set-up and compilation.
Prints one JSON line, appended to benchmarks/results/seed_vmap_step.jsonl.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from mlrpl_jax.models.network import SharedHead

_SEEDS = flags.DEFINE_integer("seeds", 8, "Seeds on the vmapped axis.")
_BATCH = flags.DEFINE_integer("batch", 32, "Images per seed and step.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Classes (digit scenes: 10).")
_CALLS = flags.DEFINE_integer("calls", 50, "Timed calls of the single-seed step.")
_OUTPUT = flags.DEFINE_string("output", os.path.join(os.path.dirname(__file__), "results",
                                                     "seed_vmap_step.jsonl"), "JSON lines.")
MAP_SHAPE = (2, 2, 1280)  # EfficientNet-Lite0 at 64 px


def seconds_per_call(fn, calls: int) -> float:
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(calls):
        jax.block_until_ready(fn())
    return (time.perf_counter() - start) / calls


def main(argv: list[str]) -> None:
    del argv
    classes, seeds = _CLASSES.value, _SEEDS.value
    head = SharedHead(classes, np.random.default_rng(0).standard_normal((classes, 32), np.float32),
                      np.eye(classes, dtype=np.float32), feature_dim=128, attention_dim=64,
                      output_dim=128)
    optimizer = optax.adam(1e-3)

    def step(params, batch_stats, opt_state, maps, labels):
        def loss_fn(p):
            out, updated = head.apply({"params": p, "batch_stats": batch_stats}, maps, True,
                                      mutable=["batch_stats"])
            return optax.sigmoid_binary_cross_entropy(out.logits, labels).mean(), updated
        (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), updated["batch_stats"], opt_state, loss

    def init(key):
        variables = head.init(key, jnp.zeros((1, *MAP_SHAPE)), False)
        return variables["params"], variables["batch_stats"], optimizer.init(variables["params"])

    rng = np.random.default_rng(0)
    maps = jnp.asarray(rng.standard_normal((seeds, _BATCH.value, *MAP_SHAPE), np.float32))
    labels = jnp.asarray(rng.integers(0, 2, (seeds, _BATCH.value, classes)).astype(np.float32))
    single = init(jax.random.PRNGKey(0))
    stacked = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), seeds))
    one_step = jax.jit(step)
    vmapped_step = jax.jit(jax.vmap(step))
    load_before = list(os.getloadavg())
    single_s = seconds_per_call(lambda: one_step(*single, maps[0], labels[0]), _CALLS.value)
    vmapped_s = seconds_per_call(lambda: vmapped_step(*stacked, maps, labels),
                                 max(_CALLS.value // seeds, 5))
    line = {"benchmark": "seed_vmap_step", "seeds": seeds, "batch": _BATCH.value,
            "classes": classes, "single_seed_step_s": round(single_s, 5),
            "vmapped_step_s": round(vmapped_s, 5),
            "vmapped_over_sequential": round(vmapped_s / (seeds * single_s), 3),
            "threads": len(os.sched_getaffinity(0)), "device_kind": jax.devices()[0].device_kind,
            "cpu_amx": "amx" in open("/proc/cpuinfo").read(),
            "load_average_before": load_before, "load_average_after": list(os.getloadavg())}
    print(json.dumps(line))
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    app.run(main)
