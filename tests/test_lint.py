"""``ruff check`` of the whole repository is clean: the library, the tests, the benchmarks, the
scripts, the examples and the notebooks, with the rules of pyproject.toml ([tool.ruff.lint]):
pyflakes, pycodestyle, isort, bugbear, the pylint errors and warnings, ruff's bug-catching rules
and the one-screen limits (McCabe complexity 10, 40 statements per function).

Skipped when ruff is not installed (it comes with the ``dev`` extra).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _ruff() -> list[str]:
    try:
        import ruff  # noqa: F401  (the package ships the binary and a __main__)
    except ImportError:
        found = shutil.which("ruff")
        if found is None:
            pytest.skip("ruff is not installed (pip install -e '.[dev]')")
        return [found]
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_is_clean() -> None:
    done = subprocess.run(
        [*_ruff(), "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"
