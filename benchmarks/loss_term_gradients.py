"""Which of SARB's or DSRB's loss terms moves the network: each term's share of the gradient.

    python benchmarks/loss_term_gradients.py --run=W/sarb_digits_cached/p0.1_s0 --batches=50

Reads a finished (or partial) SARB or DSRB run and, from its latest checkpoint (`--step` for
another one), over `--batches` training batches of the checkpoint's epoch, splits the loss
L = main + λ_con w_e contrastive + λ_I instance + λ_P prototype (sarb.md §8.4, dsrb.md §9.1)
into its four weighted terms, the values `RepresentationBlending.loss` logs. Per term, means
over the batches of:

* `value`: the weighted term;
* `gradient_norm`: the norm of its gradient in the trained parameters (α, β left out);
* `share`: <g_term, g> / |g|², its share of the total gradient g along g's direction (the
  shares of the four terms sum to 1; a term with share 0 does not move the network along
  the direction it takes, a negative share opposes it).

`check` compares, on the first batch, the sum of the weighted terms with the loss the training
step differentiates. One JSON line goes to `--output`, with the load average
(timing_harness.conditions). It shows, for instance, whether a main term trained with partial
ASL (`known_label_loss='asl'`) still steers a network whose blended branches keep BCE.
"""

from __future__ import annotations

import blend_weight_gradients
import finished_run
import jax
import jax.numpy as jnp
import numpy as np
import timing_harness
from absl import app, flags

from mlrpl_jax import losses
from mlrpl_jax.core import parallel, train
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.methods.blending.network import BLEND_PARAMS

TERMS = ("main", "contrastive", "instance", "prototype")
# The metric each term is logged as by RepresentationBlending.loss (unweighted)
LOGGED = {
    "main": "bce",
    "contrastive": "contrastive",
    "instance": "instance_bce",
    "prototype": "prototype_bce",
}


def weighted_terms(method, metrics: dict, ctx: StepContext) -> jax.Array:
    """(4,) the loss's terms as `RepresentationBlending.loss` weighs them, from its metrics."""
    warmup = losses.warmup_factor(ctx.epoch, ctx.step_in_epoch, ctx.steps_per_epoch)
    instance_weight, prototype_weight = method.branch_weights()
    weights = (1.0, method.options.contrastive_weight * warmup, instance_weight, prototype_weight)
    return jnp.stack([w * metrics[LOGGED[term]] for w, term in zip(weights, TERMS)])


def make_term_gradients(method):
    """jit (variables, method_state, batch, ctx) -> per-term (value, gradient norm, share) and
    the loss, in the parameters other than α, β."""

    def terms(trained, variables, method_state, batch, ctx):
        params = {**variables["params"], **trained}
        total, aux = method.loss({**variables, "params": params}, method_state, batch, ctx)
        return weighted_terms(method, aux.metrics, ctx), total

    @jax.jit
    def term_gradients(variables, method_state, batch, ctx):
        trained = {k: v for k, v in variables["params"].items() if k not in BLEND_PARAMS}
        values, total = terms(trained, variables, method_state, batch, ctx)
        jacobian = jax.jacrev(lambda p: terms(p, variables, method_state, batch, ctx)[0])(trained)
        flat = jnp.concatenate(
            [leaf.reshape(len(TERMS), -1) for leaf in jax.tree.leaves(jacobian)], axis=1
        )  # (4, P)
        gradient = jnp.sum(flat, axis=0)  # (P,) the total loss's gradient
        shares = flat @ gradient / jnp.maximum(jnp.sum(gradient**2), 1e-30)
        return {
            "value": values,
            "gradient_norm": jnp.linalg.norm(flat, axis=1),
            "share": shares,
            "loss": total,
        }

    return term_gradients


def loss_term_gradients(run_dir: str, num_batches: int, step: int | None) -> dict:
    load_before = timing_harness.load_average()
    run = finished_run.restore(run_dir, check=blend_weight_gradients.blending_run, step=step)
    config, data, method, state, mesh = run.config, run.data, run.method, run.state, run.mesh
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    epoch = min(run.step // steps_per_epoch, config.epochs - 1)
    if int(jax.device_get(state.method_state["prototype_epoch"])) < 0:
        state = method.on_epoch_start(
            state, epoch, HostContext.on_mesh(data, mesh, config.batch_size)
        )
    term_gradients = make_term_gradients(method)
    rows, check = [], None
    for index, batch in enumerate(data.train_batches(epoch, config.batch_size)):
        if index == num_batches:
            break
        batch = train.training_batch(
            method, state.method_state, parallel.to_global(batch, mesh=mesh)
        )
        ctx = StepContext(
            epoch=jnp.int32(epoch),
            step_in_epoch=jnp.int32(index),
            rng=jax.random.fold_in(state.rng, run.step + index),
            steps_per_epoch=steps_per_epoch,
        )
        result = jax.device_get(
            term_gradients(
                state.variables(), state.method_state, train.without_hidden_labels(batch), ctx
            )
        )
        if check is None:
            check = {
                "sum_of_terms": float(np.sum(result["value"])),
                "loss": float(result["loss"]),
            }
        rows.append(result)
    options = config[config.method]
    return {
        "script": "loss_term_gradients",
        "run": run_dir,
        "method": config.method,
        "seed": config.seed,
        "known_ratio": config.known_ratio,
        "known_label_loss": options.known_label_loss,
        "blended_loss": options.blended_loss,
        "checkpoint_step": run.step,
        "epoch": epoch,
        "batches": len(rows),
        "check": check,
        "terms": {
            term: {
                key: float(np.mean([row[key][k] for row in rows]))
                for key in ("value", "gradient_norm", "share")
            }
            for k, term in enumerate(TERMS)
        },
        **timing_harness.conditions(load_before),
    }


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    line = loss_term_gradients(FLAGS.run, FLAGS.batches, FLAGS.step)
    print(timing_harness.append_line(FLAGS.output, line))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    blend_weight_gradients.define_blending_run_flags()
    flags.DEFINE_string(
        "output",
        timing_harness.results_path("loss_term_gradients.jsonl"),
        "JSON-lines file the measurement is appended to.",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
