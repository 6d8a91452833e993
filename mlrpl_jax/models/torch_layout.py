"""Import PyTorch-layout state dicts (name -> np.ndarray) as Flax variables (METHODS.md App. B).

NumPy only. Linear weight (out, in) -> kernel (in, out); conv weight (O, I, kh, kw) -> kernel
(kh, kw, I, O) (a depthwise (C, 1, k, k) becomes Flax's grouped (k, k, 1, C)); element-wise
classifiers keep (C, D); BN weight/bias -> params scale/bias and running_mean/var ->
batch_stats mean/var. Results are {'params': ..., 'batch_stats': ...} trees for ResNet,
EfficientNetLite0, SharedHead and SharedNetwork (mlrpl_jax.models.network).
"""
from collections.abc import Callable, Mapping

import numpy as np

from mlrpl_jax.models.efficientnet_lite import lite0_blocks
from mlrpl_jax.models.resnet import resnet_stages

Variables = dict[str, dict]
StateDict = Mapping[str, np.ndarray]
# torch key -> (collection, flax path, layout transform)
KeyMap = dict[str, tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]]


def _linear(w: np.ndarray) -> np.ndarray:
    if w.ndim != 2:
        raise ValueError(f"expected a Linear weight (out, in), got shape {w.shape}")
    return w.T


def _conv(w: np.ndarray) -> np.ndarray:
    if w.ndim != 4:
        raise ValueError(f"expected a Conv2d weight (out, in, kh, kw), got shape {w.shape}")
    return w.transpose(2, 3, 1, 0)


def _same(w: np.ndarray) -> np.ndarray:
    return w


# BatchNorm buffers that carry no state of ours (PyTorch's step counter, unused with momentum).
_BN_COUNTER = "num_batches_tracked"

# Reference tensors that are module constants here, not variables: the label embeddings E and
# the graph A, A^T (the reference stores the graph twice, once in the GGNN). Build the model
# from them with head_constants_from_torch instead.
HEAD_CONSTANT_KEYS = (
    "wordFeatures",
    "inMatrix",
    "outMatrix",
    "GraphNeuralNetwork.inMatrix",
    "GraphNeuralNetwork.outMatrix",
)

# Keys of method-specific parts (SST/HST co-occurrence head, SARB/DSRB alpha and beta, HST
# margins); returned untouched as "unused" so that method plug-ins can map them.
METHOD_SPECIFIC_PREFIXES = ("intra_",)
METHOD_SPECIFIC_KEYS = ("alpha", "beta", "intraMargin", "interMargin")


def _batch_norm_keys(torch_prefix: str, path: tuple[str, ...]) -> KeyMap:
    return {
        f"{torch_prefix}.weight": ("params", (*path, "scale"), _same),
        f"{torch_prefix}.bias": ("params", (*path, "bias"), _same),
        f"{torch_prefix}.running_mean": ("batch_stats", (*path, "mean"), _same),
        f"{torch_prefix}.running_var": ("batch_stats", (*path, "var"), _same),
    }


def _linear_keys(torch_prefix: str, path: tuple[str, ...], bias: bool = True) -> KeyMap:
    keys: KeyMap = {f"{torch_prefix}.weight": ("params", (*path, "kernel"), _linear)}
    if bias:
        keys[f"{torch_prefix}.bias"] = ("params", (*path, "bias"), _same)
    return keys


def resnet_key_map(depth: int) -> KeyMap:
    """torchvision ResNet state-dict names (without fc) -> variables of models.resnet.ResNet."""
    bottleneck, blocks = resnet_stages(depth)
    convs = 3 if bottleneck else 2
    keys: KeyMap = {"conv1.weight": ("params", ("conv1", "kernel"), _conv)}
    keys.update(_batch_norm_keys("bn1", ("bn1",)))
    for stage, num_blocks in enumerate(blocks, start=1):
        for block in range(num_blocks):
            torch_block, path = f"layer{stage}.{block}", (f"layer{stage}", str(block))
            for i in range(1, convs + 1):
                keys[f"{torch_block}.conv{i}.weight"] = ("params", (*path, f"conv{i}", "kernel"), _conv)
                keys.update(_batch_norm_keys(f"{torch_block}.bn{i}", (*path, f"bn{i}")))
            if block == 0 and (stage > 1 or bottleneck):
                keys[f"{torch_block}.downsample.0.weight"] = ("params", (*path, "downsample_conv", "kernel"), _conv)
                keys.update(_batch_norm_keys(f"{torch_block}.downsample.1", (*path, "downsample_bn")))
    return keys


def efficientnet_lite0_key_map() -> KeyMap:
    """EfficientNet-Lite0 port names (lukemelas layout, without _fc) -> models.efficientnet_lite.EfficientNetLite0."""
    keys: KeyMap = {"_conv_stem.weight": ("params", ("stem_conv", "kernel"), _conv)}
    keys.update(_batch_norm_keys("_bn0", ("stem_bn",)))
    for i, spec in enumerate(lite0_blocks()):
        torch_block, path = f"_blocks.{i}", (f"block{i}",)
        layers = [("_expand_conv", "_bn0", "expand")] if spec.expand_ratio != 1 else []
        layers += [("_depthwise_conv", "_bn1", "depthwise"), ("_project_conv", "_bn2", "project")]
        for conv, bn, ours in layers:
            keys[f"{torch_block}.{conv}.weight"] = ("params", (*path, f"{ours}_conv", "kernel"), _conv)
            keys.update(_batch_norm_keys(f"{torch_block}.{bn}", (*path, f"{ours}_bn")))
    keys["_conv_head.weight"] = ("params", ("head_conv", "kernel"), _conv)
    keys.update(_batch_norm_keys("_bn1", ("head_bn",)))
    return keys


def _nested(key_map: KeyMap, torch_prefix: str, path_prefix: tuple[str, ...]) -> KeyMap:
    """The same key map for a submodule stored under torch_prefix / path_prefix."""
    return {torch_prefix + k: (c, (*path_prefix, *path), f) for k, (c, path, f) in key_map.items()}


def semantic_decoupling_key_map() -> KeyMap:
    """Reference SemanticDecoupling names (fc1..fc4) -> models.semantic_decoupling.SemanticDecoupling."""
    keys = _linear_keys("fc1", ("feature_projection",), bias=False)
    keys.update(_linear_keys("fc2", ("word_projection",), bias=False))
    keys.update(_linear_keys("fc3", ("hidden",)))
    keys.update(_linear_keys("fc4", ("score",)))
    return keys


def gated_gnn_key_map() -> KeyMap:
    """Reference GatedGNN names (fc_{1,2,3}_{w,u}) -> models.ggnn.GatedGNN (update, reset, candidate)."""
    keys: KeyMap = {}
    for index, gate in ((1, "update"), (2, "reset"), (3, "candidate")):
        keys.update(_linear_keys(f"fc_{index}_w", (f"message_{gate}",)))
        keys.update(_linear_keys(f"fc_{index}_u", (f"state_{gate}",)))
    return keys


def element_wise_key_map() -> KeyMap:
    """Reference Element_Wise_Layer (weight (C, D), bias (C,)) -> models.classifier.ElementWiseLinear."""
    return {
        "weight": ("params", ("kernel",), _same),
        "bias": ("params", ("bias",), _same),
    }


def head_key_map() -> KeyMap:
    """Reference head state-dict names -> variables of models.network.SharedHead."""
    keys: KeyMap = {"changeChannel.0.weight": ("params", ("reduction_conv", "kernel"), _conv)}
    keys.update(_batch_norm_keys("changeChannel.1", ("reduction_bn",)))
    keys.update(_nested(semantic_decoupling_key_map(), "SemanticDecoupling.", ("semantic_decoupling",)))
    keys.update(_nested(gated_gnn_key_map(), "GraphNeuralNetwork.", ("ggnn",)))
    keys.update(_linear_keys("fc", ("output_head", "fc")))
    keys.update(_nested(element_wise_key_map(), "classifiers.", ("output_head", "classifiers")))
    return keys


def network_key_map(depth: int) -> KeyMap:
    """Whole reference model ('backbone.' + torchvision names, then head names) -> SharedNetwork."""
    keys = _nested(resnet_key_map(depth), "backbone.", ("backbone",))
    keys.update(_nested(head_key_map(), "", ("head",)))
    return keys


def _is_method_specific(key: str) -> bool:
    return key in METHOD_SPECIFIC_KEYS or key.startswith(METHOD_SPECIFIC_PREFIXES)


def _is_skipped(key: str) -> bool:
    """Entries that carry nothing for us: BN counters, the backbone's ImageNet fc, the head constants."""
    return key.endswith(_BN_COUNTER) or key in HEAD_CONSTANT_KEYS or key in ("backbone.fc.weight", "backbone.fc.bias")


def variables_from_torch(state_dict: StateDict, key_map: KeyMap, what: str = "the model") -> Variables:
    """Converts exactly the keys of key_map; a missing or unexpected key raises one KeyError listing all.

    Returns {'params': ..., 'batch_stats': ...} (a collection without entries is left out).
    """
    variables: Variables = {"params": {}, "batch_stats": {}}
    missing = [k for k in key_map if k not in state_dict]
    unexpected = [k for k in state_dict if k not in key_map]
    if missing or unexpected:
        raise KeyError(
            f"State dict does not match {what}: missing keys {sorted(missing)}; unexpected keys "
            f"{sorted(unexpected)}. Check the depth / model type and strip wrapper prefixes such as 'module.'."
        )
    for torch_key, (collection, path, layout) in key_map.items():
        try:
            value = layout(np.asarray(state_dict[torch_key], dtype=np.float32))
        except ValueError as err:
            raise ValueError(f"torch key '{torch_key}': {err}") from None
        node = variables[collection]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = np.ascontiguousarray(value)
    return {collection: tree for collection, tree in variables.items() if tree}


def resnet_variables_from_torch(state_dict: StateDict, depth: int) -> Variables:
    """torchvision ResNet-`depth` state dict -> ResNet variables; 'fc.*' and BN counters are skipped."""
    kept = {k: v for k, v in state_dict.items() if k not in ("fc.weight", "fc.bias") and not k.endswith(_BN_COUNTER)}
    return variables_from_torch(kept, resnet_key_map(depth), f"a torchvision ResNet-{depth}")


def efficientnet_lite0_variables_from_torch(state_dict: StateDict) -> Variables:
    """EfficientNet-Lite0 port state dict -> EfficientNetLite0 variables; '_fc.*' and BN counters are skipped."""
    kept = {k: v for k, v in state_dict.items()
            if k not in ("_fc.weight", "_fc.bias") and not k.endswith(_BN_COUNTER)}
    return variables_from_torch(kept, efficientnet_lite0_key_map(), "an EfficientNet-Lite0 (lukemelas layout)")


def backbone_variables_from_torch(state_dict: StateDict, backbone: str, depth: int = 101) -> Variables:
    """Backbone state dict -> variables of config.model.backbone's module (depth: ResNet only)."""
    if backbone == "efficientnet_lite0":
        return efficientnet_lite0_variables_from_torch(state_dict)
    if backbone == "resnet":
        return resnet_variables_from_torch(state_dict, depth)
    raise ValueError(f"unknown backbone {backbone!r}; valid: resnet, efficientnet_lite0")


def _split_method_specific(state_dict: StateDict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(entries to convert, method-specific entries returned as unused)."""
    unused = {k: np.asarray(v) for k, v in state_dict.items() if _is_method_specific(k)}
    kept = {k: v for k, v in state_dict.items() if k not in unused and not _is_skipped(k)}
    return kept, unused


def head_variables_from_torch(state_dict: StateDict) -> tuple[Variables, dict[str, np.ndarray]]:
    """Reference head state dict -> (SharedHead variables, unused method-specific entries).

    Constant tensors (HEAD_CONSTANT_KEYS) and BN counters are skipped; any other key that is
    neither a head key nor method-specific is an error.
    """
    kept, unused = _split_method_specific(state_dict)
    return variables_from_torch(kept, head_key_map(), "the reference's shared head"), unused


def network_variables_from_torch(state_dict: StateDict, depth: int) -> tuple[Variables, dict[str, np.ndarray]]:
    """Whole reference model state dict -> (SharedNetwork variables, unused method-specific entries).

    Skips 'backbone.fc.*', BN counters and the constant tensors (HEAD_CONSTANT_KEYS).
    """
    kept, unused = _split_method_specific(state_dict)
    return variables_from_torch(kept, network_key_map(depth), f"the reference model with ResNet-{depth}"), unused


def head_constants_from_torch(state_dict: StateDict) -> tuple[np.ndarray, np.ndarray]:
    """(word_embeddings E (C, D_w), adjacency A (C, C)) from the reference's constant tensors.

    Checks that the stored out-matrix is A^T, which the GGNN assumes (METHODS.md §4.4).
    """
    for key in ("wordFeatures", "inMatrix", "outMatrix"):
        if key not in state_dict:
            raise KeyError(f"State dict has no '{key}'; pass the reference model's full state dict.")
    adjacency = np.asarray(state_dict["inMatrix"], dtype=np.float32)
    if not np.array_equal(np.asarray(state_dict["outMatrix"], dtype=np.float32), adjacency.T):
        raise ValueError("'outMatrix' is not the transpose of 'inMatrix'; the shared network assumes out = in^T.")
    return np.asarray(state_dict["wordFeatures"], dtype=np.float32), adjacency
