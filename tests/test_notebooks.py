"""The tutorials in notebooks/ are part of the test suite.

- Each notebook is stored without outputs (small diffs, no stale plots in git): checked here.
- Each notebook executes top to bottom in a fresh kernel, with the non-interactive matplotlib
  backend, at the default size (ALLEGRO_REF_TUTORIAL_SCALE=1). The notebooks assert the numbers
  they show (equivariance errors, finite-difference agreement, energy drift), so a broken claim
  fails here, not only a crash.

Skipped cleanly when nbclient / ipykernel are not installed (the ``notebooks`` extra).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# seconds per cell; the slowest cell at the default scale takes a few seconds
CELL_TIMEOUT = 300


def test_notebooks_exist() -> None:
    assert len(NOTEBOOKS) >= 1, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path: Path) -> None:
    """No outputs, no execution counts: the .ipynb in git is source only."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name}: cell {index} has stored outputs"
        assert cell.get("execution_count") is None, (
            f"{path.name}: cell {index} has an execution count"
        )


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that runs this interpreter: the notebooks see the same environment as the
    tests, whatever kernels a user has installed elsewhere (JUPYTER_PATH is searched first)."""
    name = "allegro-ref-tests"
    spec_dir = tmp_path / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "allegro_ref tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    return name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the kernel inherits this process's environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
