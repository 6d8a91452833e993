"""Tiny synthetic training for method plug-ins: the real jitted step and the real host hooks on a
mesh of chosen devices, with in-memory batches standing in for the data pipeline."""

import functools
import itertools
import json
import math
import os

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from tiny_config import tiny_digit_config

from mlrpl_jax.config import base_config
from mlrpl_jax.core import checkpointing, optim, parallel, train
from mlrpl_jax.core.host_context import HostContext
from mlrpl_jax.core.train import create_train_state, jit_train_step, make_train_step
from mlrpl_jax.core.train_state import split_params
from mlrpl_jax.data.info import DataInfo
from mlrpl_jax.data.label_embeddings import random_embeddings
from mlrpl_jax.data.label_graph import label_adjacency
from mlrpl_jax.data.pipeline import PartialLabelData
from mlrpl_jax.data.synthetic import SyntheticData, batch_of_rows, synthetic_data_info
from mlrpl_jax.methods import get_method_class
from mlrpl_jax.methods.base import StepContext


def synthetic_batch(
    info: DataInfo, batch_size: int, image_size: int, seed: int
) -> dict[str, np.ndarray]:
    """A training batch in the pipeline's format: Gaussian images, rows of the label matrices."""
    rng = np.random.default_rng(seed)
    return batch_of_rows(info, rng.integers(0, info.num_train, batch_size), image_size, rng)


NUM_CLASSES = 6
IMAGE_SIZE = 32
BATCH_SIZE = 8
STEPS_PER_EPOCH = 2
PASS_BATCHES = 4  # batches of a host-hook pass over the "training loader"


def tiny_config(method_name, **section):
    """The tests' tiny model (tiny_config.tiny_digit_config) for synthetic batches: the early
    stages frozen, 12-dimensional label embeddings, the paper schedule's 20 epochs, the method's
    model EMA and its section `section`."""
    config = tiny_digit_config(method_name, batch_size=BATCH_SIZE, epochs=base_config().epochs)
    config.embeddings.dim = 12
    config.model.freeze_early_stages = True
    config.ema.decay = get_method_class(method_name).model_ema_decay  # as the config factories
    config[method_name] = section
    return config


class SyntheticTrainingData:
    """Seeded synthetic batches: `batch(step)` for the step, `train_batches` for host passes."""

    def __init__(self):
        self.info = synthetic_data_info(NUM_CLASSES, 64, known_ratio=0.5, positive_rate=0.4)

    def batch(self, step):
        return synthetic_batch(self.info, BATCH_SIZE, IMAGE_SIZE, seed=step)

    def train_batches(self, epoch, global_batch_size, process_index=0, process_count=1):
        del process_index, process_count  # one process
        return [
            synthetic_batch(self.info, global_batch_size, IMAGE_SIZE, seed=1000 * (epoch + 1) + k)
            for k in range(PASS_BATCHES)
        ]

    def eval_batches(self, global_batch_size, *, split="train", process_index=0, process_count=1):
        """Every training row once, in order (HostContext.training_set_pass)."""
        return SyntheticData(self.info, IMAGE_SIZE).eval_batches(
            global_batch_size, split=split, process_index=process_index, process_count=process_count
        )


class RecordedBatches:
    """A real run's data (PartialLabelData) for Runner: the host hooks read it as the run does,
    and the steps from `start` on take the batches of `epoch` in the run's order."""

    def __init__(self, data, epoch, start, num_steps, batch_size):
        self.data, self.start = data, start
        self.batches = list(itertools.islice(data.train_batches(epoch, batch_size), num_steps))

    def batch(self, step):
        return self.batches[step - self.start]

    def train_batches(self, *args, **kwargs):
        return self.data.train_batches(*args, **kwargs)

    def eval_batches(self, *args, **kwargs):
        return self.data.eval_batches(*args, **kwargs)


def build(method_class, config, data):
    method = method_class(
        config,
        data.info,
        random_embeddings(NUM_CLASSES, 12),
        label_adjacency(data.info.train_partial_labels),
    )
    optimizer = optim.build_optimizer(config.optim, STEPS_PER_EPOCH)
    return method, optimizer, create_train_state(method, optimizer, config)


class Runner:
    """Trains `method` on a mesh of `devices`, calling on_epoch_start at every epoch boundary.

    `data.batch(step)` is the step's global batch; the host hooks read `data` as they read the
    pipeline (SyntheticTrainingData, or RecordedBatches over a real PartialLabelData)."""

    def __init__(
        self,
        method,
        optimizer,
        data,
        devices,
        steps_per_epoch=STEPS_PER_EPOCH,
        batch_size=BATCH_SIZE,
    ):
        self.method, self.data, self.steps_per_epoch = method, data, steps_per_epoch
        self.mesh = parallel.create_mesh(devices)
        self.step_fn = jit_train_step(
            make_train_step(method, optimizer, steps_per_epoch), self.mesh
        )
        self.host = HostContext.on_mesh(data, self.mesh, batch_size)

    def replicate(self, state):
        return parallel.replicate(state, self.mesh)

    def run(self, state, num_steps):
        """(state after num_steps more steps, the steps' scalars)."""
        history = []
        for _ in range(num_steps):
            step = int(jax.device_get(state.step))
            if step % self.steps_per_epoch == 0:
                state = self.method.on_epoch_start(state, step // self.steps_per_epoch, self.host)
            state, scalars = self.step_fn(
                state, parallel.to_global(self.data.batch(step), self.mesh)
            )
            history.append(jax.device_get(scalars))
        return state, history


def assert_trees_close(a, b, rtol, atol, scaled_atol=0.0):
    """Leaf-wise allclose; `scaled_atol` adds an absolute tolerance relative to the leaf's scale."""
    flat_a, tree_a = jax.tree.flatten(jax.device_get(a))
    flat_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        x, y = np.asarray(x), np.asarray(y)
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol + scaled_atol * scale)


# ----------------------------------------------------------------------------------------------
# Tolerances of a change of execution layout (1 vs 8 devices, 2 processes vs 1, a checkpoint of
# 8 devices continued on 1). The layouts run the same float32 program except for the order of
# its sums: reductions over the batch (batch-norm statistics, loss means, gradient sums) are
# split into per-device partial sums and all-reduced (in-process or by gloo, in any order), and
# XLA may block per-example contractions differently for another per-device batch.

F32_EPS = float(np.finfo(np.float32).eps)  # 2^-23 = 2u, u the unit round-off of float32


def longest_float32_sum(fn, *args) -> int:
    """Number of terms of the longest float32 sum in `fn(*args)`: the contraction length of every
    dot_general and convolution and the reduced size of every reduce_sum/cumsum, in the traced
    program and every sub-program (forward and backward)."""
    longest, pending = 1, [jax.make_jaxpr(fn)(*args).jaxpr]
    while pending:
        jaxpr = pending.pop()
        for eqn in jaxpr.eqns:
            pending.extend(jax.extend.core.jaxprs_in_params(eqn.params))
            if not eqn.outvars or getattr(eqn.outvars[0].aval, "dtype", None) != np.float32:
                continue
            name, shapes = eqn.primitive.name, [getattr(v.aval, "shape", ()) for v in eqn.invars]
            if name == "dot_general":
                (contracting, _), _ = eqn.params["dimension_numbers"]
                terms = [shapes[0][axis] for axis in contracting]
            elif (
                name == "conv_general_dilated"
            ):  # rhs_spec = (out, in, *spatial) axes of the kernel
                rhs_spec = eqn.params["dimension_numbers"].rhs_spec
                terms = [shapes[1][axis] for axis in rhs_spec[1:]]
            elif name == "reduce_sum":
                terms = [shapes[0][axis] for axis in eqn.params["axes"]]
            elif name == "cumsum":
                terms = [shapes[0][eqn.params["axis"]]]
            else:
                continue
            longest = max(longest, int(np.prod(terms)))
    return longest


def longest_sum_of_loss(method, state, batch, steps_per_epoch=STEPS_PER_EPOCH) -> int:
    """`longest_float32_sum` of the method's loss and its gradients on `batch`: the sums every
    compared quantity of a step is made of. (The step's gradient norm also sums whole leaves,
    but over replicated gradients, in the same order in every layout.)"""
    ctx = StepContext(
        epoch=jnp.int32(0),
        step_in_epoch=jnp.int32(0),
        rng=jax.random.PRNGKey(0),
        steps_per_epoch=steps_per_epoch,
    )

    def loss_and_grads(params, method_state, batch):
        # The loss sees the step's training batch (its labels completed by the method's
        # training_labels, the partial labels kept beside them), as in core/train.py.
        batch = train.training_batch(method, method_state, batch)
        return train.loss_gradients_and_diagnostics(
            method, state.replace(params=params, method_state=method_state), batch, ctx
        )

    return longest_float32_sum(loss_and_grads, state.params, state.method_state, batch)


def reduction_rtol(num_terms: int) -> float:
    """How far two summation orders of the same float32 sum of `num_terms` terms can differ,
    relative to the sum of the terms' magnitudes: each order is within (n - 1) u sum|x_i| of the
    exact sum (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §4.2), so two
    differ by less than n eps sum|x_i|.

    Used, with n = the step's longest sum (`longest_sum_of_loss`), as the tolerance of every
    forward quantity of a layout change: losses, logged metrics, batch-norm statistics, features
    kept in the method state. That is a bound for one sum; for the composed step it relies on
    (i) round-off not growing through the network faster than that bound (a sum's typical error
    is ~sqrt(n) u, far below n eps), and (ii) the parameter differences beyond round-off that
    Adam produces (assert_params_within_adam_bound) sitting on entries whose gradient cancels
    to round-off, which change the loss only to second order. In the 1 vs 8 device tests the
    differences measured reach 6 % of it.
    """
    return num_terms * F32_EPS


def paired_leaves(a, b):
    """(key path, leaf of a, leaf of b) as float64 arrays, for two trees of the same structure."""
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(jax.device_get(a))
    flat_b, tree_b = jax.tree.flatten(jax.device_get(b))
    assert tree_a == tree_b
    for (path, x), y in zip(flat_a, flat_b):
        yield path, np.asarray(x, np.float64), np.asarray(y, np.float64)


def assert_layout_close(a, b, num_terms):
    """Leaf-wise |a - b| <= reduction_rtol(num_terms) x the leaf's largest magnitude (a sum's
    round-off scales with its terms, not with the result: entries near 0 get the leaf's scale)."""
    rtol = reduction_rtol(num_terms)
    for path, x, y in paired_leaves(a, b):
        scale = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(y), initial=0.0)))
        error = np.max(np.abs(x - y), initial=0.0)
        assert error <= rtol * scale, (
            f"{jax.tree_util.keystr(path)}: max |a - b| = {error:.3g} > {rtol:.3g} x {scale:.3g} "
            f"(n = {num_terms} terms)"
        )


def adam_step_bound(count: int, b1: float, b2: float) -> float:
    """Largest |Δθ| / lr of Adam's step number `count` (bias-corrected, eps >= 0), over every
    gradient sequence g_1..g_t: with m_t = (1-b1) Σ b1^(t-s) g_s and v_t = (1-b2) Σ b2^(t-s) g_s²,
    Cauchy-Schwarz gives |m_t| <= (1-b1) sqrt(Σ_{j<t} γ^j) sqrt(v_t / (1-b2)), γ = b1²/b2, so

        |Δθ_t| / lr = |m_t| / (1-b1^t) / sqrt(v_t / (1-b2^t)) <= (1-b1) sqrt(1-b2^t) sqrt(Σ_{j<t} γ^j)
                                                                  / ((1-b1^t) sqrt(1-b2)).

    This is 1 at t = 1 (the step is lr g / (|g| + eps)), about 1.01 for t <= 5 with 0.9/0.999,
    and tends to (1-b1)/sqrt((1-b2)(1-γ)) = 7.3 (Kingma & Ba's §2.1 value (1-b1)/sqrt(1-b2) = 3.16
    is the one-gradient case; growing gradients reach 7.3). Coupled L2 (g + wd θ) is a gradient
    like any other, a skipped step moves nothing and the [0, 1] projection of SARB/DSRB's α, β
    does not move a point away from its start in [0, 1]."""
    if not (0.0 <= b1 < 1.0 and 0.0 < b2 < 1.0):
        raise ValueError(f"need 0 <= b1 < 1 and 0 < b2 < 1, got {b1}, {b2}")
    gamma = b1 * b1 / b2
    geometric = count if gamma == 1.0 else (1.0 - gamma**count) / (1.0 - gamma)
    return (
        (1.0 - b1)
        * math.sqrt(1.0 - b2**count)
        * math.sqrt(geometric)
        / ((1.0 - b1**count) * math.sqrt(1.0 - b2))
    )


def adam_displacement_bound(learning_rates, b1: float, b2: float, first_count: int = 1) -> float:
    """Largest |θ_k - θ_0| over k Adam steps with learning rates `learning_rates` (the
    optimiser's count at the first one being `first_count`), for any gradients. A leaf that
    became active late (lazy leaves: HST margins, SARB α, β) has a smaller count of its own, so
    each step is bounded by the largest step bound up to its count."""
    total, largest = 0.0, 0.0
    for index, lr in enumerate(learning_rates):
        largest = max(largest, adam_step_bound(first_count + index, b1, b2))
        total += float(lr) * largest
    return total


def scheduled_learning_rates(optim_config, steps_per_epoch: int, start: int, num_steps: int):
    """The learning rates of steps start..start+num_steps-1 under the run's step schedule."""
    schedule = optim.step_learning_rate(
        optim_config.lr,
        steps_per_epoch,
        decay_epochs=optim_config.lr_decay_epochs,
        decay_factor=optim_config.lr_decay_factor,
    )
    return [float(schedule(step)) for step in range(start, start + num_steps)]


def assert_params_within_adam_bound(
    a, b, optim_config, steps_per_epoch, num_steps, num_terms, start=0
):
    """Parameters of two layouts after `num_steps` Adam steps from the same state at `start`.

    Where a gradient is well above its round-off the two runs take the same step up to
    round-off (reduction_rtol(num_terms) of the leaf's scale); where it cancels to round-off
    (Adam divides by sqrt(v) ~ |g|, so relative round-off in g becomes an O(lr) change of the
    step) each run still moves at most `adam_displacement_bound`, so the two differ by at most
    twice that. Every entry is checked against the sum of both parts; nothing is fitted. The
    Adam part holds for any two gradient sequences, so this check cannot see a wrong gradient;
    the losses, statistics and Adam moments compared beside it can.
    """
    rates = scheduled_learning_rates(optim_config, steps_per_epoch, start, num_steps)
    adam = 2 * adam_displacement_bound(
        rates, optim_config.b1, optim_config.b2, first_count=start + 1
    )
    rtol = reduction_rtol(num_terms)
    for path, x, y in paired_leaves(a, b):
        scale = float(np.max(np.abs(y), initial=0.0))
        error = np.max(np.abs(x - y), initial=0.0)
        assert error <= rtol * scale + adam, (
            f"{jax.tree_util.keystr(path)}: max |a - b| = {error:.3g} > {rtol:.3g} x {scale:.3g} "
            f"+ Adam bound {adam:.3g}"
        )


def assert_adam_moments_within_bound(
    opt_a, opt_b, optim_config, steps_per_epoch, num_steps, num_terms, start=0
):
    """Reference-Adam states of two layouts after `num_steps` steps from the same state.

    Step counts are exact. The moments are weighted sums of the steps' ĝ = g + wd θ: with
    δ = max_s |ĝ_a,s - ĝ_b,s|, |m_a - m_b| <= (1 - b1^t) δ, and, sqrt(v) being a weighted
    2-norm of the ĝ_s (weights (1-b2) b2^(t-s), summing to 1 - b2^t), Minkowski's inequality
    gives |sqrt(v_a) - sqrt(v_b)| <= sqrt(1 - b2^t) δ. Per step the gradients differ by the
    round-off of their sums (reduction_rtol(num_terms) x G, G >= every |ĝ_s| of the leaf:
    v_t >= (1-b2) b2^(t-1) ĝ_s²) and the weight decay by wd x the parameters' difference
    (twice the Adam displacement bound), so δ <= rtol G + 2 wd D.
    """
    opt_a, opt_b = jax.device_get(opt_a), jax.device_get(opt_b)
    assert int(opt_a.count) == int(opt_b.count)
    assert jax.tree.map(int, opt_a.leaf_counts) == jax.tree.map(int, opt_b.leaf_counts)
    b1, b2, wd = optim_config.b1, optim_config.b2, optim_config.weight_decay
    rates = scheduled_learning_rates(optim_config, steps_per_epoch, start, num_steps)
    displacement = adam_displacement_bound(rates, b1, b2, first_count=start + 1)
    rtol = reduction_rtol(num_terms)
    leaves = zip(
        jax.tree_util.tree_flatten_with_path(opt_a.leaf_counts)[0],
        *(jax.tree.leaves(tree) for tree in (opt_a.mu, opt_b.mu, opt_a.nu, opt_b.nu)),
    )
    for (path, count), mu_a, mu_b, nu_a, nu_b in leaves:
        t = int(count)
        if t == 0:  # never active: both untouched
            np.testing.assert_array_equal(mu_a, mu_b)
            continue
        mu_a, mu_b, nu_a, nu_b = (np.asarray(x, np.float64) for x in (mu_a, mu_b, nu_a, nu_b))
        gradient_scale = math.sqrt(max(nu_a.max(), nu_b.max()) / ((1 - b2) * b2 ** (t - 1)))
        delta = rtol * gradient_scale + 2 * wd * displacement
        name = jax.tree_util.keystr(path)
        # The moments' own float32 rounding: reduction_rtol of their scale.
        assert np.max(np.abs(mu_a - mu_b)) <= (1 - b1**t) * delta + rtol * np.max(np.abs(mu_b)), (
            name
        )
        root_a, root_b = np.sqrt(nu_a), np.sqrt(nu_b)
        assert (
            np.max(np.abs(root_a - root_b)) <= math.sqrt(1 - b2**t) * delta + rtol * root_b.max()
        ), name


def digit_run_config(method_name, data_dir, epochs, **section):
    """A short real run on the tiny digit scenes (96 training scenes, 12 steps per epoch)."""
    config = tiny_digit_config(method_name, batch_size=8, epochs=epochs, data_dir=data_dir)
    config.logging.every_steps = 6
    config.checkpoint.keep_last = 1
    config[method_name] = section
    return config


def restore_final_state(config, workdir):
    """The TrainState of the latest checkpoint that train_and_evaluate wrote in `workdir`."""
    _, _, template = train.build_run(config, train.open_data(config), parallel.create_mesh())
    checkpointer = checkpointing.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep_last=1, keep_best=0, async_save=False
    )
    state, _ = checkpointer.restore(checkpointer.latest_step(), template)
    checkpointer.close()
    return state


def digit_run_longest_sum(config) -> int:
    """longest_sum_of_loss of a digit-scene run's step, on a batch of its global shape."""
    data = PartialLabelData(
        dataset=config.data.name,
        data_dir=config.data.data_dir,
        image_size=config.data.image_size,
        known_ratio=config.known_ratio,
        seed=config.seed,
    )
    method = train.build_method(config, data)
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    state = create_train_state(method, optim.build_optimizer(config.optim, steps_per_epoch), config)
    batch = synthetic_batch(data.info, config.batch_size, config.data.image_size, seed=0)
    return longest_sum_of_loss(method, state, batch, steps_per_epoch)


def logged_train_metrics(workdir):
    """The train/* scalars logged by train_and_evaluate, one dict per logging window."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    return [entry for entry in entries if "train/loss" in entry]


def paper_trainable_parameter_count(method_class, num_classes):
    """Trainable parameters of the method's ResNet-101 paper model (shapes only, nothing run)."""
    config = base_config()
    config.method = method_class.name
    method = method_class(
        config,
        synthetic_data_info(num_classes, 4, known_ratio=0.5),
        np.zeros((num_classes, 300), np.float32),
        np.eye(num_classes, dtype=np.float32),
    )
    shapes = jax.eval_shape(
        functools.partial(method.init_variables, image_shape=(1, 448, 448, 3)),
        jax.random.PRNGKey(0),
    )
    trainable, _ = split_params(shapes["params"], config.model.freeze_early_stages)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(trainable))
