"""Shared test set-up: 8 simulated CPU devices, a persistent compilation cache, xdist groups.

Both must be configured before JAX is imported anywhere, which is why they live here. The
cache lives in the user's cache directory (like pip's), so repeated runs and fresh clones on
the same machine reuse compiled programs; `make test` passes the same location.

`make test` distributes tests over its xdist workers by group (`--dist loadgroup`): a test
file is one group, so its module fixtures are built once, except where a file marks its own
groups (xdist_group) to split a long file whose parts share nothing, such as the contract
suite's runs of each method.
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

# The groups that take longest on a cold cache (2-core machine, longest first; a name ending in
# "_" stands for every group it begins). xdist workers collect them first and `make test` hands
# groups out in collection order (--no-loadscope-reorder; xdist's default order, most tests
# first, left these few-test groups, test_learning's single test among them, to the end of the
# run while the other worker idled). Every other group follows in file order.
LONGEST_GROUPS_FIRST = (
    "tests/test_reliability.py",
    "tests/test_multihost.py",
    "tests/test_learning.py",
    "notebook_03_train_and_compare",
    "multihost_sarb",
    "notebook_02_inside_the_methods",
    "method_contract_",
    "tests/test_sweep.py",
    "tests/test_dry_run.py",
    "tests/test_remote_storage.py",
    "tests/test_end_to_end.py",
    "tests/test_scaling.py",
    "tests/test_satl.py",
)


def group_rank(group: str) -> int:
    for rank, name in enumerate(LONGEST_GROUPS_FIRST):
        if group == name or (name.endswith("_") and group.startswith(name)):
            return rank
    return len(LONGEST_GROUPS_FIRST)


def pytest_collection_modifyitems(items):
    """Every test without an xdist_group of its own belongs to its file's group; in an xdist
    worker, the longest groups come first (a stable sort: each group keeps its order)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: group_rank(item.get_closest_marker("xdist_group").args[0]))


DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
VECTORS_DIR = DATA_DIR / "vectors"


@pytest.fixture
def vectors():
    """Loads a parity-vector file from tests/data/vectors by stem, e.g. vectors('bce_loss')."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(VECTORS_DIR / f"{name}.npz") as f:
            return {k: f[k] for k in f.files}

    return load
