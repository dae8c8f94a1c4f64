"""MkDocs hook: the site serves its own MathJax, so formulas are typeset offline.

MathJax 3 comes from a Python package of the ``docs`` extra, ``django-static-mathjax``
(MathJax 3.2.2 unchanged, Apache License 2.0; despite its name it installs no Django). Two
files of it are added to the site under ``javascripts/mathjax/``: the combined component
``tex-svg-full.js`` (TeX input with every extension built in, SVG output, so there is no font
file and nothing is loaded on demand) and MathJax's LICENSE. ``mkdocs.yml`` loads that script
on every page, after the configuration in ``docs/javascripts/mathjax.js``.

The notebook pages share it: mkdocs-jupyter's template would add a MathJax 2 ``<script>`` of its
own (from a CDN unless ``custom_mathjax_url`` names another) and a Mermaid loader that imports
from a CDN when a page has a diagram; ``on_post_page`` removes both.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

DISTRIBUTION = "django-static-mathjax"
ROOT_IN_DISTRIBUTION = "mathjax/static/mathjax"
SITE_FOLDER = "javascripts/mathjax"
FILES = {"tex-svg-full.js": "es5/tex-svg-full.js", "LICENSE": "LICENSE"}

# What nbconvert's templates write into each notebook page and would fetch from a CDN: MathJax 2
# with its configuration, and a loader of Mermaid diagrams (which the tutorials do not use).
_NOTEBOOK_CDN_SCRIPTS = re.compile(
    r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->"
    r'|<script type="module">(?:(?!</script>).)*?\.jp-Mermaid(?:(?!</script>).)*</script>',
    flags=re.DOTALL,
)


def _mathjax_root() -> Path:
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise PluginError(
            f"the site serves MathJax from the Python package {DISTRIBUTION!r}, which is not "
            'installed: pip install -e ".[docs]"'
        ) from None
    return Path(distribution.locate_file(ROOT_IN_DISTRIBUTION))


def on_files(files, config):
    root = _mathjax_root()
    for name, source in FILES.items():
        path = root / source
        if not path.is_file():
            raise PluginError(f"{DISTRIBUTION} has no {source} (looked in {root})")
        files.append(File.generated(config, f"{SITE_FOLDER}/{name}", abs_src_path=str(path)))
    return files


def on_post_page(output, page, config):
    return _NOTEBOOK_CDN_SCRIPTS.sub("", output)
