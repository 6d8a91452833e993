"""Training learns: a short seeded run on real digit scenes must reach an mAP far above chance.

Every other end-to-end test checks plumbing (0 < mAP <= 100, resume, logs); this one fails when
learning breaks (a wrong sign, a frozen parameter that should train, labels shuffled against
images, an augmentation that destroys the labelled objects). The run is the digit
protocol's partial-BCE baseline (ImageNet EfficientNet-Lite0, frozen to stride 16) on
`digit_scenes/small` (1,000 training / 500 test scenes) for 3 epochs with half the labels known.

Random scores give 25.3 mAP on digit scenes (class prevalence 24 %). The bound below sits
above twice chance and 15 points below what the run reaches (70.5), so it does not depend on
round-off or thread scheduling, yet a model that learnt nothing cannot pass it.
"""
import pytest

from fixtures_data import prepared_data_dir
from mlrpl_jax import train
from mlrpl_jax.config import digit_scenes_config

SMALL_DATASET = "digit_scenes/small"
CHANCE_MAP = 25.3  # random scores on digit scenes (docs/digit_scenes.md)
MIN_MAP = 55.0  # the run reaches 70.5; 2 x chance is 50.6


@pytest.fixture(scope="module")
def small_digit_scenes_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepared_data_dir(tmp_path_factory, SMALL_DATASET)


def learning_config(data_dir: str):
    """The digit protocol's baseline (configs/baseline_digits.py), shortened to three epochs."""
    config = digit_scenes_config("baseline")
    config.data.name = SMALL_DATASET
    config.data.data_dir = data_dir
    config.known_ratio = 0.5
    config.epochs = 3
    config.eval.every_epochs = 3
    config.logging.every_steps = 31
    config.logging.progress_bar = False
    config.checkpoint.keep_last = 1
    config.checkpoint.keep_best = 0
    return config


def test_baseline_learns_far_above_chance(small_digit_scenes_dir, tmp_path):
    results = train.train_and_evaluate(learning_config(small_digit_scenes_dir), str(tmp_path))
    assert results["last"]["mAP"] > MIN_MAP > 2 * CHANCE_MAP, results["last"]
