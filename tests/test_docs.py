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
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    # every page of the navigation was written, including the rendered notebooks
    assert (site / "index.html").is_file()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "tutorials" / notebook.stem / "index.html"
        assert page.is_file(), f"the tutorial {notebook.name} was not rendered"


def _fenced_block_after(text: str, marker: str, language: str) -> str:
    """The body of the first ```language block after ``marker`` in ``text``."""
    start = text.index(marker)
    open_fence = text.index(f"```{language}\n", start) + len(f"```{language}\n")
    return text[open_fence : text.index("```", open_fence)]


def test_index_install_commands_are_the_readme_commands() -> None:
    """The home page's install commands are the README's, verbatim (CI runs the README's)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        command = _fenced_block_after(readme, marker, "bash").strip()
        assert f"```bash\n{command}\n```" in index, f"docs/index.md lacks the README's {marker}"


def test_index_quickstart_runs() -> None:
    """The quickstart code on the home page executes as written."""
    pytest.importorskip("ase")
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    code = _fenced_block_after(index, "## Quickstart", "python")
    exec(compile(code, "docs/index.md (quickstart)", "exec"), {"__name__": "quickstart"})
