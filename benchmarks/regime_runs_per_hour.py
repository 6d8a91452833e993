"""Benchmark runs per hour in two digit regimes, measured side by side in one process.

    python benchmarks/regime_runs_per_hour.py --digit_config=configs/baseline_digits.py \
        --regimes=large,cached

For each regime (`config.py` DIGIT_REGIMES) the dry run's measurement (mlrpl_jax/core/dry_run.py:
the real jitted step and inference forward at the regime's shapes, synthetic input) gives the
set-up, compile and per-step times. A run's time is projected from them: set-up + compiles +
steps per run × step time + evaluations × test batches × inference step. The projection leaves
out the input pipeline and checkpoints, so measured sweep wall times (docs/results/
benchmark_regime.md) are the check on it. Prints one JSON line per regime, appended to
benchmarks/results/regime_runs_per_hour.jsonl, and the time of the whole benchmark
(`--benchmark_runs` runs: 7 configs × 3 proportions × 8 seeds + 8 bound runs by default).
"""

from __future__ import annotations

import math

import timing_harness
from absl import app, flags

from mlrpl_jax import sweep
from mlrpl_jax.core import dry_run, parallel


def projected_run_s(config, measured: dict, train_examples: int, test_examples: int) -> float:
    """Seconds of one run: set-up, compiles, every train step and every evaluation."""
    steps = train_examples // config.batch_size * config.epochs
    eval_batch = config.eval.batch_size or config.batch_size
    evaluations = math.ceil(config.epochs / config.eval.every_epochs)
    return (
        measured["init_s"]
        + measured["compile_s"]
        + measured["predict_compile_s"]
        + steps * measured["step_s_median"]
        + evaluations * math.ceil(test_examples / eval_batch) * measured["predict_step_s"]
    )


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    mesh = parallel.create_mesh()
    lines = []
    for regime in args.regimes:
        load_before = timing_harness.load_average()
        config = sweep.load_config_file(f"{args.digit_config}:{regime}")
        plan = dry_run.make_plan(config)
        measured = dry_run.measure(plan, mesh, args.steps)
        run_s = projected_run_s(config, measured, args.train_examples, args.test_examples)
        line = {
            "benchmark": "regime_runs_per_hour",
            "config": args.digit_config,
            "regime": regime,
            "method": config.method,
            "train_images_shape": list(plan.train_images_shape),
            "init_s": measured["init_s"],
            "compile_s": measured["compile_s"],
            "predict_compile_s": measured["predict_compile_s"],
            "step_s_median": measured["step_s_median"],
            "predict_step_s": measured["predict_step_s"],
            "projected_run_s": round(run_s, 1),
            "runs_per_hour": round(3600 / run_s, 1),
            "benchmark_runs": args.benchmark_runs,
            "benchmark_hours": round(args.benchmark_runs * run_s / 3600, 2),
            **timing_harness.conditions(load_before),
        }
        lines.append(line)
        print(timing_harness.append_line(args.output, line))
    for line in lines:
        print(
            f"{line['regime']:>8s}: step {line['step_s_median'] * 1e3:.1f} ms, run "
            f"{line['projected_run_s']:.0f} s, {line['runs_per_hour']:.1f} runs/h, benchmark "
            f"of {line['benchmark_runs']} runs {line['benchmark_hours']:.2f} h"
        )


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("digit_config", "configs/baseline_digits.py", "Digit config file.")
    flags.DEFINE_list("regimes", ["large", "cached"], "Regimes to compare.")
    flags.DEFINE_integer("steps", 20, "Timed train steps per regime.")
    flags.DEFINE_integer(
        "train_examples", 20_000, "Training scenes of the regime (digit_scenes/large)."
    )
    flags.DEFINE_integer("test_examples", 1_500, "Test scenes (digit_scenes/large).")
    flags.DEFINE_integer("benchmark_runs", 7 * 3 * 8 + 8, "Runs of the benchmark.")
    flags.DEFINE_string(
        "output", timing_harness.results_path("regime_runs_per_hour.jsonl"), "JSON lines."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
