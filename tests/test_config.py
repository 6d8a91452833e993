"""Config schema, validation messages and the command line's handling of overrides."""

import importlib.util
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from mlrpl_jax import config as config_lib
from mlrpl_jax import methods

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted((ROOT / "configs").glob("*.py"))


def load_config_file(path: pathlib.Path, *arg: str):
    """The config file's get_config(), or get_config(arg) as for `--config=path:arg`."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*arg)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_validates_and_documents_its_command(path):
    config = load_config_file(path)
    config_lib.validate_config(config)
    module_doc = path.read_text().split('"""')[1]
    assert f"--config=configs/{path.name}" in module_doc


def test_base_config_has_the_reference_script_defaults():
    config = config_lib.base_config()
    assert (config.optim.lr, config.optim.weight_decay, config.batch_size, config.epochs) == (
        1e-5,
        5e-4,
        8,
        20,
    )
    assert (config.data.image_size, config.model.depth, config.known_ratio) == (448, 101, 0.5)


def test_unknown_key_lists_the_valid_keys():
    config = config_lib.base_config()
    config.optim.learning_rate = 0.1
    with pytest.raises(
        config_lib.ConfigError,
        match=r"unknown config key 'optim.learning_rate'"
        r".*optim\.lr",
    ):
        config_lib.validate_config(config)


def test_unknown_top_level_key():
    config = config_lib.base_config()
    config.knwon_ratio = 0.3
    with pytest.raises(config_lib.ConfigError, match="knwon_ratio.*known_ratio"):
        config_lib.validate_config(config)


def test_wrong_type_is_reported_with_the_expected_type():
    values = config_lib.base_config().to_dict()
    values["batch_size"] = "eight"
    config = ml_collections.ConfigDict(values)
    with pytest.raises(config_lib.ConfigError, match="'batch_size' must be of type int"):
        config_lib.validate_config(config)


def test_integer_is_accepted_for_a_float_but_not_a_bool_for_an_int():
    config = config_lib.base_config()
    config.known_ratio = 1
    config_lib.validate_config(config)
    values = config.to_dict()
    values["epochs"] = True
    config = ml_collections.ConfigDict(values)
    with pytest.raises(config_lib.ConfigError, match="'epochs' must be of type int"):
        config_lib.validate_config(config)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_known_ratio_outside_the_unit_interval(ratio):
    config = config_lib.base_config()
    config.known_ratio = ratio
    with pytest.raises(config_lib.ConfigError, match=r"known_ratio must be in \(0, 1\]"):
        config_lib.validate_config(config)


@pytest.mark.parametrize(
    "label_drop, known_ratio, labels_per_category, message",
    [
        ("single_positive", 1.0, 0, "data.label_drop must be one of elementwise, one_positive"),
        ("one_positive", 0.5, 0, "chooses the known labels itself.*known_ratio=1.0"),
        ("per_category", 1.0, 0, "labels_per_category.*even integer >= 2"),
        ("elementwise", 0.5, 100, "labels_per_category applies only to label_drop='per_category'"),
    ],
)
def test_label_drop_settings_are_checked(label_drop, known_ratio, labels_per_category, message):
    config = config_lib.base_config()
    config.data.label_drop, config.known_ratio = label_drop, known_ratio
    config.data.labels_per_category = labels_per_category
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate_config(config)
    config.data.label_drop, config.known_ratio = "per_category", 1.0
    config.data.labels_per_category = 100
    config_lib.validate_config(config)


def test_unknown_method_lists_the_registered_methods():
    config = config_lib.base_config()
    config.method = "sstt"
    with pytest.raises(config_lib.ConfigError, match="unknown method 'sstt'.*baseline"):
        config_lib.validate_config(config)
    assert "baseline" in methods.available_methods()


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlrpl_jax.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_line_rejects_an_unknown_override(tmp_path):
    result = run_main(
        "--config=configs/baseline_digits.py",
        f"--workdir={tmp_path}",
        "--config.optim.learning_rate=0.1",
    )
    assert result.returncode != 0
    assert "learning_rate" in result.stderr


def test_command_line_rejects_a_mistyped_override(tmp_path):
    result = run_main(
        "--config=configs/baseline_digits.py", f"--workdir={tmp_path}", "--config.batch_size=big"
    )
    assert result.returncode != 0
    assert "batch_size" in result.stderr


def test_command_line_rejects_a_bad_known_ratio(tmp_path):
    result = run_main(
        "--config=configs/baseline_digits.py", f"--workdir={tmp_path}", "--config.known_ratio=1.5"
    )
    assert result.returncode != 0
    assert "known_ratio must be in (0, 1]" in result.stderr


@pytest.mark.parametrize("dataset", ["coco", "voc", "vg"])
def test_baseline_paper_configs_are_the_papers_baseline_row(dataset):
    config = load_config_file(ROOT / "configs" / f"baseline_{dataset}.py")
    assert config.method == "baseline" and config.batch_size == 8 and config.model.depth == 101
    assert config.data.name == {"coco": "coco2014", "voc": "voc2007", "vg": "vg200"}[dataset]


def test_a_config_recorded_before_keys_were_added_restores_with_their_defaults():
    recorded = config_lib.paper_config("hst", "voc2007").to_dict()
    del recorded["model"]["conv_impl"], recorded["hst"]["intra_pseudo_bce_weight"]
    recorded["hst"]["num_prototypes"] = 7
    config = config_lib.config_from_record(recorded)
    config_lib.validate_config(config)
    assert config.model.conv_impl == "auto" and config.hst.intra_pseudo_bce_weight == 1.0
    assert config.hst.num_prototypes == 7 and config.batch_size == 32


DIGIT_CONFIG_FILES = sorted((ROOT / "configs").glob("*_digits.py"))


@pytest.mark.parametrize("path", DIGIT_CONFIG_FILES, ids=lambda p: p.name)
def test_every_digit_config_has_the_large_regime_with_the_papers_proportions(path):
    small, large = load_config_file(path), load_config_file(path, "large")
    config_lib.validate_config(large)
    assert (small.data.name, small.epochs, small.optim.lr_decay_epochs) == (
        "digit_scenes/small",
        8,
        4,
    )
    assert (large.data.name, large.epochs, large.optim.lr_decay_epochs) == (
        "digit_scenes/large",
        4,
        2,
    )
    # Epoch options are the papers' (out of 20) divided by 20 / epochs, rounded, >= 1 if > 0;
    # per-epoch rates multiplied by it: the same fraction of the run in both regimes.
    method = methods.get_method_class(large.method)
    defaults = method.default_config()
    for key, kind in method.schedule_options.items():
        if kind == "epochs":
            expected = max(round(defaults[key] / 5), 1 if defaults[key] > 0 else 0)
        else:
            expected = defaults[key] * 5
        assert large[large.method][key] == pytest.approx(expected), key
    # The cached regime: the same run on cached backbone maps, unaugmented.
    cached = load_config_file(path, "cached")
    config_lib.validate_config(cached)
    assert cached.data.feature_cache and cached.data.train_augmentation == "none"
    cached.data.update(feature_cache=False, train_augmentation=large.data.train_augmentation)
    assert cached.to_dict() == large.to_dict()
    with pytest.raises(
        config_lib.ConfigError, match="unknown digit regime 'huge'; valid: small, large, cached"
    ):
        load_config_file(path, "huge")


@pytest.mark.parametrize(
    "recipe, method_config, arg",
    [
        ("ema_teacher_logicmix_digits.py", "ema_teacher_digits.py", "small"),
        ("ema_teacher_logicmix_digits.py", "ema_teacher_digits.py", "cached"),
        ("ema_teacher_logicmix_coco.py", "ema_teacher_coco.py", "ema_teacher"),
        ("ema_teacher_logicmix_coco.py", "sarb_coco.py", "sarb"),
    ],
)
def test_the_logicmix_recipe_configs_add_only_the_authors_logicmix(recipe, method_config, arg):
    config = load_config_file(ROOT / "configs" / recipe, arg)
    config_lib.validate_config(config)
    assert config.logicmix.to_dict() == config_lib.AUTHORS_LOGICMIX
    expected = load_config_file(ROOT / "configs" / method_config, arg)
    expected.logicmix.update(config_lib.AUTHORS_LOGICMIX)
    assert config.to_dict() == expected.to_dict()
