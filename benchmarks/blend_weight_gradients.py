"""Why SARB's and DSRB's blend weights α, β go to their clamps: their gradient, path by path.

    python benchmarks/blend_weight_gradients.py --run=W/sarb_digits_cached/p0.1_s0 --batches=50

Reads a finished (or partial) SARB or DSRB run and appends one JSON line to `--output`:

* from its metrics.jsonl, per weight: the first logged step where it has left its initial
  value and the first logged step at a clamp (0 or 1). A logged value is the mean over its
  logging window, so a window at the clamp means the weight sat there for the whole window;
* from its latest checkpoint (`--step` for another one), over `--batches` training batches
  of the checkpoint's epoch (prototypes computed first if the checkpoint has none, as at the
  start of blending): the gradient of the instance-level BCE term in α and of the
  prototype-level BCE term in β (the only terms that depend on them, sarb.md §8.4), each
  split into its two paths, through the blended features (s1, s2) and through the blended
  targets (y1 = 1 − α, y2 = 1 − β on the blended entries), at every value of `--alphas` and
  `--betas` with all other parameters as in the checkpoint. Per value: the term's mean loss,
  each path's mean gradient and the share of batches whose total gradient is negative
  (gradient descent raises the weight), the mean logit on the blended entries (the target
  path's gradient per entry is that logit, losses.md §5.1: d BCE / d y = −z and dy/dα = −1),
  and `adam_steps_in_lr`, mean(g) / sqrt(mean(g²)): the per-step move of Adam's steady state
  in units of its learning rate (1 when every batch pushes the same way, 0 when they cancel);
* `check`: the full loss's gradient in α and β (`method.loss`, the training step's) against
  the sum of the two paths, at the checkpoint's α, β on the first batch.

The measurement carries the load average (timing_harness.conditions).
"""

from __future__ import annotations

import json
import os

import finished_run
import jax
import jax.numpy as jnp
import numpy as np
import timing_harness
from absl import app, flags

from mlrpl_jax import losses
from mlrpl_jax.core import optim, parallel, train
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.blending import blend

BLEND_WEIGHTS = ("alpha", "beta")
CLAMPS = (0.0, 1.0)


def clamp_steps(records: list[dict], key: str, initial: float) -> dict:
    """First logged step where `key` differs from `initial`, first logged step at a clamp, and
    the last logged value; None where it never happens."""
    rows = [record for record in records if key in record]
    left = next((r["step"] for r in rows if r[key] != initial), None)
    at_clamp = next((r["step"] for r in rows if r[key] in CLAMPS), None)
    return {
        "first_logged_step_moved": left,
        "first_logged_step_at_clamp": at_clamp,
        "last": rows[-1][key] if rows else None,
    }


def split_instance_blend(
    semantic: jax.Array, targets: jax.Array, alpha_features: jax.Array, alpha_targets: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`blend.instance_blend` with α in the features and α in the targets as two arguments, so
    their gradients come apart; equal to it when both are the same."""
    weights = blend.instance_blend_coefficients(targets, alpha_features)[..., None]
    blended = weights * semantic + (1.0 - weights) * blend.batch_partners(semantic)
    coefficients = blend.instance_blend_coefficients(targets, alpha_targets)
    blended_targets = coefficients * targets + (1.0 - coefficients) * blend.batch_partners(targets)
    return blended, blended_targets


def blended_logit_mean(logits: jax.Array, blended: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean logit over the blended entries (`blended`, bool (B, C)), and their count."""
    count = jnp.sum(blended)
    return jnp.sum(jnp.where(blended, logits, 0.0)) / jnp.maximum(count, 1), count


def adam_steps_in_lr(gradients: np.ndarray) -> float:
    """mean(g) / sqrt(mean(g²)): Adam's per-step move in units of lr once its moments have
    settled on a stream of gradients like these (ε neglected); the sign is the gradient's."""
    gradients = np.asarray(gradients, np.float64)
    second = float(np.mean(gradients**2))
    return float(np.mean(gradients) / np.sqrt(second)) if second > 0 else 0.0


def summarise(rows: list[dict]) -> dict:
    """Means over batches of one weight value's per-batch numbers."""
    features = np.array([r["gradient_features"] for r in rows])
    targets = np.array([r["gradient_targets"] for r in rows])
    total = features + targets
    return {
        "loss": float(np.mean([r["loss"] for r in rows])),
        "gradient": float(np.mean(total)),
        "gradient_std": float(np.std(total)),
        "gradient_features": float(np.mean(features)),
        "gradient_targets": float(np.mean(targets)),
        "share_of_batches_raising_it": float(np.mean(total < 0)),
        "adam_steps_in_lr": adam_steps_in_lr(total),
        "blended_entries_per_batch": float(np.mean([r["blended_entries"] for r in rows])),
        "blended_logit_mean": float(np.mean([r["blended_logit"] for r in rows])),
    }


def make_branch_gradients(method):
    """jit (variables, method_state, batch, rng, alpha, beta) -> per-branch loss, path gradients
    and blended-entry logits, following `RepresentationBlending.loss`'s rng split."""

    def branches(weights, variables, method_state, batch, rng):
        alpha_f, alpha_t, beta_f, beta_t = weights
        targets = batch["labels"]
        _, blend_rng = jax.random.split(rng)
        output, _ = method.model.apply(
            variables, batch["image"], train=True, mutable=["batch_stats"]
        )
        semantic = output.features.semantic

        def classify(blended):
            return method.model.apply(variables, blended, method="classify")

        s1, y1 = split_instance_blend(semantic, targets, alpha_f, alpha_t)
        s2, _ = method.prototype_blend(output.features, targets, method_state, beta_f, blend_rng)
        _, y2 = method.prototype_blend(output.features, targets, method_state, beta_t, blend_rng)
        # The blended entries whatever the weights: Λ = 0 in ILRB; y2 = 1 where μ = 1 at β = 0.
        instance_blended = blend.instance_blend_coefficients(targets, 0.0) == 0
        _, y2_at_zero = method.prototype_blend(
            output.features, targets, method_state, 0.0, blend_rng
        )
        prototype_blended = y2_at_zero != targets
        instance_weight, prototype_weight = method.branch_weights()
        z1, z2 = classify(s1), classify(s2)
        instance = instance_weight * losses.partial_bce(z1, y1)
        prototype = prototype_weight * losses.partial_bce(z2, y2)
        return instance + prototype, {
            "instance": (instance, *blended_logit_mean(z1, instance_blended)),
            "prototype": (prototype, *blended_logit_mean(z2, prototype_blended)),
        }

    @jax.jit
    def gradients(variables, method_state, batch, rng, alpha, beta):
        weights = (alpha, alpha, beta, beta)
        grads, aux = jax.grad(branches, has_aux=True)(weights, variables, method_state, batch, rng)
        return grads, aux

    return gradients


def full_loss_gradient(method, state, batch, ctx) -> dict[str, float]:
    """d(method.loss)/d(α, β) at the state's parameters: what the training step differentiates."""

    def loss(params):
        variables = {**state.variables(), "params": params}
        return method.loss(variables, state.method_state, batch, ctx)[0]

    grads = jax.jit(jax.grad(loss))(state.params)
    return {name: float(grads[name]) for name in BLEND_WEIGHTS}


def blending_run(config) -> None:
    """Raises unless the run is a SARB or DSRB run (the methods with blend weights)."""
    if config.method not in ("sarb", "dsrb"):
        raise ValueError(f"a {config.method} run; this script reads SARB and DSRB runs")


def blend_weight_gradients(
    run_dir: str, num_batches: int, alphas: list[float], betas: list[float], step: int | None
) -> dict:
    load_before = timing_harness.load_average()
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    run = finished_run.restore(run_dir, check=blending_run, step=step)
    config, data, method, state, mesh = run.config, run.data, run.method, run.state, run.mesh
    step = run.step
    options = config[config.method]
    trajectory = {
        name: clamp_steps(records, f"train/{name}", options[f"{name}_init"])
        for name in BLEND_WEIGHTS
    }
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    epoch = max(step // steps_per_epoch, options.mixup_epoch)  # a blending epoch
    computed_prototypes = int(jax.device_get(state.method_state["prototype_epoch"])) < 0
    if computed_prototypes:  # a checkpoint from before blending: the epoch-start hook's pass
        host = HostContext.on_mesh(data, mesh, config.batch_size)
        state = method.on_epoch_start(state, epoch, host)
    gradients = make_branch_gradients(method)
    variables = state.variables()
    per_value = {("alpha", a): [] for a in alphas} | {("beta", b): [] for b in betas}
    check = None
    batches = data.train_batches(min(epoch, config.epochs - 1), config.batch_size)
    for index, batch in enumerate(batches):
        if index == num_batches:
            break
        batch = train.training_batch(
            method, state.method_state, parallel.to_global(batch, mesh=mesh)
        )
        batch = train.without_hidden_labels(batch)
        rng = jax.random.fold_in(state.rng, step + index)
        if check is None:
            ctx = StepContext(
                epoch=jnp.int32(epoch),
                step_in_epoch=jnp.int32(index),
                rng=rng,
                steps_per_epoch=steps_per_epoch,
            )
            alpha, beta = (float(state.params[name]) for name in BLEND_WEIGHTS)
            grads, _ = gradients(variables, state.method_state, batch, rng, alpha, beta)
            full = full_loss_gradient(method, state, batch, ctx)
            check = {
                "alpha": alpha,
                "beta": beta,
                "full_loss": full,
                "sum_of_paths": {
                    "alpha": float(grads[0] + grads[1]),
                    "beta": float(grads[2] + grads[3]),
                },
            }
        for (name, value), rows in per_value.items():
            alpha = value if name == "alpha" else 0.5
            beta = value if name == "beta" else 0.5
            grads, aux = gradients(variables, state.method_state, batch, rng, alpha, beta)
            branch = aux["instance" if name == "alpha" else "prototype"]
            first = 0 if name == "alpha" else 2
            rows.append(
                {
                    "loss": float(branch[0]),
                    "gradient_features": float(grads[first]),
                    "gradient_targets": float(grads[first + 1]),
                    "blended_logit": float(branch[1]),
                    "blended_entries": int(branch[2]),
                }
            )
    return {
        "script": "blend_weight_gradients",
        "run": run_dir,
        "method": config.method,
        "seed": config.seed,
        "known_ratio": config.known_ratio,
        "checkpoint_step": step,
        "epoch": epoch,
        "lr_of_epoch": float(
            optim.step_learning_rate(
                config.optim.lr,
                steps_per_epoch,
                decay_epochs=config.optim.lr_decay_epochs,
                decay_factor=config.optim.lr_decay_factor,
            )(epoch * steps_per_epoch)
        ),
        "prototypes_computed_here": computed_prototypes,
        "batches": num_batches,
        "trajectory": trajectory,
        "check": check,
        "alpha": {f"{a:g}": summarise(per_value[("alpha", a)]) for a in alphas},
        "beta": {f"{b:g}": summarise(per_value[("beta", b)]) for b in betas},
        **timing_harness.conditions(load_before),
    }


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    line = blend_weight_gradients(
        FLAGS.run,
        FLAGS.batches,
        [float(a) for a in FLAGS.alphas],
        [float(b) for b in FLAGS.betas],
        FLAGS.step,
    )
    print(timing_harness.append_line(FLAGS.output, line))


def define_blending_run_flags() -> None:
    """--run, --batches, --step of the scripts that read a SARB or DSRB run."""
    flags.DEFINE_string("run", None, "Workdir of a SARB or DSRB run with a checkpoint.")
    flags.mark_flag_as_required("run")
    flags.DEFINE_integer("batches", 50, "Training batches to average over.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    define_blending_run_flags()
    flags.DEFINE_list("alphas", ["0.5", "0.75", "0.9", "0.99", "1"], "Values of α to measure at.")
    flags.DEFINE_list(
        "betas", ["0", "0.01", "0.1", "0.5", "0.9", "0.99", "1"], "Values of β to measure at."
    )
    flags.DEFINE_string(
        "output",
        timing_harness.results_path("blend_weight_gradients.jsonl"),
        "JSON-lines file the measurement is appended to.",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
