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


def pytest_collection_modifyitems(items):
    """Every test without an xdist_group of its own belongs to its file's group."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
VECTORS_DIR = DATA_DIR / "vectors"


@pytest.fixture
def vectors():
    """Loads a parity-vector file from tests/data/vectors by stem, e.g. vectors('bce_loss')."""

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(VECTORS_DIR / f"{name}.npz") as f:
            return {k: f[k] for k in f.files}

    return load
