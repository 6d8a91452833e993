"""Category-wise fine-tuning (CFT): each class's classifier (ω_c, κ_c) re-fitted after training on
the known labels of that class only, every other parameter frozen (docs/methods/cft.md).

The classifier of the shared network is ElementWiseLinear, z_{n,c} = ω_c · o_{n,c} + κ_c with
o the per-class inputs (N, C, D) of the inference-mode forward, so fitting class c touches only
row c. All classes are fitted at once: the loss is a sum of per-class means and Adam is
element-wise, so the joint run is C independent runs. Each class keeps the head of best holdout
AP (the original if none beats it) and stops after `patience` steps without improvement.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlrpl_jax.methods.partial_losses.loss_functions import asymmetric_terms
from mlrpl_jax.models.classifier import ElementWiseLinear


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """The CFT source's BP-ASL settings (docs/methods/cft.md §2) as defaults."""

    steps: int = 5000  # full-batch Adam steps at most
    patience: int = 300  # steps without a better holdout AP before a class stops
    learning_rate: float = 1e-4
    gamma_pos: float = 0.0
    gamma_neg: float = 4.0
    clip: float = 0.05

    def __post_init__(self):
        if self.steps < 1 or self.patience < 1 or not self.learning_rate > 0:
            raise ValueError(
                f"CFT needs steps >= 1, patience >= 1 and learning_rate > 0, got "
                f"{self.steps}, {self.patience} and {self.learning_rate}"
            )


@dataclasses.dataclass(frozen=True)
class FitResult:
    kernel: np.ndarray  # (C, D) ω after CFT
    bias: np.ndarray  # (C,) κ after CFT
    fitted: np.ndarray  # (C,) bool: the class had known positives and negatives on both sides
    holdout_ap_before: np.ndarray  # (C,) plain AP on the holdout's known labels, NaN if unfitted
    holdout_ap_after: np.ndarray  # (C,)
    best_step: np.ndarray  # (C,) step of the kept head, 0 = the original
    steps_run: int


def classifier_inputs(
    apply_fn: Callable[[], jax.Array],
) -> tuple[jax.Array, jax.Array, tuple[str, ...]]:
    """Runs `apply_fn` (a model apply, inside a trace) recording its ElementWiseLinear call:
    (logits it returns, the classifier's inputs (B, C, D), the classifier's module path).

    Raises ValueError unless exactly one ElementWiseLinear is called: CFT needs the logits to
    be that one per-class linear map of o.
    """
    calls: list[tuple[jax.Array, tuple[str, ...]]] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, ElementWiseLinear) and context.method_name == "__call__":
            calls.append((args[0], tuple(context.module.path)))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        logits = apply_fn()
    if len(calls) != 1:
        raise ValueError(
            f"CFT needs the model's prediction to call one per-class classifier "
            f"(ElementWiseLinear); this one calls {len(calls)}"
        )
    ((inputs, path),) = calls
    return logits, inputs, path


def holdout_rows(num_rows: int, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: the training rows held out to select each class's head, a seeded choice of
    round(fraction N) rows."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the holdout fraction must be in (0, 1), got {fraction}")
    chosen = np.random.default_rng(seed).permutation(num_rows)[: round(fraction * num_rows)]
    held = np.zeros(num_rows, bool)
    held[chosen] = True
    return held


def per_class_logits(kernel: jax.Array, bias: jax.Array, inputs: jax.Array) -> jax.Array:
    """z = ω_c · o_{n,c} + κ_c: (C, D), (C,), (N, C, D) -> (N, C)."""
    return jnp.einsum("ncd,cd->nc", inputs, kernel, precision=jax.lax.Precision.HIGHEST) + bias


def known_label_ap(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Plain AP per class over the known entries only: (N, C), labels in {-1, 0, +1} -> (C,).

    AP = mean over known positives of (known positives ranked at or above) / (known entries
    ranked at or above), ties broken by row order. NaN for a class without a known positive.
    """
    known = labels != 0
    ranked = jnp.where(known, logits, -jnp.inf).T  # (C, N)
    order = jnp.argsort(-ranked, axis=1, stable=True)
    positive = jnp.take_along_axis((labels > 0).T, order, axis=1)
    is_known = jnp.take_along_axis(known.T, order, axis=1)
    precision = jnp.cumsum(positive, axis=1) / jnp.maximum(jnp.cumsum(is_known, axis=1), 1)
    return jnp.sum(jnp.where(positive, precision, 0.0), axis=1) / jnp.sum(positive, axis=1)


def per_class_known_loss(
    kernel: jax.Array, bias: jax.Array, inputs: jax.Array, labels: jax.Array, options: FitOptions
) -> jax.Array:
    """Σ_c mean over the known entries of class c of ASL (partial_losses.md §1) -> scalar."""
    positive, negative = asymmetric_terms(
        per_class_logits(kernel, bias, inputs),
        gamma_pos=options.gamma_pos,
        gamma_neg=options.gamma_neg,
        clip=options.clip,
    )
    known = (labels != 0).astype(jnp.float32)
    losses = jnp.where(labels > 0, positive, negative) * known  # (N, C)
    return jnp.sum(jnp.sum(losses, axis=0) / jnp.maximum(jnp.sum(known, axis=0), 1.0))


def fittable_classes(train_labels: np.ndarray, holdout_labels: np.ndarray) -> np.ndarray:
    """(C,) bool: classes with a known positive and a known negative in both parts."""
    return np.logical_and.reduce(
        [
            (part == value).any(axis=0)
            for part in (train_labels, holdout_labels)
            for value in (1, -1)
        ]
    )


def fit_heads(
    kernel: np.ndarray,
    bias: np.ndarray,
    train_inputs: np.ndarray,
    train_labels: np.ndarray,
    holdout_inputs: np.ndarray,
    holdout_labels: np.ndarray,
    options: FitOptions,
) -> FitResult:
    """CFT of every class: full-batch Adam on the training part's known labels, the head of best
    holdout AP kept per class (docs/methods/cft.md §3)."""
    fitted = fittable_classes(train_labels, holdout_labels)
    head = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    arrays = [
        jnp.asarray(a, jnp.float32)
        for a in (train_inputs, train_labels, holdout_inputs, holdout_labels)
    ]
    outputs = jax.jit(_fit_loop, static_argnums=6)(head, *arrays, jnp.asarray(fitted), options)
    best, best_ap, best_step, first_ap, steps_run = jax.device_get(outputs)
    nan = np.where(fitted, 0.0, np.nan)
    return FitResult(
        kernel=np.asarray(best["kernel"]),
        bias=np.asarray(best["bias"]),
        fitted=fitted,
        holdout_ap_before=np.asarray(first_ap) + nan,
        holdout_ap_after=np.asarray(best_ap) + nan,
        best_step=np.asarray(best_step),
        steps_run=int(steps_run),
    )


def _fit_loop(
    head: dict[str, jax.Array],
    train_inputs: jax.Array,
    train_labels: jax.Array,
    holdout_inputs: jax.Array,
    holdout_labels: jax.Array,
    fitted: jax.Array,
    options: FitOptions,
) -> tuple[Any, ...]:
    optimizer = optax.adam(options.learning_rate)
    grad_fn = jax.grad(
        lambda h: per_class_known_loss(h["kernel"], h["bias"], train_inputs, train_labels, options)
    )

    def holdout_ap(h):
        return known_label_ap(
            per_class_logits(h["kernel"], h["bias"], holdout_inputs), holdout_labels
        )

    first_ap = holdout_ap(head)

    def keep_where(better, new, old):
        return jax.tree.map(
            lambda n, o: jnp.where(better.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
        )

    def step(carry):
        count, current, opt_state, best, best_ap, best_step, active = carry
        updates, opt_state = optimizer.update(grad_fn(current), opt_state, current)
        current = optax.apply_updates(current, updates)
        count = count + 1
        ap = holdout_ap(current)
        better = active & (ap > best_ap)
        best = keep_where(better, current, best)
        best_ap = jnp.where(better, ap, best_ap)
        best_step = jnp.where(better, count, best_step)
        active = active & (count - best_step < options.patience)
        return count, current, opt_state, best, best_ap, best_step, active

    def going(carry):
        return (carry[0] < options.steps) & jnp.any(carry[-1])

    num_classes = first_ap.shape[0]
    carry = (
        jnp.int32(0),
        head,
        optimizer.init(head),
        head,
        first_ap,
        jnp.zeros(num_classes, jnp.int32),
        fitted,
    )
    count, _, _, best, best_ap, best_step, _ = jax.lax.while_loop(going, step, carry)
    return best, best_ap, best_step, first_ap, count
