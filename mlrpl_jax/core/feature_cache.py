"""Backbone feature maps computed once per dataset and shared by every run (config.data.feature_cache).

With the cache on, the whole backbone is frozen and runs in inference mode, so its output is a
fixed function of the unaugmented image. It is computed once per (dataset, backbone, weights,
image size), stored next to the prepared dataset, and every later run — any method, seed or
proportion — trains the shared head (docs/methods/network.md §4.2-4.5) and the method's own
parts on the stored maps: the batches' 'image' holds a map (b, h, w, F) instead of pixels.

The papers train the backbone's last stage; a cached run trains none of it. The benchmark
regime that uses the cache says what that changes, measured (docs/results/benchmark_regime.md).

Files: `<builder dir>/backbone_features/<key>/{train,test}.npy`, float32 (N, h, w, F) in
reference ('index') order, each written to a temporary name and renamed, so a crash or a
concurrent writer (every host of a pod computes a missing cache) never leaves a partial file.
`<key>` names the backbone, its weights and the image size (`cache_key`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from mlrpl_jax.core import storage
from mlrpl_jax.models.network import build_backbone
from mlrpl_jax.models.pretrained import with_pretrained_backbone

SPLITS = ("train", "test")
CACHE_FOLDER = "backbone_features"
BATCH_SIZE = 64  # images per backbone call while filling the cache
# Largest cache a run may build: the maps are memory-mapped, but writing them goes through the
# page cache and a run reads every row each epoch, so they should fit in RAM.
MAX_CACHE_BYTES = 16 * 2**30


class FeatureCacheError(ValueError):
    """The feature cache cannot be built for this dataset; the message says why."""


def backbone_module(config: ml_collections.ConfigDict):
    """The config's backbone, every layer in inference mode when called with train=False."""
    model = config.model
    return build_backbone(
        model.backbone,
        depth=model.depth,
        width=model.width,
        extra_pool=model.extra_pool,
        freeze_early_stages=True,
        dtype=jnp.dtype(model.dtype),
        conv_impl=model.conv_impl,
        frozen_dtype=jnp.bfloat16 if model.frozen_dtype == "bfloat16" else None,
    )


# cache_key -> the backbone's map shape (h, w, F): traced once per process, as every run of a
# sweep or test session with the same backbone asks again
_MAP_SHAPES: dict[str, tuple[int, int, int]] = {}


def model_input_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """Shape of one model input: the image (S, S, 3), or with the cache the backbone's map
    (h, w, F) at that image size (from shapes alone, nothing is computed)."""
    size = config.data.image_size
    if not config.data.feature_cache:
        return (size, size, 3)
    key = cache_key(config)
    if key not in _MAP_SHAPES:
        _MAP_SHAPES[key] = _traced_map_shape(config)
    return _MAP_SHAPES[key]


def _traced_map_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    size = config.data.image_size
    backbone = backbone_module(config)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda x: backbone.init(jax.random.PRNGKey(0), x, train=False), images
    )
    out = jax.eval_shape(lambda v, x: backbone.apply(v, x, train=False), variables, images)
    return tuple(out.shape[1:])


def _cache_identity(config: ml_collections.ConfigDict) -> dict:
    """What the cached maps depend on: backbone, weights, image size and numerics."""
    model = config.model
    weights = model.pretrained or "random"
    if model.pretrained and epath.Path(model.pretrained).is_file():
        weights += f" ({epath.Path(model.pretrained).stat().length} bytes)"
    identity = {
        "backbone": model.backbone,
        "weights": weights,
        "image_size": config.data.image_size,
        "dtype": model.dtype,
        "frozen_dtype": model.frozen_dtype,
        "conv_impl": model.conv_impl,
    }
    if model.backbone == "resnet":
        identity.update(depth=model.depth, width=model.width, extra_pool=model.extra_pool)
    return identity


def cache_key(config: ml_collections.ConfigDict) -> str:
    """Folder name of the maps of `config`'s backbone, weights and image size."""
    identity = json.dumps(_cache_identity(config), sort_keys=True).encode()
    return f"{config.model.backbone}-{config.data.image_size}px-{hashlib.sha256(identity).hexdigest()[:12]}"


def feature_maps(
    config: ml_collections.ConfigDict,
    builder_dir: epath.Path,
    images_of_split,
    num_rows: dict[str, int],
) -> dict[str, np.ndarray]:
    """{'train', 'test'}: memory-mapped float32 (N, h, w, F) maps in reference order, computed
    and stored on first use.

    `images_of_split(split, batch_size)` yields dicts with 'image' (b, S, S, 3) of `split` in
    reference order, unaugmented, and 'mask' (b,) (0 = padding), as
    PartialLabelData.eval_batches does; `num_rows` the examples of each split.
    """
    directory = builder_dir / CACHE_FOLDER / cache_key(config)
    maps = {}
    for split in SPLITS:
        path = directory / f"{split}.npy"
        if not path.exists():
            _compute_split(config, path, images_of_split(split, BATCH_SIZE), num_rows[split])
        maps[split] = np.load(str(path), mmap_mode="r")
        if len(maps[split]) != num_rows[split]:
            raise FeatureCacheError(
                f"{path} holds {len(maps[split])} maps but the {split} split has "
                f"{num_rows[split]} examples: the dataset was prepared again; delete {directory}"
            )
    return maps


def backbone_variables(config: ml_collections.ConfigDict, backbone) -> dict:
    """The backbone's variables: ImageNet weights (model.pretrained), else a seeded init.

    The weights replace every variable, so with them the init is only traced for its shapes
    (compiling it took 25-35 s on a 2-core CPU for EfficientNet-Lite0) and checked against them.
    """
    size = config.data.image_size
    init = jax.jit(lambda key: backbone.init(key, jnp.zeros((1, size, size, 3)), train=False))
    key = jax.random.PRNGKey(config.seed)
    if not config.model.pretrained:
        return jax.device_get(init(key))
    shapes = jax.eval_shape(init, key)
    wrapped = {name: {"backbone": tree} for name, tree in shapes.items()}
    wrapped = with_pretrained_backbone(
        wrapped, config.model.pretrained, config.model.depth, config.model.backbone
    )
    variables = {name: tree["backbone"] for name, tree in wrapped.items()}
    expected = jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), shapes)
    loaded = jax.tree.map(lambda leaf: (np.shape(leaf), np.asarray(leaf).dtype), variables)
    if loaded != expected:
        raise FeatureCacheError(
            f"the {config.model.backbone} weights {config.model.pretrained!r} do not match the "
            "backbone's variables (names, shapes or dtypes)"
        )
    return variables


def _compute_split(config: ml_collections.ConfigDict, path: epath.Path, batches, rows: int) -> None:
    """Runs the frozen backbone over `batches` (one split, `rows` examples) and writes its maps
    to `path` atomically, with the settings they depend on in key.json beside it."""
    shape = (rows, *model_input_shape(config))
    size = int(np.prod(shape)) * 4
    if size > MAX_CACHE_BYTES:
        raise FeatureCacheError(
            f"the {path.stem} maps of {config.data.name} at {config.data.image_size} px would "
            f"take {size / 2**30:.1f} GiB (shape {shape}), more than the "
            f"{MAX_CACHE_BYTES / 2**30:.0f} GiB the cache allows; train without "
            "data.feature_cache"
        )
    backbone = backbone_module(config)
    variables = backbone_variables(config, backbone)
    forward = jax.jit(functools.partial(backbone.apply, train=False))
    logging.info(
        "feature cache: computing the %s maps %s of %s in %s",
        path.stem,
        shape,
        config.data.name,
        path.parent,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(path.parent / "key.json", _cache_identity(config))
    tmp = path.parent / f"{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        maps = np.lib.format.open_memmap(str(tmp), mode="w+", dtype=np.float32, shape=shape)
        start = 0
        for batch in batches:
            real = int(np.sum(batch["mask"]))
            maps[start : start + real] = np.asarray(forward(variables, batch["image"]))[:real]
            start += real
        if start != rows:
            raise FeatureCacheError(
                f"the {path.stem} split yielded {start} images, expected {rows}"
            )
        maps.flush()
        del maps
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
