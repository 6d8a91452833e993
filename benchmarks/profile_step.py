"""Where the time of the train step (or the inference forward) goes, op by op.

    python benchmarks/profile_step.py --config=configs/sarb_coco.py
    python benchmarks/profile_step.py --config=configs/sst_coco.py --mode=eval_forward
    python benchmarks/profile_step.py --config=configs/sst_coco.py --config.model.conv_impl=xla

Traces `--steps` calls of the compiled step (after one untimed call) with jax.profiler, sums
the duration of every executed XLA op (thunk) over the calls and joins it with the optimised
HLO module: the op's opcode, output shape and, for fusions, what the fused computation
contains. Ops are grouped into categories (convolution, matrix product, copy/transpose,
elementwise or reduction fusion, ...). Prints the categories and the `--top` slowest ops and
appends one JSON line to benchmarks/results/profile_step.jsonl. The same synthetic set-up as
benchmarks/train_step.py (mlrpl_jax/core/dry_run.py). Durations are per call; ops that run
concurrently on different threads are each counted in full, so the sum can exceed the wall time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Any

import jax
import timing_harness
from absl import app, flags
from ml_collections import config_flags

from mlrpl_jax.core import dry_run, parallel
from mlrpl_jax.core.train import jit_predict

MODES = ("train_step", "eval_forward")
# `%name = f32[8,14,14,2048]{3,2,1,0} opcode(...)`, optionally with ROOT and a tuple shape.
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|\S+)\s+([\w\-]+)\(")
COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
CALLS = re.compile(r"calls=%?([\w.\-]+)")
# What a fusion counts as, by the first opcode of its computation found in this order.
FUSION_CATEGORIES = (
    ("convolution", "convolution"),
    ("dot", "matrix product"),
    ("reduce-window", "pooling"),
    ("scatter", "gather/scatter"),
    ("gather", "gather/scatter"),
    ("reduce", "reduction fusion"),
)
OPCODE_CATEGORIES = {
    "convolution": "convolution",
    "dot": "matrix product",
    "copy": "copy/transpose",
    "transpose": "copy/transpose",
    "reduce-window": "pooling",
    "select-and-scatter": "pooling",
    "custom-call": "custom call",
    "reduce": "reduction fusion",
    "scatter": "gather/scatter",
    "gather": "gather/scatter",
}


def parse_hlo(text: str) -> dict[str, dict[str, Any]]:
    """Every instruction of the module: name -> {opcode, shape, category, fused_convolutions,
    fused_dots} (the last two: convolutions and matrix products inside a fusion)."""
    computations: dict[str, list[str]] = collections.defaultdict(list)  # computation -> opcodes
    instructions: dict[str, dict[str, Any]] = {}
    current = None
    for line in text.splitlines():
        match = INSTRUCTION.match(line)
        if match:
            name, shape, opcode = match.groups()
            calls = CALLS.search(line)
            instructions[name] = {
                "opcode": opcode,
                "shape": shape,
                "calls": calls.group(1) if calls else None,
            }
            computations[current].append(opcode)
            continue
        match = COMPUTATION.match(line)
        if match:
            current = match.group(1)
    for info in instructions.values():
        info["category"] = categorise(info, computations)
        fused = computations.get(info.pop("calls"), [])
        info["fused_convolutions"], info["fused_dots"] = (
            fused.count("convolution"),
            fused.count("dot"),
        )
    return instructions


def categorise(info: dict[str, Any], computations: dict[str, list[str]]) -> str:
    opcode = info["opcode"]
    if opcode != "fusion":
        return OPCODE_CATEGORIES.get(opcode, "other")
    fused = computations.get(info["calls"], [])
    if "convolution" in fused and "dot" in fused:  # XNNPACK/YNNPACK fuse whole blocks
        return "convolution + matrix product"
    for fused_opcode, category in FUSION_CATEGORIES:
        if fused_opcode in fused:
            return category
    if fused and set(fused) <= {
        "parameter",
        "copy",
        "transpose",
        "bitcast",
        "reshape",
        "slice",
        "concatenate",
        "pad",
        "broadcast",
        "tuple",
        "get-tuple-element",
    }:
        return "copy/transpose"
    return "elementwise fusion"


def traced_op_seconds(fn, steps: int) -> tuple[dict[str, float], float]:
    """(op name -> seconds summed over `steps` calls of fn, wall seconds of the calls)."""
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(steps):
                jax.block_until_ready(fn())
            wall = time.perf_counter() - start
        (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(path, "rt", encoding="utf-8") as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    seconds: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("ph") == "X":
            seconds[event["name"]] += event.get("dur", 0.0) * 1e-6
    return seconds, wall


def profile(plan: dry_run.DryRunPlan, mode: str, steps: int) -> dict[str, Any]:
    mesh = parallel.create_mesh()
    prepared = dry_run.prepare(plan, mesh)
    if mode == "train_step":
        compiled = prepared.train_step.lower(prepared.state, prepared.batch).compile()
        state = [prepared.state]

        def call():
            state[0], scalars = compiled(state[0], prepared.batch)
            return scalars
    else:
        images = plan.eval_images(mesh)
        compiled = jit_predict(plan.method, mesh).lower(prepared.state, images).compile()

        def call():
            return compiled(prepared.state, images)

    jax.block_until_ready(call())
    instructions = parse_hlo(compiled.as_text())
    seconds, wall = traced_op_seconds(call, steps)
    ops = [
        {"name": name, **instructions[name], "seconds": round(total / steps, 4)}
        for name, total in seconds.items()
        if name in instructions
    ]
    ops.sort(key=lambda op: -op["seconds"])
    categories: dict[str, float] = collections.defaultdict(float)
    counts: collections.Counter = collections.Counter()
    for op in ops:
        categories[op["category"]] += op["seconds"]
        counts[op["category"]] += 1
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "wall_s": round(wall / steps, 4),
        "ops_s": round(sum(op["seconds"] for op in ops), 4),
        "gflop": round(float(cost.get("flops", 0.0)) / 1e9, 1),
        "categories": {
            k: {"seconds": round(v, 4), "ops": counts[k]}
            for k, v in sorted(categories.items(), key=lambda kv: -kv[1])
        },
        "ops": ops,
    }


def main(argv: list[str]) -> None:
    del argv
    load_before = timing_harness.load_average()
    plan = dry_run.make_plan(flags.FLAGS.config)
    result = profile(plan, flags.FLAGS.mode, flags.FLAGS.steps)
    model = plan.config.model
    print(
        f"{plan.config.method} {flags.FLAGS.mode}, conv_impl={model.conv_impl}, "
        f"frozen_dtype={model.frozen_dtype}: {result['wall_s']:.3f} s per call "
        f"({result['ops_s']:.3f} s in ops, {result['gflop']} GFLOP)"
    )
    for category, entry in result["categories"].items():
        print(f"  {category:28s} {entry['seconds']:8.3f} s  ({entry['ops']} ops)")
    for op in result["ops"][: flags.FLAGS.top]:
        inside = (
            f" ({op['fused_convolutions']} conv, {op['fused_dots']} dot inside)"
            if op["fused_convolutions"] + op["fused_dots"] > 1
            else ""
        )
        print(
            f"  {op['seconds']:8.4f} s  {op['category']:28s} {op['name']:28s} {op['shape']}{inside}"
        )
    line = {
        "benchmark": "profile_step",
        **plan.summary(),
        "mode": flags.FLAGS.mode,
        "conv_impl": model.conv_impl,
        "frozen_dtype": model.frozen_dtype,
        "steps": flags.FLAGS.steps,
        **{k: v for k, v in result.items() if k != "ops"},
        "top_ops": result["ops"][: flags.FLAGS.top],
        **timing_harness.conditions(load_before),
    }
    timing_harness.append_line(flags.FLAGS.output, line)


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    config_flags.DEFINE_config_file("config", None, "Config file to profile.", lock_config=True)
    flags.DEFINE_enum("mode", "train_step", MODES, "The train step or only the inference forward.")
    flags.DEFINE_integer("steps", 2, "Traced calls after one untimed call.")
    flags.DEFINE_integer("top", 25, "Slowest ops to print and record.")
    flags.DEFINE_string(
        "output", timing_harness.results_path("profile_step.jsonl"), "JSONL file to append to."
    )
    flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
