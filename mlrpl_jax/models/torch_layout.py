"""Import PyTorch-layout state dicts (name -> np.ndarray) as Flax variables (docs/methods/implementation_notes.md,
Appendix B).

NumPy only. Linear weight (out, in) -> kernel (in, out); conv weight (O, I, kh, kw) -> kernel
(kh, kw, I, O) (a depthwise (C, 1, k, k) becomes Flax's grouped (k, k, 1, C)); element-wise
classifiers keep (C, D); BN weight/bias -> params scale/bias and running_mean/var ->
batch_stats mean/var. Results are {'params': ..., 'batch_stats': ...} trees for ResNet and
EfficientNetLite0; `variables_from_torch` converts any module given its key map.
"""

from collections.abc import Callable, Mapping

import numpy as np

from mlrpl_jax.models.efficientnet_lite import lite0_blocks
from mlrpl_jax.models.resnet import resnet_stages

Variables = dict[str, dict]
StateDict = Mapping[str, np.ndarray]
# torch key -> (collection, flax path, layout transform)
KeyMap = dict[str, tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]]


def linear_layout(w: np.ndarray) -> np.ndarray:
    if w.ndim != 2:
        raise ValueError(f"expected a Linear weight (out, in), got shape {w.shape}")
    return w.T


def conv_layout(w: np.ndarray) -> np.ndarray:
    if w.ndim != 4:
        raise ValueError(f"expected a Conv2d weight (out, in, kh, kw), got shape {w.shape}")
    return w.transpose(2, 3, 1, 0)


def same_layout(w: np.ndarray) -> np.ndarray:
    return w


# BatchNorm buffers that carry no state of ours (PyTorch's step counter, unused with momentum).
BN_COUNTER = "num_batches_tracked"


def batch_norm_keys(torch_prefix: str, path: tuple[str, ...]) -> KeyMap:
    return {
        f"{torch_prefix}.weight": ("params", (*path, "scale"), same_layout),
        f"{torch_prefix}.bias": ("params", (*path, "bias"), same_layout),
        f"{torch_prefix}.running_mean": ("batch_stats", (*path, "mean"), same_layout),
        f"{torch_prefix}.running_var": ("batch_stats", (*path, "var"), same_layout),
    }


def linear_keys(torch_prefix: str, path: tuple[str, ...], bias: bool = True) -> KeyMap:
    keys: KeyMap = {f"{torch_prefix}.weight": ("params", (*path, "kernel"), linear_layout)}
    if bias:
        keys[f"{torch_prefix}.bias"] = ("params", (*path, "bias"), same_layout)
    return keys


def resnet_key_map(depth: int) -> KeyMap:
    """torchvision ResNet state-dict names (without fc) -> variables of models.resnet.ResNet."""
    bottleneck, blocks = resnet_stages(depth)
    convs = 3 if bottleneck else 2
    keys: KeyMap = {"conv1.weight": ("params", ("conv1", "kernel"), conv_layout)}
    keys.update(batch_norm_keys("bn1", ("bn1",)))
    for stage, num_blocks in enumerate(blocks, start=1):
        for block in range(num_blocks):
            torch_block, path = f"layer{stage}.{block}", (f"layer{stage}", str(block))
            for i in range(1, convs + 1):
                keys[f"{torch_block}.conv{i}.weight"] = (
                    "params",
                    (*path, f"conv{i}", "kernel"),
                    conv_layout,
                )
                keys.update(batch_norm_keys(f"{torch_block}.bn{i}", (*path, f"bn{i}")))
            if block == 0 and (stage > 1 or bottleneck):
                keys[f"{torch_block}.downsample.0.weight"] = (
                    "params",
                    (*path, "downsample_conv", "kernel"),
                    conv_layout,
                )
                keys.update(
                    batch_norm_keys(f"{torch_block}.downsample.1", (*path, "downsample_bn"))
                )
    return keys


def efficientnet_lite0_key_map() -> KeyMap:
    """EfficientNet-Lite0 port names (lukemelas layout, without _fc) -> models.efficientnet_lite.EfficientNetLite0."""
    keys: KeyMap = {"_conv_stem.weight": ("params", ("stem_conv", "kernel"), conv_layout)}
    keys.update(batch_norm_keys("_bn0", ("stem_bn",)))
    for i, spec in enumerate(lite0_blocks()):
        torch_block, path = f"_blocks.{i}", (f"block{i}",)
        layers = [("_expand_conv", "_bn0", "expand")] if spec.expand_ratio != 1 else []
        layers += [("_depthwise_conv", "_bn1", "depthwise"), ("_project_conv", "_bn2", "project")]
        for conv, bn, ours in layers:
            keys[f"{torch_block}.{conv}.weight"] = (
                "params",
                (*path, f"{ours}_conv", "kernel"),
                conv_layout,
            )
            keys.update(batch_norm_keys(f"{torch_block}.{bn}", (*path, f"{ours}_bn")))
    keys["_conv_head.weight"] = ("params", ("head_conv", "kernel"), conv_layout)
    keys.update(batch_norm_keys("_bn1", ("head_bn",)))
    return keys


def nested_key_map(key_map: KeyMap, torch_prefix: str, path_prefix: tuple[str, ...]) -> KeyMap:
    """The same key map for a submodule stored under torch_prefix / path_prefix."""
    return {torch_prefix + k: (c, (*path_prefix, *path), f) for k, (c, path, f) in key_map.items()}


def variables_from_torch(
    state_dict: StateDict, key_map: KeyMap, what: str = "the model"
) -> Variables:
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
    kept = {
        k: v
        for k, v in state_dict.items()
        if k not in ("fc.weight", "fc.bias") and not k.endswith(BN_COUNTER)
    }
    return variables_from_torch(kept, resnet_key_map(depth), f"a torchvision ResNet-{depth}")


def efficientnet_lite0_variables_from_torch(state_dict: StateDict) -> Variables:
    """EfficientNet-Lite0 port state dict -> EfficientNetLite0 variables; '_fc.*' and BN counters are skipped."""
    kept = {
        k: v
        for k, v in state_dict.items()
        if k not in ("_fc.weight", "_fc.bias") and not k.endswith(BN_COUNTER)
    }
    return variables_from_torch(
        kept, efficientnet_lite0_key_map(), "an EfficientNet-Lite0 (lukemelas layout)"
    )


def backbone_variables_from_torch(
    state_dict: StateDict, backbone: str, depth: int = 101
) -> Variables:
    """Backbone state dict -> variables of config.model.backbone's module (depth: ResNet only)."""
    if backbone == "efficientnet_lite0":
        return efficientnet_lite0_variables_from_torch(state_dict)
    if backbone == "resnet":
        return resnet_variables_from_torch(state_dict, depth)
    raise ValueError(f"unknown backbone {backbone!r}; valid: resnet, efficientnet_lite0")
