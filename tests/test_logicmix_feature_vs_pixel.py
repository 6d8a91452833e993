"""benchmarks/logicmix_feature_vs_pixel.py: mixes of cached maps against maps of mixed pixels."""

import logicmix_feature_vs_pixel as script
import numpy as np
import pytest

from mlrpl_jax.config import digit_scenes_config
from mlrpl_jax.core import feature_cache, train


def test_partners_exclude_the_row_and_follow_the_seed():
    partners = script.mix_partners(40, 3, seed=5)
    assert partners.shape == (40, 3)
    assert np.array_equal(partners[:, 0], np.arange(40))
    assert np.all((partners[:, 1:] >= 0) & (partners[:, 1:] < 40))
    assert np.all(partners[:, 1:] != partners[:, :1])
    assert np.array_equal(partners, script.mix_partners(40, 3, seed=5))


def test_mixes_average_images_and_or_labels():
    images = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    labels = np.array([[1, -1, -1], [-1, -1, 1], [-1, -1, -1]], np.int8)
    result = script.mixed(images, labels, np.array([[0, 1], [1, 2], [2, 0]]))
    np.testing.assert_array_equal(result["image"], (images + images[[1, 2, 0]]) / 2)
    np.testing.assert_array_equal(result["labels"], [[1, -1, 1], [-1, -1, 1], [1, -1, -1]])


def test_a_cached_run_is_compared_on_its_whole_test_split(digit_scenes_dir, tmp_path):
    """One epoch of the cached baseline on the tiny scenes, then the script: its unmixed mAP is
    the run's own evaluation of the same checkpoint, and the maps it recomputes from pixels are
    the cache's bit for bit (the program that filled the cache, at its batch size, on the same
    pixels)."""
    config = digit_scenes_config("baseline", "cached")
    config.data.name = "digit_scenes/tiny"
    config.data.data_dir = digit_scenes_dir
    config.epochs = 1
    config.logging.progress_bar = False
    results = train.train_and_evaluate(config, str(tmp_path))
    summary = script.feature_vs_pixel(
        str(tmp_path), images_per_mix=2, seed=0, batch_size=feature_cache.BATCH_SIZE
    )
    assert summary["test_images"] == train.open_data(config).info.num_test
    assert summary["mAP_unmixed"] == pytest.approx(results["last"]["mAP"], abs=1e-6)
    assert summary["cache_max_abs_error"] == 0.0
    assert 0.0 < summary["relative_l2_feature_vs_pixel_mix"]
    assert -1.0 <= summary["cosine_feature_vs_pixel_mix"] <= 1.0
    for key in ("mAP_pixel_mix", "mAP_feature_mix"):
        assert 0.0 < summary[key] <= 100.0


def test_a_mix_of_one_image_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        script.feature_vs_pixel(str(tmp_path), images_per_mix=1, seed=0, batch_size=8)
