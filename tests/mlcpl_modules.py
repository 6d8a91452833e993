"""Loads one of mlcpl's subpackages (PyPI mlcpl==0.1.7, the parity target of docs/methods/
partial_losses.md and evaluation.md) without running mlcpl/__init__.py, which imports its dataset
modules and so torchvision's compiled operators (absent beside a CPU-only torch)."""
import functools
import importlib
import importlib.util
import pathlib
import sys
import types


@functools.cache
def import_mlcpl(subpackage: str):
    """(torch, mlcpl.<subpackage>); 'losses' needs torch alone, 'metrics' also torchmetrics."""
    import torch
    if not hasattr(sys.modules.get("mlcpl"), "__path__"):
        spec = importlib.util.find_spec("mlcpl")
        assert spec is not None, "mlcpl is not installed: make install (mlcpl==0.1.7, --no-deps)"
        package = types.ModuleType("mlcpl")
        package.__path__ = [str(pathlib.Path(spec.origin).parent)]
        sys.modules["mlcpl"] = package
    return torch, importlib.import_module(f"mlcpl.{subpackage}")
