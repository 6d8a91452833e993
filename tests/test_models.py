"""Parity and behaviour tests of the shared network (docs/methods/network.md §4)."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_torch_layout

from mlrpl_jax.models import torch_layout
from mlrpl_jax.models.batch_norm import TorchBatchNorm
from mlrpl_jax.models.classifier import ElementWiseLinear
from mlrpl_jax.models.ggnn import GatedGNN
from mlrpl_jax.models.network import (
    FROZEN_BACKBONE_MODULES,
    Features,
    NetworkOutput,
    SharedHead,
    SharedNetwork,
    is_frozen_param,
)
from mlrpl_jax.models.resnet import ResNet
from mlrpl_jax.models.semantic_decoupling import SemanticDecoupling

RTOL, ATOL = 1e-5, 1e-6
HEAD_RTOL, HEAD_ATOL = 1e-4, 1e-5


def torch_params(vectors: dict[str, np.ndarray], prefix: str = "param/") -> dict[str, np.ndarray]:
    return {k.removeprefix(prefix): v for k, v in vectors.items() if k.startswith(prefix)}


def flax_grads_as_torch(grads: dict, key_map: torch_layout.KeyMap) -> dict[str, np.ndarray]:
    """Gradients in torch layout for every key of key_map (test-side inverse of the converter)."""
    flat = flax.traverse_util.flatten_dict(grads)
    out = {}
    for torch_key, (collection, path, _) in key_map.items():
        if collection != "params":
            continue
        value = np.asarray(flat[path])
        if value.ndim == 4:  # conv (kh, kw, I, O) -> (O, I, kh, kw)
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2 and not (
            torch_key == "weight" or torch_key.endswith("classifiers.weight")
        ):
            value = value.T  # linear (in, out) -> (out, in)
        out[torch_key] = value
    return out


def assert_grads_match(
    ours: dict[str, np.ndarray], ref: dict[str, np.ndarray], rtol: float, atol: float
) -> None:
    for key, value in ours.items():
        np.testing.assert_allclose(value, ref[f"grad/{key}"], rtol=rtol, atol=atol, err_msg=key)


# ----------------------------------------------------------------------------- semantic decoupling


def test_semantic_decoupling_matches_reference(vectors):
    v = vectors("semantic_decoupling")
    key_map = reference_torch_layout.semantic_decoupling_key_map()
    variables = torch_layout.variables_from_torch(torch_params(v), key_map)
    batch, dim, h, w = v["img_featuremap"].shape
    features = jnp.asarray(v["img_featuremap"].transpose(0, 2, 3, 1).reshape(batch, h * w, dim))
    words = jnp.asarray(v["word_features"])
    module = SemanticDecoupling(attention_dim=8)

    attention, semantic = module.apply(variables, features, words)
    classes = words.shape[0]
    np.testing.assert_allclose(semantic, v["semantic_feature"], rtol=RTOL, atol=ATOL)
    coefficient = np.asarray(attention).reshape(batch, h, w, classes)
    np.testing.assert_allclose(coefficient, v["coefficient"], rtol=RTOL, atol=ATOL)
    weighted_map = coefficient[..., None] * np.asarray(features).reshape(
        batch, h, w, 1, dim
    )  # (B, H, W, C, D)
    np.testing.assert_allclose(weighted_map, v["featuremap_with_coef"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        np.abs(weighted_map).sum(-1), v["visualize_abs_sum"], rtol=RTOL, atol=ATOL
    )

    cot_semantic = jnp.asarray(v["cot/semantic_feature"])
    cot_attention = jnp.asarray(v["cot/coefficient"].reshape(batch, h * w, classes))

    def objective(params, x):
        att, sem = module.apply({"params": params}, x, words)
        return jnp.sum(sem * cot_semantic) + jnp.sum(att * cot_attention)

    param_grads, input_grad = jax.grad(objective, argnums=(0, 1))(variables["params"], features)
    ours = flax_grads_as_torch(param_grads, key_map)
    for key in ("fc1.weight", "fc2.weight", "fc3.weight", "fc4.weight"):
        np.testing.assert_allclose(ours[key], v[f"grad/{key}"], rtol=RTOL, atol=ATOL, err_msg=key)
    for key in (
        "fc3.bias",
        "fc4.bias",
    ):  # dead biases (docs/methods/network.md §4.8.1): zero up to rounding
        assert np.max(np.abs(ours[key])) < 1e-6, key
        assert np.max(np.abs(v[f"grad/{key}"])) < 1e-6, key
    input_grad = np.asarray(input_grad).reshape(batch, h, w, dim).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(input_grad, v["grad_input/img_featuremap"], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- gated GNN


def test_gated_gnn_matches_reference(vectors):
    v = vectors("gated_gnn")
    adjacency = v["param/inMatrix"]
    np.testing.assert_array_equal(v["param/outMatrix"], adjacency.T)
    key_map = reference_torch_layout.gated_gnn_key_map()
    state = {k: a for k, a in torch_params(v).items() if k not in ("inMatrix", "outMatrix")}
    variables = torch_layout.variables_from_torch(state, key_map)
    nodes = jnp.asarray(v["input"])
    module = GatedGNN(features=nodes.shape[-1], steps=3)

    output = module.apply(variables, nodes, jnp.asarray(adjacency))
    np.testing.assert_allclose(output, v["output"], rtol=RTOL, atol=ATOL)

    cot = jnp.asarray(v["cot/output"])

    def objective(params, x):
        return jnp.sum(module.apply({"params": params}, x, jnp.asarray(adjacency)) * cot)

    param_grads, input_grad = jax.grad(objective, argnums=(0, 1))(variables["params"], nodes)
    assert_grads_match(flax_grads_as_torch(param_grads, key_map), v, RTOL, ATOL)
    np.testing.assert_allclose(input_grad, v["grad_input/input"], rtol=RTOL, atol=ATOL)


def naive_ggnn(nodes: np.ndarray, adjacency: np.ndarray, params: dict, steps: int) -> np.ndarray:
    """Per-node Python loop over the unfused GGNN equations (docs/methods/network.md §4.4), float64."""

    def lin(name, x):
        return x @ params[name]["kernel"] + params[name]["bias"]

    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    h = nodes.astype(np.float64)
    batch, classes, _ = h.shape
    for _ in range(steps):
        new_h = np.empty_like(h)
        for b in range(batch):
            for c in range(classes):
                incoming = sum(adjacency[c, j] * h[b, j] for j in range(classes))
                outgoing = sum(adjacency[j, c] * h[b, j] for j in range(classes))
                m = np.concatenate([incoming, outgoing])
                z = sig(lin("message_update", m) + lin("state_update", h[b, c]))
                r = sig(lin("message_reset", m) + lin("state_reset", h[b, c]))
                cand = np.tanh(lin("message_candidate", m) + lin("state_candidate", r * h[b, c]))
                new_h[b, c] = (1 - z) * h[b, c] + z * cand
        h = new_h
    return h


def test_gated_gnn_equals_naive_per_node_loop():
    rng = np.random.default_rng(0)
    nodes = rng.normal(size=(2, 4, 3)).astype(np.float32)
    adjacency = rng.uniform(size=(4, 4)).astype(np.float32)
    module = GatedGNN(features=3, steps=2)
    params = module.init(jax.random.key(1), jnp.asarray(nodes), jnp.asarray(adjacency))["params"]
    ours = module.apply({"params": params}, jnp.asarray(nodes), jnp.asarray(adjacency))
    params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    np.testing.assert_allclose(
        ours, naive_ggnn(nodes, adjacency, params64, steps=2), rtol=1e-5, atol=1e-6
    )


# ----------------------------------------------------------------------------- element-wise classifier


def test_element_wise_layer_matches_reference(vectors):
    v = vectors("element_wise_layer")
    key_map = reference_torch_layout.element_wise_key_map()
    variables = torch_layout.variables_from_torch(torch_params(v), key_map)
    x = jnp.asarray(v["input"])
    module = ElementWiseLinear(num_classes=x.shape[1], features=x.shape[2])
    np.testing.assert_allclose(module.apply(variables, x), v["output"], rtol=RTOL, atol=ATOL)

    cot = jnp.asarray(v["cot/output"])
    param_grads, input_grad = jax.grad(
        lambda p, x: jnp.sum(module.apply({"params": p}, x) * cot), argnums=(0, 1)
    )(variables["params"], x)
    assert_grads_match(flax_grads_as_torch(param_grads, key_map), v, RTOL, ATOL)
    np.testing.assert_allclose(input_grad, v["grad_input/input"], rtol=RTOL, atol=ATOL)


def test_element_wise_layer_rejects_wrong_shape():
    module = ElementWiseLinear(num_classes=5, features=16)
    with pytest.raises(ValueError, match="ElementWiseLinear expects inputs"):
        module.init(jax.random.key(0), jnp.zeros((3, 4, 16)))


# ----------------------------------------------------------------------------- shared head (SST vectors)


@pytest.fixture
def sst_head(vectors):
    v = vectors("sst_head")
    state = torch_params(v)
    words, adjacency = reference_torch_layout.head_constants_from_torch(state)
    head = SharedHead(
        num_classes=80,
        word_embeddings=words,
        adjacency=adjacency,
        feature_dim=32,
        attention_dim=16,
        output_dim=32,
    )
    variables, unused = reference_torch_layout.head_variables_from_torch(state)
    feature_map = jnp.asarray(v["input_featuremap"].transpose(0, 2, 3, 1))  # NCHW -> NHWC
    return v, head, variables, unused, feature_map


def test_shared_head_inference_matches_reference(sst_head):
    v, head, variables, unused, feature_map = sst_head
    assert sorted(unused) == sorted(
        k.removeprefix("param/") for k in v if k.startswith("param/intra_")
    )
    out = head.apply(variables, feature_map, False)
    assert isinstance(out, NetworkOutput) and isinstance(out.features, Features)
    assert out.features.grid == (4, 4)
    assert out.features.reduced.shape == (3, 16, 32) and out.features.attention.shape == (3, 16, 80)
    np.testing.assert_allclose(out.logits, v["eval/result"], rtol=HEAD_RTOL, atol=HEAD_ATOL)
    np.testing.assert_allclose(
        out.features.semantic, v["eval/semantic_feature"], rtol=HEAD_RTOL, atol=HEAD_ATOL
    )


def test_shared_head_training_forward_matches_reference(sst_head):
    v, head, variables, _, feature_map = sst_head
    out, updated = head.apply(variables, feature_map, True, mutable=["batch_stats"])
    np.testing.assert_allclose(
        out.logits, v["train/forward/result"], rtol=HEAD_RTOL, atol=HEAD_ATOL
    )
    np.testing.assert_allclose(
        out.features.semantic, v["train/forward/semantic_feature"], rtol=HEAD_RTOL, atol=HEAD_ATOL
    )
    stats = updated["batch_stats"]["reduction_bn"]
    np.testing.assert_allclose(
        stats["mean"], v["buffer_after/changeChannel.1.running_mean"], rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        stats["var"], v["buffer_after/changeChannel.1.running_var"], rtol=RTOL, atol=ATOL
    )


def test_shared_head_methods_compose_under_jit(sst_head):
    _, head, variables, _, feature_map = sst_head
    apply = jax.jit(head.apply, static_argnames=("train", "method"))
    features = apply(variables, feature_map, train=False, method=SharedHead.extract)
    logits = apply(variables, features.semantic, method=SharedHead.classify)
    np.testing.assert_allclose(
        logits, head.apply(variables, feature_map, False).logits, rtol=1e-6, atol=1e-6
    )


# ----------------------------------------------------------------------------- batch norm


def numpy_torch_batch_norm(x, scale, bias, mean, var, train, momentum=0.1, eps=1e-5):
    """PyTorch BatchNorm on channel-last x: returns (y, new running mean, new running var)."""
    axes = tuple(range(x.ndim - 1))
    if train:
        batch_mean, batch_var = x.mean(axes), x.var(axes)
        n = x.size // x.shape[-1]
        new_mean = (1 - momentum) * mean + momentum * batch_mean
        new_var = (1 - momentum) * var + momentum * x.var(axes, ddof=1)
        assert np.allclose(x.var(axes, ddof=1), batch_var * n / (n - 1))
    else:
        batch_mean, batch_var, new_mean, new_var = mean, var, mean, var
    y = (x - batch_mean) / np.sqrt(batch_var + eps) * scale + bias
    return y, new_mean, new_var


@pytest.mark.parametrize("train", [True, False])
def test_torch_batch_norm_matches_numpy(train):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3, 3, 5)) * 2 + 1).astype(np.float32)
    bn = TorchBatchNorm()
    init = bn.init(jax.random.key(0), jnp.asarray(x), use_running_average=False)
    np.testing.assert_array_equal(
        init["batch_stats"]["mean"], 0
    )  # init does not update the statistics
    np.testing.assert_array_equal(init["batch_stats"]["var"], 1)
    np.testing.assert_array_equal(init["params"]["scale"], 1)
    np.testing.assert_array_equal(init["params"]["bias"], 0)
    scale, bias = rng.normal(size=5).astype(np.float32), rng.normal(size=5).astype(np.float32)
    mean, var = (
        rng.normal(size=5).astype(np.float32),
        rng.uniform(0.5, 2, size=5).astype(np.float32),
    )
    variables = {
        "params": {"scale": scale, "bias": bias},
        "batch_stats": {"mean": mean, "var": var},
    }

    y, updated = bn.apply(
        variables, jnp.asarray(x), use_running_average=not train, mutable=["batch_stats"]
    )
    ref_y, ref_mean, ref_var = numpy_torch_batch_norm(
        x.astype(np.float64), scale, bias, mean.astype(np.float64), var.astype(np.float64), train
    )
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(updated["batch_stats"]["mean"], ref_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(updated["batch_stats"]["var"], ref_var, rtol=1e-6, atol=1e-6)


def test_torch_batch_norm_rejects_single_value_per_channel():
    with pytest.raises(ValueError, match="more than one value per channel"):
        TorchBatchNorm().init(jax.random.key(0), jnp.ones((1, 1, 1, 3)), use_running_average=False)


# ----------------------------------------------------------------------------- ResNet


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    ("depth", "size", "expected"),
    [(18, 448, (7, 7, 512)), (50, 256, (4, 4, 2048)), (101, 448, (7, 7, 2048))],
)
def test_resnet_output_shapes(depth, size, expected):
    model = ResNet(depth=depth)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (2, *expected)


def test_resnet_rejects_unknown_depth():
    with pytest.raises(ValueError, match="Unsupported ResNet depth 42"):
        ResNet(depth=42).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def _randomised_stats(variables, seed=0):
    """Non-trivial running statistics so inference-mode and batch-mode BN differ."""
    rng = np.random.default_rng(seed)
    stats = jax.tree_util.tree_map_with_path(
        lambda path, a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
        if path[-1].key == "var"
        else rng.normal(0, 0.1, a.shape).astype(np.float32),
        variables["batch_stats"],
    )
    return {"params": variables["params"], "batch_stats": stats}


def test_resnet_frozen_stages_ignore_train_flag():
    model = ResNet(depth=18, width=4)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32))
    variables = _randomised_stats(model.init(jax.random.key(0), x, train=False))

    out_train, state_train = model.apply(
        variables,
        x,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=True,
    )
    out_eval, state_eval = model.apply(
        variables, x, train=False, mutable=["intermediates"], capture_intermediates=True
    )
    for stage in ("layer1", "layer2", "layer3"):
        np.testing.assert_array_equal(
            state_train["intermediates"][stage]["__call__"][0],
            state_eval["intermediates"][stage]["__call__"][0],
        )
    assert (
        np.max(np.abs(np.asarray(out_train) - np.asarray(out_eval))) > 1e-3
    )  # layer4 BN uses batch stats
    new_stats = state_train["batch_stats"]
    assert set(new_stats) == {"bn1", "layer1", "layer2", "layer3", "layer4"}
    for name in set(FROZEN_BACKBONE_MODULES) & set(new_stats):
        jax.tree.map(np.testing.assert_array_equal, new_stats[name], variables["batch_stats"][name])
    changed = jax.tree.map(
        lambda a, b: bool(np.any(a != b)), new_stats["layer4"], variables["batch_stats"]["layer4"]
    )
    assert all(jax.tree.leaves(changed))


def _tiny_network(num_classes=5, word_dim=7, seed=0) -> SharedNetwork:
    rng = np.random.default_rng(seed)
    return SharedNetwork(
        num_classes=num_classes,
        word_embeddings=rng.normal(size=(num_classes, word_dim)).astype(np.float32),
        adjacency=rng.uniform(size=(num_classes, num_classes)).astype(np.float32),
        depth=18,
        width=4,
        feature_dim=8,
        attention_dim=6,
        output_dim=10,
    )


def test_no_gradient_reaches_frozen_params():
    model = _tiny_network()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32))
    variables = _randomised_stats(model.init(jax.random.key(0), x, train=False))
    cot = jnp.asarray(np.random.default_rng(2).normal(size=(2, 5)).astype(np.float32))

    def loss(params):
        out, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            True,
            mutable=["batch_stats"],
        )
        return jnp.sum(out.logits * cot)

    grads = flax.traverse_util.flatten_dict(jax.grad(loss)(variables["params"]))
    frozen = [p for p in grads if is_frozen_param(p)]
    trainable = [p for p in grads if not is_frozen_param(p)]
    assert {p[1] for p in frozen} == set(FROZEN_BACKBONE_MODULES)
    assert all(not np.any(np.asarray(grads[p])) for p in frozen)
    layer4 = [p for p in trainable if p[1] == "layer4"]
    assert layer4 and all(np.any(np.asarray(grads[p])) for p in layer4 if p[-1] == "kernel")


def test_is_frozen_param():
    assert is_frozen_param(("backbone", "conv1", "kernel"))
    assert is_frozen_param(("backbone", "layer2", "0", "bn1", "scale"))
    assert not is_frozen_param(("backbone", "layer4", "0", "conv1", "kernel"))
    assert not is_frozen_param(("head", "reduction_conv", "kernel"))


def test_trainable_parameter_counts():
    """docs/methods/network.md §4.9: stage 4 = 14,964,736; SARB COCO 29,628,499 minus alpha and beta."""
    classes, word_dim = 80, 300
    model = SharedNetwork(
        num_classes=classes,
        word_embeddings=np.zeros((classes, word_dim), np.float32),
        adjacency=np.zeros((classes, classes), np.float32),
    )
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
    assert _count(params["backbone"]["layer4"]) == 14_964_736
    flat = flax.traverse_util.flatten_dict(params)
    assert sum(math.prod(v.shape) for p, v in flat.items() if not is_frozen_param(p)) == 29_628_497


def test_network_methods_and_jit():
    model = _tiny_network()
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32))
    variables = model.init(jax.random.key(0), x, train=False)
    apply = jax.jit(model.apply, static_argnames=("train", "method", "mutable"))
    full, _ = apply(variables, x, train=True, mutable=("batch_stats",))
    features, _ = apply(
        variables, x, train=True, method=SharedNetwork.extract, mutable=("batch_stats",)
    )
    logits = apply(variables, features.semantic, method=SharedNetwork.classify)
    np.testing.assert_allclose(logits, full.logits, rtol=1e-6, atol=1e-6)
    assert features.grid == (1, 1) and features.semantic.shape == (2, 5, 8)


def test_pytorch_default_initialisation():
    model = _tiny_network(num_classes=50)
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    params = jax.jit(lambda x: model.init(jax.random.key(0), jnp.zeros(x.shape), train=False))(x)[
        "params"
    ]
    head = params["head"]
    fc = head["output_head"]["fc"]
    bound = 1 / math.sqrt(16)  # fan_in 2 D
    for leaf in (fc["kernel"], fc["bias"], head["ggnn"]["message_update"]["bias"]):
        assert np.max(np.abs(leaf)) <= bound and np.max(np.abs(leaf)) > 0.8 * bound
    classifier = head["output_head"]["classifiers"]
    for leaf in (classifier["kernel"], classifier["bias"]):
        assert np.max(np.abs(leaf)) <= 1 / math.sqrt(10) and np.max(np.abs(leaf)) > 0.8 / math.sqrt(
            10
        )
    np.testing.assert_array_equal(head["reduction_bn"]["scale"], 1)
    conv = np.asarray(params["backbone"]["layer4"]["0"]["conv1"]["kernel"])  # (3, 3, 16, 32)
    np.testing.assert_allclose(conv.std(), math.sqrt(2 / (3 * 3 * 32)), rtol=0.1)


BF16_U = 2.0**-8  # bfloat16's unit round-off: 8 significant bits, round to nearest


def bfloat16_rounding_sigma(head, variables, feature_shape):
    """feature_map -> per-logit standard deviation (B, C) of the bfloat16 head's rounding error,
    to first order.

    Rounding model (probabilistic error analysis: independent relative errors ε, uniform on
    [-u, u], variance u²/3): the bfloat16 head rounds its input, its parameters and the output
    of every submodule call; a relative error ε at a value z moves a logit by (∂logit/∂z) z ε, so
    the variance is u²/3 Σ ((∂logit/∂z) z)² over all those z, computed here with one Jacobian.
    Roundings inside a submodule (e.g. the attention's tanh gating) are not in the model."""
    float_head = head.clone(dtype=jnp.float32)

    def output_shapes(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            shapes.extend(
                leaf.shape
                for leaf in jax.tree.leaves(out)
                if jnp.issubdtype(leaf.dtype, jnp.floating)
            )
        return out

    shapes = []
    with flax.linen.intercept_methods(output_shapes):
        jax.eval_shape(
            lambda x: float_head.apply(variables, x, False).logits,
            jax.ShapeDtypeStruct(feature_shape, jnp.float32),
        )

    def logits(x, variables, relative_errors):
        pending = list(relative_errors)

        def perturb(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name != "__call__":
                return out
            return jax.tree.map(
                lambda leaf: leaf * (1 + pending.pop(0))
                if jnp.issubdtype(leaf.dtype, jnp.floating)
                else leaf,
                out,
            )

        with flax.linen.intercept_methods(perturb):
            return float_head.apply(variables, x, False).logits

    def sum_of_squares(jacobian, value=1.0):  # (B, C, *shape) -> (B, C)
        return jnp.sum(jnp.square(jacobian * value), axis=tuple(range(2, jacobian.ndim)))

    @jax.jit
    def sigma(feature_map):
        zeros = [jnp.zeros(shape) for shape in shapes]
        d_input, d_params, d_outputs = jax.jacrev(logits, argnums=(0, 1, 2))(
            feature_map, variables, zeros
        )
        variance = sum_of_squares(d_input, feature_map)
        variance += sum(
            sum_of_squares(j, p)
            for j, p in zip(jax.tree.leaves(d_params), jax.tree.leaves(variables))
        )
        variance += sum(sum_of_squares(j) for j in d_outputs)  # d logit / d ε = (∂logit/∂z) z
        return BF16_U / math.sqrt(3) * jnp.sqrt(variance)

    return sigma


def test_shared_head_bfloat16_compute_keeps_float32_params(sst_head):
    _, head, variables, _, feature_map = sst_head
    low = head.clone(dtype=jnp.bfloat16)
    params = low.init(jax.random.key(0), feature_map, False)["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    out = low.apply(variables, feature_map, False)
    assert out.logits.dtype == jnp.bfloat16 and out.features.semantic.dtype == jnp.bfloat16
    # bfloat16 logits = float32 logits + the bfloat16 rounding error, whose size the rounding model
    # gives for the input at hand; 5 sigma of the largest per-logit sigma (a Gaussian exceeds 5 sigma
    # with probability 6e-7, so about 1e-4 over 240 logits). Offline, over the recorded input and
    # 20 fresh ones, the error reached 1.9 sigma (the roundings inside submodules the model
    # leaves out); the fitted bound it replaces (0.1) failed on a fresh input.
    low_apply = jax.jit(lambda x: low.apply(variables, x, False).logits.astype(jnp.float32))
    float_apply = jax.jit(lambda x: head.apply(variables, x, False).logits)
    rounding_sigma = bfloat16_rounding_sigma(head, variables, feature_map.shape)
    fresh = [
        np.random.default_rng(seed).standard_normal(feature_map.shape).astype(np.float32)
        for seed in (1, 2)
    ]
    for x in (feature_map, *fresh):
        error = np.max(
            np.abs(np.asarray(low_apply(x), np.float64) - np.asarray(float_apply(x), np.float64))
        )
        sigma = float(np.max(rounding_sigma(x)))
        assert error <= 5 * sigma, (error, sigma)


def test_shared_head_rejects_inconsistent_constants():
    head = SharedHead(
        num_classes=4, word_embeddings=np.zeros((4, 3)), adjacency=np.zeros((4, 5)), feature_dim=8
    )
    with pytest.raises(
        ValueError, match=r"adjacency must have shape \(num_classes, num_classes\) = \(4, 4\)"
    ):
        head.init(jax.random.key(0), jnp.zeros((2, 2, 2, 6)), False)
    head = SharedHead(
        num_classes=4, word_embeddings=np.zeros((5, 3)), adjacency=np.zeros((4, 4)), feature_dim=8
    )
    with pytest.raises(ValueError, match=r"word_embeddings must have shape \(num_classes=4, D_w\)"):
        head.init(jax.random.key(0), jnp.zeros((2, 2, 2, 6)), False)
