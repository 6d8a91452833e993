"""The backbone feature cache (core/feature_cache.py, config.data.feature_cache)."""

import functools

import jax
import numpy as np
import pytest
from fixtures_data import TINY_DATASET, prepared_data_dir
from tiny_config import tiny_digit_config

from mlrpl_jax.config import ConfigError, validate_config
from mlrpl_jax.core import checkpointing, dry_run, feature_cache, train

# ResNet-18 of width 8 at 32 px without the extra pool: stride 32, 8 * 8 channels.
MAP_SHAPE = (1, 1, 64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data_dir of its own: the cache is written next to the prepared dataset."""
    return prepared_data_dir(tmp_path_factory, TINY_DATASET)


def cached_config(data_dir: str, method: str = "baseline", epochs: int = 1):
    config = tiny_digit_config(method, batch_size=8, epochs=epochs, data_dir=data_dir)
    config.known_ratio = 0.5
    config.data.feature_cache = True
    config.data.train_augmentation = "none"
    config.model.allow_random_frozen_backbone = True
    config.logging.progress_bar = False
    return config


def test_cached_maps_are_the_inference_backbone_of_every_image_in_reference_order(data_dir):
    config = cached_config(data_dir)
    data = train.open_data(config)
    assert feature_cache.model_input_shape(config) == MAP_SHAPE
    backbone = feature_cache.backbone_module(config)
    variables = feature_cache.backbone_variables(config, backbone)
    forward = jax.jit(functools.partial(backbone.apply, train=False))
    plain = train.open_data(_uncached(config))
    for split, num in (("train", data.info.num_train), ("test", data.info.num_test)):
        # The cache's own program (same batch size, same inputs): equal to the last bit.
        expected = np.concatenate(
            [
                np.asarray(forward(variables, batch["image"]))[: int(batch["mask"].sum())]
                for batch in plain.eval_batches(feature_cache.BATCH_SIZE, split=split)
            ]
        )
        served = np.concatenate(
            [
                batch["image"][: int(batch["mask"].sum())]
                for batch in data.eval_batches(8, split=split)
            ]
        )
        assert expected.shape == served.shape == (num, *MAP_SHAPE)
        np.testing.assert_array_equal(served, expected)


def _uncached(config):
    config = config.copy_and_resolve_references()
    config.data.feature_cache = False
    return config


def test_training_batches_serve_the_maps_of_their_indices(data_dir):
    data = train.open_data(cached_config(data_dir))
    maps = feature_cache.feature_maps(
        cached_config(data_dir),
        data.builder_dir,
        None,
        {"train": data.info.num_train, "test": data.info.num_test},
    )
    batch = next(iter(data.train_batches(0, 8)))
    assert batch["image"].shape == (8, *MAP_SHAPE)
    np.testing.assert_array_equal(batch["image"], maps["train"][batch["index"]])
    np.testing.assert_array_equal(batch["labels"], data.info.train_partial_labels[batch["index"]])


def test_a_cached_run_trains_resumes_and_reuses_the_stored_maps(data_dir, tmp_path, monkeypatch):
    train.open_data(cached_config(data_dir))  # the maps exist from here on

    def recompute(*args, **kwargs):
        raise AssertionError("the stored maps were computed again")

    monkeypatch.setattr(feature_cache, "_compute_split", recompute)
    full = train.train_and_evaluate(cached_config(data_dir, "sarb", epochs=2), str(tmp_path / "a"))
    assert full["last"]["epoch"] == 1 and 0.0 < full["last"]["mAP"] <= 100.0
    train.train_and_evaluate(cached_config(data_dir, "sarb", epochs=1), str(tmp_path / "b"))
    resumed = train.train_and_evaluate(
        cached_config(data_dir, "sarb", epochs=2), str(tmp_path / "b")
    )
    assert resumed == full
    # A checkpoint of the head alone never restores into a run with a backbone.
    with pytest.raises(checkpointing.CheckpointMismatchError, match="'feature_cache': True"):
        train.train_and_evaluate(
            _uncached(cached_config(data_dir, "sarb", epochs=3)), str(tmp_path / "b")
        )


def test_maps_of_another_build_of_the_dataset_are_refused(data_dir, tmp_path):
    config = cached_config(data_dir)
    data = train.open_data(config)
    directory = tmp_path / "builder"
    (directory / feature_cache.CACHE_FOLDER / feature_cache.cache_key(config)).mkdir(parents=True)
    for split in feature_cache.SPLITS:
        np.save(
            directory
            / feature_cache.CACHE_FOLDER
            / feature_cache.cache_key(config)
            / f"{split}.npy",
            np.zeros((3, *MAP_SHAPE), np.float32),
        )
    with pytest.raises(feature_cache.FeatureCacheError, match="prepared again"):
        feature_cache.feature_maps(
            config, directory, None, {"train": data.info.num_train, "test": data.info.num_test}
        )


def test_the_cache_key_follows_the_weights_and_the_image_size(data_dir):
    config = cached_config(data_dir)
    other_size, other_weights = (
        config.copy_and_resolve_references(),
        config.copy_and_resolve_references(),
    )
    other_size.data.image_size = 64
    other_weights.model.pretrained = "pypi"
    keys = {feature_cache.cache_key(c) for c in (config, other_size, other_weights)}
    assert len(keys) == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train_augmentation": "colour"}, "train_augmentation='none'"),
        ({"allow_random_frozen_backbone": False}, "random weights"),
    ],
)
def test_configs_the_cache_cannot_serve_stop_with_one_error(data_dir, change, message):
    config = cached_config(data_dir)
    if "train_augmentation" in change:
        config.data.train_augmentation = change["train_augmentation"]
    else:
        config.model.allow_random_frozen_backbone = change["allow_random_frozen_backbone"]
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_dry_run_of_a_cached_config_feeds_maps_of_the_backbone_shape(tmp_path):
    config = cached_config("", "sst", epochs=8)
    result = dry_run.run(config, str(tmp_path), steps=1)
    assert result["train_images_shape"] == [8, *MAP_SHAPE]


def test_pretrained_weights_that_do_not_fit_the_backbone_are_refused(monkeypatch):
    """With model.pretrained the init is only traced for its shapes; weights of other shapes
    stop the cache before any map is computed."""
    config = tiny_digit_config("baseline", batch_size=8, epochs=1)
    config.model.pretrained = "weights.npz"

    def wrong_shapes(variables, *args):
        return jax.tree.map(lambda leaf: np.zeros((*leaf.shape, 2), leaf.dtype), variables)

    monkeypatch.setattr(feature_cache, "with_pretrained_backbone", wrong_shapes)
    backbone = feature_cache.backbone_module(config)
    with pytest.raises(feature_cache.FeatureCacheError, match="do not match"):
        feature_cache.backbone_variables(config, backbone)
