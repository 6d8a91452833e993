"""The notebooks in notebooks/ run top to bottom, render their figures and are stored clean.

Each notebook is executed in a fresh kernel with nbclient, with its small settings (the
default), the session's prepared 'tiny' digit-scenes build and figure export to a temporary
directory. The kernel runs on one CPU device with cheaper XLA code generation: the notebooks'
time goes almost entirely into compiling tiny models, and they check behaviour, not speed.
Notebook 03 trains every method at one known proportion instead of two (it compiles once per
method and proportion): its figures, its table and its checks of each method's own parts are
the same code at p = 0.3. Notebook 02 trains SST with the settings of notebook 03's SST run at
p = 0.3, so whichever of the two runs second finds its SST programs in the session's
compilation cache (conftest.py keeps the notebook runs in one xdist unit, one after the other).
"""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT_PER_CELL_S = 600
FAST_COMPILE_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)


def kernel_env(data_dir: str, figures_dir: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": FAST_COMPILE_XLA_FLAGS,  # replaces the suite's 8 simulated devices
            "MLRPL_NOTEBOOK_SMALL": "1",
            "MLRPL_NOTEBOOK_KNOWN_RATIOS": "0.3",
            "MLRPL_NOTEBOOK_DATA_DIR": data_dir,
            "MLRPL_NOTEBOOK_FIGURES": str(figures_dir),
        }
    )
    return env


def test_there_are_three_notebooks():
    assert [path.name[:3] for path in NOTEBOOKS] == ["01_", "02_", "03_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name} is stored with outputs; clear them before committing"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_and_renders_figures(path, digit_scenes_dir, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    figures_dir = tmp_path / "figures"
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT_PER_CELL_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=kernel_env(digit_scenes_dir, figures_dir))  # raises CellExecutionError
    figures = sorted(figures_dir.glob(f"{path.name[:2]}_*.png"))
    assert figures, f"{path.name} saved no figure to MLRPL_NOTEBOOK_FIGURES"
    assert all(figure.stat().st_size > 5_000 for figure in figures), figures
