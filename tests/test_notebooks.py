"""Every notebook in notebooks/ runs top to bottom without an error (executed in memory, never saved).

Each `notebooks/*.ipynb` becomes one test, so a notebook added later is picked up automatically. The
kernel runs with the working directory notebooks/ and the environment variable TINYFT_NOTEBOOK_SMALL=1:
a notebook reads it to shrink its settings,

    SMALL = os.environ.get("TINYFT_NOTEBOOK_SMALL") == "1"
    steps = 30 if SMALL else 200

so the whole module stays within a few minutes on 2 cores. The kernel is ipykernel's "python3" spec started
with this interpreter (sys.executable), and it imports tinyft from this checkout (PYTHONPATH), so the
notebooks test the same code as the rest of the suite. Skipped only when the notebook extras are missing:
pip install ".[notebooks]".
"""

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the kernel: small settings, this checkout on the path, and
    a "python3" kernelspec whose command is this interpreter (first on JUPYTER_PATH, so a user-level spec
    pointing at another Python cannot win)."""
    pytest.importorskip("nbclient", reason="notebook extras not installed: pip install '.[notebooks]'")
    pytest.importorskip("nbformat", reason="notebook extras not installed: pip install '.[notebooks]'")
    pytest.importorskip("ipykernel", reason="notebook extras not installed: pip install '.[notebooks]'")
    from ipykernel.kernelspec import get_kernel_dict

    jupyter_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = get_kernel_dict()
    spec["argv"][0] = sys.executable
    (spec_dir / "kernel.json").write_text(json.dumps(spec))

    paths = [str(jupyter_dir)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    python_path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {
        "TINYFT_NOTEBOOK_SMALL": "1",
        "JUPYTER_PATH": os.pathsep.join(paths),
        "PYTHONPATH": os.pathsep.join(python_path),
    }


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, kernel_env, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for name, value in kernel_env.items():
        monkeypatch.setenv(name, value)  # the kernel process inherits the test's environment
    notebook = nbformat.read(path, as_version=4)  # in memory: the committed file is never rewritten
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{path.name} failed:\n{err}", pytrace=False)
