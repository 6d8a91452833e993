"""One reference training step of SST/HST on the head-only model (tests/data/vectors sst_head, hst_head).

The recorded model is the reference head on a (B, 2048, 4, 4) feature map; the method runs with
its model's base swapped for a SharedHead, so the loss code under test is the real one.
Torch-layout tensors are converted with the project's converters.
"""
import jax
import jax.numpy as jnp
import numpy as np

from mlrpl_jax import optim
from mlrpl_jax.config import base_config
from mlrpl_jax.data.synthetic import synthetic_data_info
from mlrpl_jax.methods.base import StepContext
from mlrpl_jax.models import torch_layout
from mlrpl_jax.models.cooccurrence import cooccurrence_variables_from_torch
from mlrpl_jax.models.network import SharedHead
from mlrpl_jax.train import make_train_step
from mlrpl_jax.train_state import TrainState

NUM_CLASSES = 80
STEPS_PER_EPOCH = 10
HEAD_RTOL, HEAD_ATOL = 1e-4, 1e-5  # the vectors' README: ~1e-4 for heads
# Gradients are long reductions (2048-channel conv, 80 classes x 16 positions): their error is
# relative to the leaf's scale, so entries near 0 get an absolute tolerance of 1e-4 x max |g|.
GRAD_SCALED_ATOL, GRAD_ATOL = 1e-4, 1e-7
TORCH_MARGINS = {"intraMargin": "intra_margin", "interMargin": "inter_margin"}
_HEAD_FIELDS = ("num_classes", "word_embeddings", "adjacency", "feature_dim", "attention_dim",
                "output_dim", "ggnn_steps", "dtype")


def torch_entries(v: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """{torch name: array} of the entries `kind/<name>` (kind: param, grad, param_after, buffer_after)."""
    return {key.removeprefix(kind + "/"): value for key, value in v.items() if key.startswith(kind + "/")}


def reference_variables(v: dict[str, np.ndarray], kind: str) -> dict[str, dict]:
    """The state dict with the `kind` entries substituted, as this model's {'params', 'batch_stats'}."""
    state = {**torch_entries(v, "param"), **torch_entries(v, kind)}
    variables, unused = torch_layout.head_variables_from_torch(state)
    params = dict(variables["params"])
    params["cooccurrence"] = cooccurrence_variables_from_torch(unused)
    for torch_name, name in TORCH_MARGINS.items():
        if torch_name in unused:
            params[name] = np.asarray(unused[torch_name], np.float32)
    return {"params": params, "batch_stats": variables["batch_stats"]}


def head_only(method_class):
    """`method_class` whose model reads feature maps through a SharedHead instead of images."""

    class HeadOnly(method_class):
        def build_model(self, kwargs):
            return self.network(SharedHead(**{field: kwargs[field] for field in _HEAD_FIELDS}))

    return HeadOnly


def head_config(method_name: str, section):
    config = base_config()
    config.method = method_name
    config.embeddings.dim = 24
    config.model.update(feature_dim=32, attention_dim=16, output_dim=32, ggnn_steps=3)
    config[method_name] = section
    return config


def build(method_class, config, v):
    state_dict = torch_entries(v, "param")
    words, adjacency = torch_layout.head_constants_from_torch(state_dict)
    info = synthetic_data_info(NUM_CLASSES, 8, known_ratio=0.5)
    return head_only(method_class)(config, info, words, adjacency)


def reference_step(method, v, method_state):
    """Runs the recorded step; returns (forward output, loss, grads, metrics, state after)."""
    b1, b2 = (float(beta) for beta in v["adam_betas"])
    optimizer = optim.reference_adam(float(v["adam_lr"]), b1=b1, b2=b2, eps=float(v["adam_eps"]),
                                     weight_decay=float(v["adam_weight_decay"]))
    variables = reference_variables(v, "param")
    epoch = int(v["hp/epoch"])
    state = TrainState(step=jnp.int32(epoch * STEPS_PER_EPOCH), params=variables["params"],
                       frozen_params={}, batch_stats=variables["batch_stats"],
                       opt_state=optimizer.init(variables["params"]), method_state=method_state,
                       rng=jax.random.PRNGKey(0))
    batch = {"image": jnp.asarray(v["input_featuremap"].transpose(0, 2, 3, 1)),  # NCHW -> NHWC
             "labels": jnp.asarray(v["target"])}
    ctx = StepContext(epoch=jnp.int32(epoch), step_in_epoch=jnp.int32(0),
                      rng=jax.random.fold_in(state.rng, state.step), steps_per_epoch=STEPS_PER_EPOCH)

    def loss_fn(params):
        return method.loss(state.variables(params), state.method_state, batch, ctx)

    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(state.params)
    output = method.model.apply(state.variables(), batch["image"], train=True,
                                mutable=["batch_stats"])[0]
    after, scalars = jax.jit(make_train_step(method, optimizer, STEPS_PER_EPOCH))(state, batch)
    np.testing.assert_allclose(scalars["loss"], loss, rtol=1e-6)
    return output, loss, grads, aux.metrics, after


def _flat(tree) -> dict:
    return dict(jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0])


def grad_tolerance(grad: np.ndarray) -> np.ndarray:
    """Elementwise absolute tolerance of a gradient leaf."""
    return GRAD_ATOL + GRAD_SCALED_ATOL * np.max(np.abs(grad)) + HEAD_RTOL * np.abs(grad)


def assert_grads_match(actual, expected):
    flat_actual, flat_expected = _flat(actual), _flat(expected)
    assert flat_actual.keys() == flat_expected.keys()
    for path, value in flat_expected.items():
        np.testing.assert_array_less(np.abs(flat_actual[path] - value), grad_tolerance(value),
                                     err_msg=jax.tree_util.keystr(path))


def assert_tree_matches(actual, expected, rtol=HEAD_RTOL, atol=HEAD_ATOL):
    flat_actual, flat_expected = _flat(actual), _flat(expected)
    assert flat_actual.keys() == flat_expected.keys()
    for path, value in flat_expected.items():
        np.testing.assert_allclose(flat_actual[path], value, rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path))


def assert_adam_step_matches(v, params_after):
    """Every updated parameter equals the reference's wherever the step is determined.

    The first Adam step is lr ĝ / (|ĝ| + eps), ĝ = g + wd θ: about lr sign(ĝ). Where |ĝ| is
    within the gradient tolerance of 0 (e.g. the dead attention biases, §4.8) the sign is
    rounding noise, so there we only check |Δθ| <= lr.
    """
    lr, weight_decay = float(v["adam_lr"]), float(v["adam_weight_decay"])
    before, grads, expected, actual = (_flat(tree) for tree in (
        reference_variables(v, "param")["params"], reference_variables(v, "grad")["params"],
        reference_variables(v, "param_after")["params"], params_after))
    assert actual.keys() == expected.keys()
    resolved_count = total_count = 0
    for path in expected:
        effective = grads[path] + weight_decay * before[path]
        resolved = np.abs(effective) > grad_tolerance(grads[path])
        name = jax.tree_util.keystr(path)
        np.testing.assert_allclose(actual[path][resolved], expected[path][resolved], rtol=1e-5,
                                   atol=1e-6, err_msg=name)
        assert np.all(np.abs(actual[path] - before[path]) <= 1.001 * lr), name
        resolved_count += int(resolved.sum())
        total_count += resolved.size
    assert resolved_count > 0.99 * total_count


def check_forward_grads_and_update(v, output, loss, grads, after):
    """Forward outputs, total loss, every gradient, every updated parameter and BN buffer."""
    np.testing.assert_allclose(output.logits, v["train/forward/result"], rtol=HEAD_RTOL, atol=HEAD_ATOL)
    np.testing.assert_allclose(output.pair_logits, v["train/forward/intra_cooccurrence"],
                               rtol=HEAD_RTOL, atol=HEAD_ATOL)
    np.testing.assert_allclose(output.semantic, v["train/forward/semantic_feature"],
                               rtol=HEAD_RTOL, atol=HEAD_ATOL)
    np.testing.assert_allclose(loss, v["train/total_loss"], rtol=HEAD_RTOL)
    assert torch_entries(v, "grad").keys() == torch_entries(v, "param_after").keys()
    assert_grads_match(grads, reference_variables(v, "grad")["params"])
    assert_adam_step_matches(v, after.params)
    assert_tree_matches(after.batch_stats, reference_variables(v, "buffer_after")["batch_stats"])
