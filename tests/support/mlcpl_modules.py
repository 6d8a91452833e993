"""Loads parts of mlcpl (PyPI mlcpl==0.1.7, the parity target of docs/methods/partial_losses.md,
evaluation.md and problem_and_data.md) without running mlcpl/__init__.py, which imports its
dataset modules and so torchvision's compiled operators (absent beside a CPU-only torch)."""

import functools
import importlib
import importlib.util
import pathlib
import sys
import types
from unittest import mock


def _package(name: str, path: pathlib.Path) -> None:
    """Registers an empty package `name` at `path`, so that its __init__.py never runs."""
    if not hasattr(sys.modules.get(name), "__path__"):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package


def _mlcpl_root() -> pathlib.Path:
    package = sys.modules.get("mlcpl")
    if hasattr(package, "__path__"):
        return pathlib.Path(package.__path__[0])
    spec = importlib.util.find_spec("mlcpl")
    assert spec is not None, "mlcpl is not installed: make install (mlcpl==0.1.7, --no-deps)"
    return pathlib.Path(spec.origin).parent


@functools.cache
def import_mlcpl(subpackage: str):
    """(torch, mlcpl.<subpackage>); 'losses' needs torch alone, 'metrics' also torchmetrics."""
    import torch

    _package("mlcpl", _mlcpl_root())
    return torch, importlib.import_module(f"mlcpl.{subpackage}")


@functools.cache
def import_mlcpl_dataset_core():
    """mlcpl.datasets.core, for its label-drop methods. Its module-level imports of torchvision,
    pandas and torch's TensorBoard writer (none installed here, none used by those methods) are
    answered by mocks while it loads; only those names are taken out of sys.modules again."""
    import torch  # noqa: F401  (loaded for real before the mocks go in)

    root = _mlcpl_root()
    _package("mlcpl", root)
    _package("mlcpl.datasets", root / "datasets")
    absent = [
        name
        for name in ("torchvision", "pandas", "torch.utils.tensorboard")
        if name not in sys.modules
    ]
    sys.modules.update({name: mock.MagicMock() for name in absent})
    try:
        return importlib.import_module("mlcpl.datasets.core")
    finally:
        for name in absent:
            del sys.modules[name]
