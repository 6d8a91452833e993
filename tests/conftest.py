"""Shared test set-up: 8 simulated CPU devices, a persistent compilation cache, xdist units.

Both must be configured before JAX is imported anywhere, which is why they live here. The
cache lives in the user's cache directory (like pip's), so repeated runs and fresh clones on
the same machine reuse compiled programs; `make test` passes the same location.

`make test` distributes tests over its xdist workers by file (`--dist loadfile`), except the
long parts of a file that share nothing with the rest (work_unit), and hands out the longest
units first.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/mlrpl_jax/jax_compilation_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from fixtures_data import digit_scenes_dir  # noqa: E402,F401 (session fixture for every test)


# Units of work of `make test`'s xdist workers (--dist loadfile: a file is one unit, so its
# module fixtures are built once), with the exceptions work_unit names: parts that share nothing
# with the rest of their file and would keep one worker busy for minutes, each a unit of its own.
# (xdist's own --dist loadgroup cannot say this here: it renames node ids, which pytest 9 no
# longer allows, so its groups are silently ignored and every test becomes a unit.)
def work_unit(nodeid: str) -> str:
    path, _, test = nodeid.partition("::")
    name, _, parameter = test.partition("[")
    parameter = parameter.removesuffix("]")
    if path == "tests/test_method_contract.py" and parameter:  # each method's run and checks
        return f"method_contract_{parameter}"
    if name == "test_notebook_runs_and_renders_figures":  # one unit: 02 reuses 03's SST programs
        return "notebook_runs"
    if nodeid == "tests/test_multihost.py::test_two_processes_equal_one_process[sarb]":
        return "multihost_sarb"  # the baseline's runs stay with the kill test they serve
    return path


# The units that take longest on a cold cache (2-core machine, longest first; a name ending in
# "_" stands for every unit it begins). Workers collect them first, and `make test` hands units
# out in collection order (--no-loadscope-reorder: xdist's default order, most tests first, left
# these few-test units, test_learning's single test among them, to the end of the run while the
# other worker idled). Every other unit follows in file order.
LONGEST_UNITS_FIRST = (
    "tests/test_reliability.py",
    "tests/test_multihost.py",
    "notebook_runs",
    "tests/test_learning.py",
    "multihost_sarb",
    "method_contract_",
    "tests/test_sweep.py",
    "tests/test_dry_run.py",
    "tests/test_remote_storage.py",
    "tests/test_end_to_end.py",
    "tests/test_scaling.py",
    "tests/test_satl.py",
)


def unit_rank(nodeid: str) -> int:
    unit = work_unit(nodeid)
    for rank, name in enumerate(LONGEST_UNITS_FIRST):
        if unit == name or (name.endswith("_") and unit.startswith(name)):
            return rank
    return len(LONGEST_UNITS_FIRST)


def pytest_collection_modifyitems(items):
    """In an xdist worker, the longest units come first (a stable sort: each keeps its order)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: unit_rank(item.nodeid))


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile with the units of work_unit (xdist's scheduler by scope)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
VECTORS_DIR = DATA_DIR / "vectors"


@pytest.fixture
def vectors():
    """Loads a parity-vector file from tests/data/vectors by stem, e.g. vectors('bce_loss')."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(VECTORS_DIR / f"{name}.npz") as f:
            return {k: f[k] for k in f.files}

    return load
