"""The start-of-run check of backbone weights and label embeddings (mlrpl_jax/core/run_inputs.py),
the method argument of the paper config files and the paper configs' reference defaults."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from test_config import load_config_file

from mlrpl_jax import config as config_lib
from mlrpl_jax.core import run_inputs, train
from mlrpl_jax.data import datasets

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAPER_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if not p.stem.endswith("_digits"))
DIGIT_CONFIGS = sorted((ROOT / "configs").glob("*_digits.py"))


def with_files(config, tmp_path: pathlib.Path, rows: int | None = None, dim: int = 300):
    """config with an (empty) backbone .npz and a (rows, dim) embedding array that exist."""
    np.savez(tmp_path / "resnet101.npz")
    rows = datasets.get_dataset_spec(config.data.name).num_classes if rows is None else rows
    np.save(tmp_path / "words.npy", np.zeros((rows, dim), np.float32))
    config.model.pretrained = str(tmp_path / "resnet101.npz")
    config.embeddings.path = str(tmp_path / "words.npy")
    return config


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.name)
def test_paper_config_without_files_stops_before_the_data(path, tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the dataset was opened before the input files were checked")

    monkeypatch.setattr(train, "PartialLabelData", no_data)
    config = load_config_file(path)
    config.data.data_dir = str(tmp_path / "absent")
    with pytest.raises(
        config_lib.ConfigError,
        match=r"mlrpl_jax\.tools\.import_weights --input="
        r"resnet101\.pth.*allow_random_frozen_backbone",
    ):
        train.train_and_evaluate(config, str(tmp_path / "work"))
    config.model.pretrained = str(tmp_path / "resnet101.npz")
    np.savez(config.model.pretrained)
    with pytest.raises(
        config_lib.ConfigError,
        match=r"embeddings.path is empty.*mlrpl_jax\.tools\."
        f"prepare_embeddings --dataset={config.data.name}",
    ):
        train.train_and_evaluate(config, str(tmp_path / "work"))
    run_inputs.check_run_inputs(with_files(config, tmp_path))


@pytest.mark.parametrize("path", DIGIT_CONFIGS, ids=lambda p: p.name)
def test_digit_configs_need_no_files(path):
    run_inputs.check_run_inputs(load_config_file(path))


def test_random_frozen_backbone_takes_an_explicit_opt_out(tmp_path):
    config = with_files(config_lib.paper_config("baseline", "voc2007"), tmp_path)
    config.model.pretrained = ""
    with pytest.raises(config_lib.ConfigError, match="frozen early stages"):
        run_inputs.check_run_inputs(config)
    config.model.allow_random_frozen_backbone = True
    run_inputs.check_run_inputs(config)
    config.model.update(allow_random_frozen_backbone=False, freeze_early_stages=False)
    run_inputs.check_run_inputs(config)


def test_wrong_backbone_files(tmp_path):
    config = with_files(config_lib.paper_config("sst", "coco2014"), tmp_path)
    config.model.pretrained = str(tmp_path / "absent.npz")
    with pytest.raises(
        config_lib.ConfigError, match=r"absent\.npz' does not exist.*--output=.*absent\.npz"
    ):
        run_inputs.check_run_inputs(config)
    config.model.pretrained = str(tmp_path / "resnet101.pth")
    (tmp_path / "resnet101.pth").write_bytes(b"torch")
    with pytest.raises(config_lib.ConfigError, match=r"not the \.npz.*--input=.*resnet101\.pth"):
        run_inputs.check_run_inputs(config)


@pytest.mark.parametrize(
    "rows, dim, kind", [(20, 300, "npy"), (80, 512, "npy"), (80, 300, "glove")]
)
def test_wrong_embedding_files(tmp_path, rows, dim, kind):
    config = with_files(config_lib.paper_config("hst", "coco2014"), tmp_path, rows, dim)
    config.embeddings.kind = kind
    if kind == "glove":
        config.embeddings.path = str(tmp_path / "absent.txt")
        message = r"absent\.txt' does not exist.*prepare_embeddings --dataset=coco2014"
    else:
        message = (
            rf"shape \({rows}, {dim}\), but coco2014 needs \(80, embeddings.dim=300\)"
            r".*prepare_embeddings"
        )
    with pytest.raises(config_lib.ConfigError, match=message):
        run_inputs.check_run_inputs(config)


def test_vg200_embeddings_have_200_rows(tmp_path):
    config = with_files(config_lib.paper_config("sarb", "vg200"), tmp_path, rows=200)
    run_inputs.check_run_inputs(config)
    config.embeddings.dim = 64
    with pytest.raises(config_lib.ConfigError, match=r"needs \(200, embeddings.dim=64\)"):
        run_inputs.check_run_inputs(config)


def test_paper_config_file_takes_another_method_after_a_colon():
    config = load_config_file(ROOT / "configs" / "dsrb_coco.py", "baseline")
    config_lib.validate_config(config)
    assert config.to_dict() == config_lib.paper_config("baseline", "coco2014").to_dict()
    with pytest.raises(config_lib.ConfigError, match="unknown method 'dsbr'"):
        load_config_file(ROOT / "configs" / "dsrb_coco.py", "dsbr")


def test_overriding_the_method_names_the_colon_form():
    config = load_config_file(ROOT / "configs" / "dsrb_coco.py")
    config.method = "baseline"
    with pytest.raises(
        config_lib.ConfigError, match=r"section 'dsrb'.*configs/dsrb_coco\.py:baseline"
    ):
        config_lib.validate_config(config)
    config = load_config_file(ROOT / "configs" / "sarb_voc.py")
    config.method = "sst"
    with pytest.raises(config_lib.ConfigError, match=r"section 'sarb'.*configs/sarb_voc\.py:sst"):
        config_lib.validate_config(config)
    config = load_config_file(
        ROOT / "configs" / "dsrb_digits.py"
    )  # no colon form: not a paper config
    config.method = "baseline"
    with pytest.raises(
        config_lib.ConfigError,
        match=r"section 'dsrb'.*use the method's own config "
        r"file \(configs/baseline_\*\.py\)",
    ) as error:
        config_lib.validate_config(config)
    assert ":baseline" not in str(error.value)


def test_command_line_switches_the_method_and_stops_before_the_data(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlrpl_jax.main",
            "--config=configs/dsrb_coco.py:baseline",
            f"--workdir={tmp_path}",
            f"--config.data.data_dir={tmp_path / 'absent'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "import_weights" in result.stderr and "not prepared" not in result.stderr


def test_paper_configs_reproduce_the_reference_where_the_published_numbers_came_from():
    for path in sorted((ROOT / "configs").glob("sarb_*.py")):
        config = load_config_file(path)
        assert config.sarb.blend_known_when_no_unknown == (path in PAPER_CONFIGS), path.name
    assert load_config_file(ROOT / "configs" / "hst_coco.py").hst.proto_loss_sign == "reference"
