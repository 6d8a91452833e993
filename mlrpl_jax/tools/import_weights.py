"""Converts torchvision-layout ResNet ImageNet weights to the .npz that config.model.pretrained loads.

    python -m mlrpl_jax.tools.import_weights --input=resnet101.pth --output=resnet101.npz --depth=101

Input formats, by file extension:
  .pth / .pt     a PyTorch state dict (torchvision's resnet101-63fe2227.pth, the reference's
                 resnet101.pth). Needs the optional torch extra (pip install 'mlrpl_jax[torch]').
                 Read with torch.load(weights_only=True), PyTorch's restricted unpickler;
                 --allow_pickle falls back to full pickle, which EXECUTES ARBITRARY CODE stored
                 in the file: use it only for files you trust.
  .safetensors   read with the `safetensors` package's NumPy API (pip install safetensors).
  .npz           a NumPy archive of torchvision names (re-checked and normalised).

The output holds exactly the backbone tensors of a torchvision ResNet-<depth> (fc and BN counters
dropped), float32, under torchvision names; it is checked against the ResNet key map before it
is written (METHODS.md §4.1; mlrpl_jax/models/torch_layout.py does the layout conversion at load).
"""
import os
from collections.abc import Mapping

import numpy as np
from absl import app, flags

from mlrpl_jax.models import torch_layout

_WRAPPER_KEYS = ("state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "backbone.")


class WeightImportError(ValueError):
    """The input file cannot be read or is not a torchvision ResNet of the requested depth."""


def _load_torch(path: str, allow_pickle: bool) -> Mapping[str, np.ndarray]:
    try:
        import torch  # optional extra, only for .pth files
    except ImportError:
        raise WeightImportError(
            f"Reading {path!r} needs PyTorch, which is an optional extra: pip install "
            "'mlrpl_jax[torch]' (or convert the file to .safetensors/.npz where torch is installed)."
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightImportError(f"{path!r} does not hold a state dict (got {type(state).__name__}).")
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
        raise WeightImportError(f"Unknown weights format {extension!r}: use .pth, .pt, .safetensors or .npz.")
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: np.asarray(v) for k, v in state.items()}


def backbone_arrays(state_dict: Mapping[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
    """float32 backbone tensors under torchvision names, checked against the ResNet-<depth> key map."""
    try:
        torch_layout.resnet_variables_from_torch(state_dict, depth)
    except (KeyError, ValueError) as error:
        raise WeightImportError(f"Not a torchvision ResNet-{depth} state dict: {error}") from None
    return {k: np.asarray(state_dict[k], dtype=np.float32) for k in torch_layout.resnet_key_map(depth)}


def convert(input_path: str, output_path: str, depth: int, allow_pickle: bool = False) -> int:
    """Writes the backbone .npz; returns the number of tensors written."""
    arrays = backbone_arrays(load_state_dict(input_path, allow_pickle), depth)
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    np.savez(output_path, **arrays)
    return len(arrays)


_INPUT = flags.DEFINE_string("input", None, "Weights file: .pth/.pt (needs torch), .safetensors or .npz.")
_OUTPUT = flags.DEFINE_string("output", None, "The .npz to write (point config.model.pretrained at it).")
_DEPTH = flags.DEFINE_integer("depth", 101, "ResNet depth of the weights (18, 34, 50, 101, 152).")
_ALLOW_PICKLE = flags.DEFINE_bool(
    "allow_pickle", False,
    "For .pth only: load with full pickle instead of torch's weights_only unpickler. Pickle "
    "EXECUTES ARBITRARY CODE stored in the file; use only for files you trust.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    count = convert(_INPUT.value, _OUTPUT.value, _DEPTH.value, _ALLOW_PICKLE.value)
    print(f"Wrote {count} ResNet-{_DEPTH.value} tensors to {_OUTPUT.value}; use "
          f"--config.model.pretrained={_OUTPUT.value}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["input", "output"])
    app.run(main)
