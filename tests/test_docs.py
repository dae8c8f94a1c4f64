"""The documentation site builds with ``mkdocs build --strict``: no broken link, no missing page,
no docstring that mkdocstrings cannot render, no notebook that fails to convert.

The notebooks are rendered without executing them here (ALLEGRO_REF_DOCS_EXECUTE=false):
tests/test_notebooks.py already executes each one. Skipped cleanly when MkDocs is not installed
(the ``docs`` extra).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("mkdocs_jupyter")
    env = dict(os.environ, ALLEGRO_REF_DOCS_EXECUTE="false", NO_MKDOCS_2_WARNING="1")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    # every page of the navigation was written, including the rendered notebooks
    assert (site / "index.html").is_file()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "tutorials" / notebook.stem / "index.html"
        assert page.is_file(), f"the tutorial {notebook.name} was not rendered"
