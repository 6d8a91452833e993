"""Import of torch-layout state dicts (mlrpl_jax.models.torch_layout, docs/methods/implementation_notes.md, Appendix B)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_torch_layout

from mlrpl_jax.models import torch_layout
from mlrpl_jax.models.network import SharedNetwork
from mlrpl_jax.models.resnet import ResNet

# Entries of torchvision's resnet{18,50,101}().state_dict(), fc and num_batches_tracked included.
TORCHVISION_STATE_DICT_SIZES = {18: 122, 50: 320, 101: 626}

# Reference head names of the SharedHead submodules (independent of the converter's tables).
HEAD_NAMES = {
    ("reduction_conv",): "changeChannel.0",
    ("reduction_bn",): "changeChannel.1",
    ("semantic_decoupling", "feature_projection"): "SemanticDecoupling.fc1",
    ("semantic_decoupling", "word_projection"): "SemanticDecoupling.fc2",
    ("semantic_decoupling", "hidden"): "SemanticDecoupling.fc3",
    ("semantic_decoupling", "score"): "SemanticDecoupling.fc4",
    ("ggnn", "message_update"): "GraphNeuralNetwork.fc_1_w",
    ("ggnn", "state_update"): "GraphNeuralNetwork.fc_1_u",
    ("ggnn", "message_reset"): "GraphNeuralNetwork.fc_2_w",
    ("ggnn", "state_reset"): "GraphNeuralNetwork.fc_2_u",
    ("ggnn", "message_candidate"): "GraphNeuralNetwork.fc_3_w",
    ("ggnn", "state_candidate"): "GraphNeuralNetwork.fc_3_u",
    ("output_head", "fc"): "fc",
    ("output_head", "classifiers"): "classifiers",
}
LEAF_NAMES = {
    "kernel": "weight",
    "bias": "bias",
    "scale": "weight",
    "mean": "running_mean",
    "var": "running_var",
}


def to_torch_value(path: tuple[str, ...], value) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim == 4:  # (kh, kw, I, O) -> (O, I, kh, kw)
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2 and "classifiers" not in path:  # (in, out) -> (out, in)
        return value.T
    return value


def resnet_module_name(path: tuple[str, ...]) -> str:
    names = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
    return ".".join(names.get(p, p) for p in path)


def head_module_name(path: tuple[str, ...]) -> str:
    return HEAD_NAMES[path]


def variables_to_torch(variables: dict, module_name, prefix: str = "") -> dict[str, np.ndarray]:
    """NumPy flax -> torch inverse: torch names, torch layouts, plus BN counters."""
    state = {}
    for collection in ("params", "batch_stats"):
        for path, value in flax.traverse_util.flatten_dict(variables[collection]).items():
            state[f"{prefix}{module_name(path[:-1])}.{LEAF_NAMES[path[-1]]}"] = to_torch_value(
                path, value
            )
            if path[-1] == "mean":
                state[f"{prefix}{module_name(path[:-1])}.num_batches_tracked"] = np.array(
                    7, np.int64
                )
    return state


def randomised(variables: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
        if path[-1].key == "var"
        else (rng.normal(size=a.shape) * 0.3).astype(np.float32),
        variables,
    )


def random_resnet(depth: int, width: int = 2, size: int = 64, seed: int = 0):
    model = ResNet(depth=depth, width=width)
    x = np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32)
    variables = randomised(
        jax.device_get(model.init(jax.random.key(seed), jnp.asarray(x), train=False)), seed
    )
    state = variables_to_torch(variables, resnet_module_name)
    state["fc.weight"] = np.zeros((10, 8 * width * (4 if depth >= 50 else 1)), np.float32)
    state["fc.bias"] = np.zeros((10,), np.float32)
    return model, x, variables, state


def assert_trees_equal(a: dict, b: dict) -> None:
    flat_a, flat_b = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
    assert set(flat_a) == set(flat_b)
    for path in flat_a:
        np.testing.assert_array_equal(
            np.asarray(flat_a[path]), np.asarray(flat_b[path]), err_msg=str(path)
        )


# ----------------------------------------------------------------------------- NumPy ResNet oracle (NCHW)


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    _, _, height, width = x.shape
    _, _, kh, kw = w.shape
    out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride]
            out = out + np.einsum("bihw,oi->bohw", patch, w[:, :, i, j])
    return out


def batch_norm(x: np.ndarray, state: dict, name: str) -> np.ndarray:
    mean, var = state[f"{name}.running_mean"], state[f"{name}.running_var"]
    scale, bias = state[f"{name}.weight"], state[f"{name}.bias"]
    inv = scale / np.sqrt(var + 1e-5)
    return (x - mean[:, None, None]) * inv[:, None, None] + bias[:, None, None]


def max_pool_3x3_s2(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    out_h, out_w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
    windows = [
        x[:, :, i : i + 2 * out_h : 2, j : j + 2 * out_w : 2] for i in range(3) for j in range(3)
    ]
    return np.max(windows, axis=0)


def numpy_resnet(
    state: dict, x_nchw: np.ndarray, blocks: tuple[int, ...], bottleneck: bool
) -> np.ndarray:
    """Inference-mode torchvision ResNet + 2x2/2 average pool, straight from torch-layout weights."""
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    x = relu(batch_norm(conv2d(x_nchw, state["conv1.weight"], 2, 3), state, "bn1"))
    x = max_pool_3x3_s2(x)
    for stage, num_blocks in enumerate(blocks, start=1):
        for block in range(num_blocks):
            name = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            if bottleneck:
                y = relu(
                    batch_norm(conv2d(x, state[f"{name}.conv1.weight"], 1, 0), state, f"{name}.bn1")
                )
                y = relu(
                    batch_norm(
                        conv2d(y, state[f"{name}.conv2.weight"], stride, 1), state, f"{name}.bn2"
                    )
                )
                y = batch_norm(conv2d(y, state[f"{name}.conv3.weight"], 1, 0), state, f"{name}.bn3")
            else:
                y = relu(
                    batch_norm(
                        conv2d(x, state[f"{name}.conv1.weight"], stride, 1), state, f"{name}.bn1"
                    )
                )
                y = batch_norm(conv2d(y, state[f"{name}.conv2.weight"], 1, 1), state, f"{name}.bn2")
            if f"{name}.downsample.0.weight" in state:
                shortcut = conv2d(x, state[f"{name}.downsample.0.weight"], stride, 0)
                x = batch_norm(shortcut, state, f"{name}.downsample.1")
            x = relu(y + x)
    b, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).mean((3, 5))


@pytest.mark.parametrize(
    ("depth", "blocks", "bottleneck"), [(18, (2, 2, 2, 2), False), (50, (3, 4, 6, 3), True)]
)
def test_converted_resnet_matches_numpy_oracle(depth, blocks, bottleneck):
    model, x, _, state = random_resnet(depth)
    variables = torch_layout.resnet_variables_from_torch(state, depth)
    ours = np.asarray(model.apply(variables, jnp.asarray(x), train=False))
    state64 = {k: v.astype(np.float64) for k, v in state.items()}
    expected = numpy_resnet(state64, x.transpose(0, 3, 1, 2).astype(np.float64), blocks, bottleneck)
    assert ours.shape == (2, 1, 1, 8 * 2 * (4 if bottleneck else 1))
    np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_round_trip(depth):
    _, _, variables, state = random_resnet(depth)
    assert len(state) == TORCHVISION_STATE_DICT_SIZES[depth]
    assert ("layer1.0.downsample.0.weight" in state) == (depth >= 50)
    assert "layer2.0.downsample.1.running_var" in state
    assert_trees_equal(torch_layout.resnet_variables_from_torch(state, depth), variables)


def test_resnet101_key_map_covers_torchvision_names():
    keys = torch_layout.resnet_key_map(101)
    bn_layers = sum(k.endswith(".running_mean") for k in keys)
    assert (
        len(keys) + bn_layers + 2 == TORCHVISION_STATE_DICT_SIZES[101]
    )  # + num_batches_tracked + fc
    assert "layer3.22.conv3.weight" in keys and "layer4.0.downsample.1.running_var" in keys


def tiny_network_state():
    rng = np.random.default_rng(0)
    classes, word_dim = 5, 7
    words = rng.normal(size=(classes, word_dim)).astype(np.float32)
    adjacency = rng.uniform(size=(classes, classes)).astype(np.float32)
    model = SharedNetwork(
        classes, words, adjacency, depth=18, width=2, feature_dim=8, attention_dim=6, output_dim=10
    )
    x = jnp.asarray(rng.normal(size=(2, 64, 64, 3)).astype(np.float32))
    variables = randomised(jax.device_get(model.init(jax.random.key(0), x, train=False)), seed=1)
    state = variables_to_torch(
        {c: variables[c]["backbone"] for c in variables}, resnet_module_name, prefix="backbone."
    )
    state.update(variables_to_torch({c: variables[c]["head"] for c in variables}, head_module_name))
    state.update(
        {
            "wordFeatures": words,
            "inMatrix": adjacency,
            "outMatrix": adjacency.T.copy(),
            "GraphNeuralNetwork.inMatrix": adjacency,
            "GraphNeuralNetwork.outMatrix": adjacency.T.copy(),
        }
    )
    method_specific = {
        "intra_fc_1.weight": rng.normal(size=(6, 8)).astype(np.float32),
        "intra_classifiers.bias": rng.normal(size=(10,)).astype(np.float32),
        "alpha": np.array(0.5, np.float32),
        "beta": np.array(0.5, np.float32),
    }
    state.update(method_specific)
    return model, x, variables, state, method_specific


def test_network_round_trip_returns_method_specific_keys_unused():
    model, x, variables, state, method_specific = tiny_network_state()
    converted, unused = reference_torch_layout.network_variables_from_torch(state, depth=18)
    assert_trees_equal(converted, variables)
    assert set(unused) == set(method_specific)
    for key, value in method_specific.items():
        np.testing.assert_array_equal(unused[key], value)
    words, adjacency = reference_torch_layout.head_constants_from_torch(state)
    np.testing.assert_array_equal(words, model.word_embeddings)
    np.testing.assert_array_equal(adjacency, model.adjacency)
    out = model.apply(converted, x, train=False)
    np.testing.assert_allclose(
        out.logits, model.apply(variables, x, train=False).logits, rtol=0, atol=0
    )


def test_head_round_trip():
    _, _, variables, state, method_specific = tiny_network_state()
    head_state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    converted, unused = reference_torch_layout.head_variables_from_torch(head_state)
    assert_trees_equal(converted, {c: variables[c]["head"] for c in variables})
    assert set(unused) == set(method_specific)


# ----------------------------------------------------------------------------- errors


def test_missing_key_is_reported():
    _, _, _, state = random_resnet(18)
    del state["layer1.0.conv1.weight"]
    with pytest.raises(
        KeyError, match=r"missing keys \['layer1.0.conv1.weight'\]; unexpected keys \[\]"
    ):
        torch_layout.resnet_variables_from_torch(state, 18)


def test_unexpected_key_is_reported():
    _, _, _, state = random_resnet(18)
    state["layer1.0.extra.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(
        KeyError, match=r"missing keys \[\]; unexpected keys \['layer1.0.extra.weight'\]"
    ):
        torch_layout.resnet_variables_from_torch(state, 18)


def test_wrong_depth_is_reported():
    _, _, _, state = random_resnet(18)
    with pytest.raises(KeyError, match="torchvision ResNet-34: missing keys"):
        torch_layout.resnet_variables_from_torch(state, 34)
    with pytest.raises(ValueError, match="Unsupported ResNet depth 19"):
        torch_layout.resnet_variables_from_torch(state, 19)


def test_head_errors():
    _, _, _, state, _ = tiny_network_state()
    head_state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    with pytest.raises(KeyError, match=r"unexpected keys \['prototype_head.weight'\]"):
        reference_torch_layout.head_variables_from_torch(
            {**head_state, "prototype_head.weight": np.zeros(3)}
        )
    incomplete = {k: v for k, v in head_state.items() if k != "GraphNeuralNetwork.fc_2_u.bias"}
    with pytest.raises(KeyError, match=r"missing keys \['GraphNeuralNetwork.fc_2_u.bias'\]"):
        reference_torch_layout.head_variables_from_torch(incomplete)
    with pytest.raises(ValueError, match="'fc.weight': expected a Linear weight"):
        reference_torch_layout.head_variables_from_torch(
            {**head_state, "fc.weight": np.zeros((2, 2, 1, 1))}
        )
    with pytest.raises(ValueError, match="not the transpose"):
        reference_torch_layout.head_constants_from_torch(
            {**head_state, "outMatrix": head_state["inMatrix"]}
        )


def test_network_without_backbone_prefix_is_reported():
    _, _, _, state, _ = tiny_network_state()
    renamed = {
        k.removeprefix("backbone."): v for k, v in state.items() if k != "backbone.fc.weight"
    }
    with pytest.raises(KeyError, match="missing keys \\['backbone.bn1.bias'"):
        reference_torch_layout.network_variables_from_torch(renamed, depth=18)
