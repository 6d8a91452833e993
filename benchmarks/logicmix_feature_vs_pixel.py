"""Does mixing the cached backbone maps stand in for mixing the pixels, as LogicMix does?

    python benchmarks/logicmix_feature_vs_pixel.py --run=W/baseline_digits_cached/p0.1_s0

In the cached regime LogicMix averages the frozen backbone's maps (docs/methods/logicmix.md §3),
the paper averages pixels. For the run's test images, each mixed with `--images_per_mix` - 1
random partners, this compares the two on the run's own trained head, in inference mode: the
map of the mixed pixels against the mean of the maps (relative L2 distance, cosine), and the
mAP of the head's scores on each against the logical OR of the partners' complete test labels
(the label a mix gets when every label is known). The unmixed test mAP is printed beside them.
A feature-level mix that scores far below the pixel-level one is a training target the head
cannot meet as the paper's model can. Prints one JSON line.
"""

from __future__ import annotations

import functools
import json

import finished_run
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from mlrpl_jax import logicmix
from mlrpl_jax.core import feature_cache, train
from mlrpl_jax.core.metrics import evaluate_scores


def split_arrays(data, split: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images or maps (N, ...), complete labels (N, C)) of `split` in reference order."""
    images, labels = [], []
    for batch in data.eval_batches(batch_size, split=split):
        real = batch["mask"] > 0
        images.append(np.asarray(batch["image"])[real])
        labels.append(np.asarray(batch["complete_labels"])[real])
    return np.concatenate(images), np.concatenate(labels)


def mix_partners(num: int, images_per_mix: int, seed: int) -> np.ndarray:
    """(num, k) row indices: row i mixed with k - 1 partners drawn uniformly from the others."""
    rng = np.random.default_rng(seed)
    partners = (np.arange(num)[:, None] + rng.integers(1, num, (num, images_per_mix - 1))) % num
    return np.concatenate([np.arange(num)[:, None], partners], axis=1)


def mixed(images: np.ndarray, labels: np.ndarray, partners: np.ndarray) -> dict[str, np.ndarray]:
    """{'image', 'labels'}: each row mixed with its `partners` by the training step's own rule
    (mlrpl_jax.logicmix.mix_batch: mean of the images, logical OR of the labels)."""
    batch = {"image": jnp.asarray(images), "labels": jnp.asarray(labels, jnp.float32)}
    return jax.device_get(logicmix.mix_batch(batch, partners, np.ones(partners.shape, bool)))


def cached_run(config) -> None:
    """Raises unless the run trained on cached maps (the only runs whose mixes are of maps)."""
    if not config.data.feature_cache:
        raise ValueError("a run on pixels; this script compares runs on cached maps")


def feature_vs_pixel(run_dir: str, images_per_mix: int, seed: int, batch_size: int) -> dict:
    if images_per_mix < 2:
        raise ValueError(
            f"images_per_mix must be at least 2 (a mix of k >= 2), got {images_per_mix}"
        )
    run = finished_run.restore(run_dir, check=cached_run)
    config, data, method, state, mesh = run.config, run.data, run.method, run.state, run.mesh
    predict = train.jit_predict(method, mesh)

    maps, labels = split_arrays(data, "test", batch_size)  # (N, h, w, F), (N, C)
    pixel_config = config.copy_and_resolve_references()
    pixel_config.data.feature_cache = False
    pixels, _ = split_arrays(train.open_data(pixel_config), "test", batch_size)  # (N, S, S, 3)
    backbone = feature_cache.backbone_module(config)
    variables = feature_cache.backbone_variables(config, backbone)
    # the program that filled the cache, at its batch size: the recomputed maps are the cache's
    cache_forward = jax.jit(functools.partial(backbone.apply, train=False))

    def forward(images: np.ndarray) -> jax.Array:
        return cache_forward(variables, images)

    def batched(fn, rows: np.ndarray) -> np.ndarray:
        """fn over `rows` in batches of batch_size, the last one zero-padded (one shape)."""
        outputs = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            padding = np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)
            outputs.append(np.asarray(fn(np.concatenate([chunk, padding])))[: len(chunk)])
        return np.concatenate(outputs)

    def scores(rows: np.ndarray) -> np.ndarray:
        return batched(lambda x: jax.nn.sigmoid(predict(state, jnp.asarray(x))), rows)

    partners = mix_partners(len(maps), images_per_mix, seed)
    feature_mixes = mixed(maps, labels, partners)
    feature_mix, mixed_labels = feature_mixes["image"], feature_mixes["labels"]  # (N, h, w, F)
    pixel_mix = batched(forward, mixed(pixels, labels, partners)["image"])  # (N, h, w, F)
    recomputed = batched(forward, pixels)
    difference = (feature_mix - pixel_mix).reshape(len(maps), -1)
    pixel_flat = pixel_mix.reshape(len(maps), -1)
    feature_flat = feature_mix.reshape(len(maps), -1)
    cosine = np.sum(pixel_flat * feature_flat, axis=1) / (
        np.linalg.norm(pixel_flat, axis=1) * np.linalg.norm(feature_flat, axis=1)
    )
    return {
        "run": run_dir,
        "method": config.method,
        "known_ratio": config.known_ratio,
        "seed": config.seed,
        "logicmix_probability": float(config.logicmix.probability),
        "images_per_mix": images_per_mix,
        "test_images": len(maps),
        "cache_max_abs_error": float(np.max(np.abs(recomputed - maps))),
        "relative_l2_feature_vs_pixel_mix": float(
            np.mean(np.linalg.norm(difference, axis=1) / np.linalg.norm(pixel_flat, axis=1))
        ),
        "cosine_feature_vs_pixel_mix": float(np.mean(cosine)),
        "mAP_unmixed": evaluate_scores(scores(maps), labels)["mAP"],
        "mAP_pixel_mix": evaluate_scores(scores(pixel_mix), mixed_labels)["mAP"],
        "mAP_feature_mix": evaluate_scores(scores(feature_mix), mixed_labels)["mAP"],
    }


def main(argv: list[str]) -> None:
    del argv
    args = flags.FLAGS
    print(json.dumps(feature_vs_pixel(args.run, args.images_per_mix, args.seed, args.batch_size)))


def define_flags() -> None:
    """Command-line flags, defined only when run as a script (importing defines none)."""
    flags.DEFINE_string("run", None, "Workdir of a finished run of a `:cached` config.")
    flags.mark_flag_as_required("run")
    flags.DEFINE_integer("images_per_mix", 2, "k: images in each mix (the authors draw 2 or 3).")
    flags.DEFINE_integer("seed", 0, "Seed of the partner draw.")
    flags.DEFINE_integer(
        "batch_size", feature_cache.BATCH_SIZE, "Images per backbone or head call (the cache's)."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
