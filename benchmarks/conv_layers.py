"""Per-layer benchmark of models/convolution.py: every distinct ResNet-101 convolution, 'xla' vs 'dot'.

    python benchmarks/conv_layers.py                       # 448², batch 8 (the paper shape)
    python benchmarks/conv_layers.py --image_size=224 --batch=2 --repeats=3

For each distinct (input shape, kernel, stride, output channels) of ResNet-101, in one run:
median seconds of the forward pass and of forward + backward (gradients of input and kernel;
only layer4's convolutions need it in training) with conv_impl 'xla' and 'dot' (k x k kernels
have only 'xla'), and the forward with bfloat16 operands (model.frozen_dtype). GFLOP/s is
2 B H' W' kh kw I O per forward (x3 with backward). Prints a table and writes the rows as
JSON (--output); the `count` column says how often the shape occurs in the network.
"""

from __future__ import annotations

import collections
import json
import os
import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import timing_harness
from absl import app, flags

from mlrpl_jax.models.convolution import Conv
from mlrpl_jax.models.resnet import FROZEN_BACKBONE_MODULES, ResNet

Shape = collections.namedtuple("Shape", "input kernel stride features padding frozen")


def resnet101_conv_shapes(image_size: int, batch: int) -> collections.Counter:
    """Counter of the distinct convolutions of ResNet-101 (traced abstractly, nothing computed)."""
    shapes = collections.Counter()

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, Conv) and context.method_name == "__call__":
            frozen = module.path[0] in FROZEN_BACKBONE_MODULES
            shapes[
                Shape(
                    tuple(args[0].shape),
                    module.kernel_size,
                    module.stride,
                    module.features,
                    module.padding,
                    frozen,
                )
            ] += 1
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda x: ResNet(depth=101).init(jax.random.key(0), x, train=False),
            jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32),
        )
    return shapes


def median_seconds(fn, *args) -> float:
    """Median seconds of --repeats calls of fn(*args) after one call that compiles."""
    times = timing_harness.timed_calls(
        lambda: jax.block_until_ready(fn(*args)), flags.FLAGS.repeats
    )
    return statistics.median(times)


def measure(shape: Shape) -> dict:
    """Median seconds of forward / forward+backward per implementation for one conv shape."""
    x = jax.random.normal(jax.random.key(0), shape.input)
    row = {
        "input": list(shape.input),
        "kernel": shape.kernel,
        "stride": shape.stride,
        "features": shape.features,
        "frozen": shape.frozen,
    }
    impls = ("xla", "dot") if shape.kernel == 1 else ("xla",)
    for impl in impls:
        for operands in ("float32", "bfloat16"):
            conv = Conv(
                shape.features,
                shape.kernel,
                shape.stride,
                padding=shape.padding,
                impl=impl,
                operand_dtype=jnp.bfloat16 if operands == "bfloat16" else None,
            )
            params = conv.init(jax.random.key(1), x)
            forward = jax.jit(conv.apply)
            suffix = "" if operands == "float32" else "_bf16"
            row[f"{impl}{suffix}_forward_s"] = median_seconds(forward, params, x)
            if operands == "float32":
                y = forward(params, x)
                grads = jax.jit(lambda p, x, dy: jax.vjp(conv.apply, p, x)[1](dy))
                row[f"{impl}_forward_backward_s"] = median_seconds(
                    grads, params, x, jnp.ones_like(y)
                )
                row["output"] = list(y.shape)
    _, h, w, o = row["output"]
    row["gflop"] = 2 * shape.input[0] * h * w * shape.kernel**2 * shape.input[3] * o / 1e9
    return row


def format_row(row: dict, count: int) -> str:
    def cell(key: str, flops: float) -> str:
        return f"{row[key]:7.4f} ({flops / row[key]:4.0f})" if key in row else " " * 14

    g = row["gflop"]
    name = (
        f"{row['kernel']}x{row['kernel']}/{row['stride']} {row['input'][1]:>3}² "
        f"{row['input'][3]:>4}->{row['features']:<4}"
    )
    return (
        f"{name} x{count:<2} {'frozen ' if row['frozen'] else 'trained'} {g:6.2f} | "
        f"{cell('xla_forward_s', g)} {cell('dot_forward_s', g)} | "
        f"{cell('xla_bf16_forward_s', g)} {cell('dot_bf16_forward_s', g)} | "
        f"{cell('xla_forward_backward_s', 3 * g)} {cell('dot_forward_backward_s', 3 * g)}"
    )


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    load_before = timing_harness.load_average()
    shapes = resnet101_conv_shapes(args.image_size, args.batch)
    print(
        f"ResNet-101 convolutions at {args.image_size}², batch {args.batch} on "
        f"{jax.devices()[0].device_kind}; load average {tuple(load_before)}; seconds "
        f"(GFLOP/s), median of {args.repeats}"
    )
    print(
        f"{'conv':28} {'count':7} {'GFLOP':>6} | {'xla fwd':14} {'dot fwd':14} | "
        f"{'xla bf16 fwd':14} {'dot bf16 fwd':14} | {'xla fwd+bwd':14} {'dot fwd+bwd':14}"
    )
    rows = []
    for shape, count in shapes.items():
        row = {**measure(shape), "count": count}
        rows.append(row)
        print(format_row(row, count), flush=True)

    def total(key: str, fallback: str) -> float:
        return sum(r["count"] * r.get(key, r[fallback]) for r in rows)

    print(
        f"sum of every layer's forward: xla {total('xla_forward_s', 'xla_forward_s'):.2f} s, "
        f"auto (1x1 as dot) {total('dot_forward_s', 'xla_forward_s'):.2f} s, auto with bf16 "
        f"operands {total('dot_bf16_forward_s', 'xla_bf16_forward_s'):.2f} s"
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(
            {
                "image_size": args.image_size,
                "batch": args.batch,
                "repeats": args.repeats,
                "device_kind": jax.devices()[0].device_kind,
                **timing_harness.conditions(load_before),
                "layers": rows,
            },
            f,
            indent=1,
        )
    print(f"written to {args.output}")


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_integer("image_size", 448, "Input side in pixels.")
    flags.DEFINE_integer("batch", 8, "Batch size.")
    flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (after one warm-up call).")
    flags.DEFINE_string(
        "output", timing_harness.results_path("conv_layers.json"), "JSON file to write."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
