"""The reference optimiser: PyTorch-1.7 Adam with coupled L2 weight decay, per-leaf lazy state
and a step learning-rate decay per epoch (docs/methods/training.md §10.1, §10.2).
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZER_NAMES = ("adam",)
_OPTIMIZER_FIELDS = (
    "name",
    "lr",
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "lr_decay_epochs",
    "lr_decay_factor",
)


def step_learning_rate(
    base_lr: float,
    steps_per_epoch: int,
    *,
    decay_epochs: int = 10,
    decay_factor: float = 0.1,
) -> optax.Schedule:
    """lr(step) = base_lr * decay_factor ** (epoch // decay_epochs) (docs/methods/training.md §10.1).

    epoch = step // steps_per_epoch; the step is the optimiser's global call count.
    """
    if steps_per_epoch < 1 or decay_epochs < 1:
        raise ValueError(
            f"steps_per_epoch and decay_epochs must be positive integers, got {steps_per_epoch} "
            f"and {decay_epochs}."
        )

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        epoch = jnp.asarray(step) // steps_per_epoch
        decays = (epoch // decay_epochs).astype(jnp.float32)
        return jnp.float32(base_lr) * jnp.float32(decay_factor) ** decays

    return schedule


class ReferenceAdamState(NamedTuple):
    """State of :func:`reference_adam`; every leaf is an array (checkpointable, replicable)."""

    count: jax.Array  # () int32: update calls so far, drives the learning-rate schedule
    leaf_counts: optax.Updates  # () int32 per parameter leaf: steps that leaf took part in
    mu: optax.Updates  # first moments, like params
    nu: optax.Updates  # second moments, like params


def _one_minus_power(log_base: float, count: jax.Array) -> jax.Array:
    """1 - base**count in float32 as -expm1(count * log(base)), accurate for base close to 1."""
    return -jnp.expm1(count.astype(jnp.float32) * jnp.float32(log_base))


def reference_adam(
    learning_rate: float | optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 5e-4,
) -> optax.GradientTransformationExtraArgs:
    """PyTorch-1.7 Adam with L2 added to the gradient and lazily activated leaves (§10.1, §10.2).

    Per active leaf: g += wd θ; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; k += 1;
    θ -= (lr / (1-b1^k)) m / (sqrt(v) / sqrt(1-b2^k) + eps). ``update`` takes the keyword
    ``active``: a pytree like ``params`` of scalar bools (True = the leaf took part in this
    step's backward pass; default all True). An inactive leaf gets a zero update and keeps its
    moments and its own step count k, so its bias correction starts at 1 when it first becomes
    active. The learning-rate schedule is evaluated at the global call count.
    """
    for name, beta in (("b1", b1), ("b2", b2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {beta}.")
    if eps < 0.0 or weight_decay < 0.0:
        raise ValueError(f"eps and weight_decay must be >= 0, got {eps} and {weight_decay}.")
    log_b1 = math.log(b1) if b1 > 0.0 else -math.inf
    log_b2 = math.log(b2) if b2 > 0.0 else -math.inf

    def init(params: optax.Params) -> ReferenceAdamState:
        return ReferenceAdamState(
            count=jnp.zeros((), jnp.int32),
            leaf_counts=jax.tree.map(lambda _: jnp.zeros((), jnp.int32), params),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update(
        updates: optax.Updates,
        state: ReferenceAdamState,
        params: optax.Params | None = None,
        *,
        active: optax.Params | None = None,
        **extra_args: object,
    ) -> tuple[optax.Updates, ReferenceAdamState]:
        del extra_args
        if params is None:
            raise ValueError(
                "reference_adam needs params (for the L2 weight decay): "
                "call update(grads, state, params)."
            )
        structure = jax.tree.structure(updates)
        if active is None:
            active = jax.tree.unflatten(structure, [True] * structure.num_leaves)
        elif jax.tree.structure(active) != structure:
            raise ValueError(
                f"active must have the same tree structure as the gradients, with one scalar "
                f"bool per leaf; got {jax.tree.structure(active)} for {structure}."
            )
        if any(jnp.ndim(flag) != 0 for flag in jax.tree.leaves(active)):
            raise ValueError(
                "every leaf of active must be a scalar bool (one flag per parameter "
                "array), not an elementwise mask."
            )
        learning_rate_now = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def leaf_update(g, theta, m, v, k, is_active):
            is_active = jnp.asarray(is_active, bool)
            if weight_decay:
                g = g + weight_decay * theta
            m_next = b1 * m + (1.0 - b1) * g
            v_next = b2 * v + (1.0 - b2) * g * g
            k_next = optax.safe_increment(k)
            step_size = learning_rate_now / _one_minus_power(log_b1, k_next)
            denom = jnp.sqrt(v_next) / jnp.sqrt(_one_minus_power(log_b2, k_next)) + eps
            step = ((-step_size * m_next) / denom).astype(theta.dtype)
            return (
                jnp.where(is_active, step, jnp.zeros_like(step)),
                jnp.where(is_active, m_next, m),
                jnp.where(is_active, v_next, v),
                jnp.where(is_active, k_next, k),
            )

        flat = [
            structure.flatten_up_to(tree)
            for tree in (updates, params, state.mu, state.nu, state.leaf_counts, active)
        ]
        steps, mu, nu, leaf_counts = zip(*(leaf_update(*leaf) for leaf in zip(*flat)))
        unflatten = functools.partial(jax.tree.unflatten, structure)
        new_state = ReferenceAdamState(
            count=optax.safe_increment(state.count),
            leaf_counts=unflatten(leaf_counts),
            mu=unflatten(mu),
            nu=unflatten(nu),
        )
        return unflatten(steps), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def build_optimizer(
    optim_config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformationExtraArgs:
    """The optimiser named by ``optim_config.name`` with its step learning-rate schedule (§10.1).

    Reads ``name, lr, b1, b2, eps, weight_decay, lr_decay_epochs, lr_decay_factor``.
    """
    missing = [field for field in _OPTIMIZER_FIELDS if field not in optim_config]
    if missing:
        raise ValueError(
            f"the optimiser config lacks the fields {missing}; it needs all of "
            f"{list(_OPTIMIZER_FIELDS)}."
        )
    if optim_config.name not in OPTIMIZER_NAMES:
        raise ValueError(
            f"unknown optimiser name {optim_config.name!r}; valid names: {list(OPTIMIZER_NAMES)}."
        )
    schedule = step_learning_rate(
        optim_config.lr,
        steps_per_epoch,
        decay_epochs=optim_config.lr_decay_epochs,
        decay_factor=optim_config.lr_decay_factor,
    )
    return reference_adam(
        schedule,
        b1=optim_config.b1,
        b2=optim_config.b2,
        eps=optim_config.eps,
        weight_decay=optim_config.weight_decay,
    )
