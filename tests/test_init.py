"""The top-level package: what a newcomer reaches for, under one import root, imported lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import allegro_ref

EXPORTS = {
    "Potential": "allegro_ref.potential",
    "WeightFileError": "allegro_ref.potential",
    "AllegroCalculator": "allegro_ref.ase",
    "AllegroConfig": "allegro_ref.model",
    "AllegroModel": "allegro_ref.model",
    "Allegro2022Config": "allegro_ref.model",
    "Allegro2022Model": "allegro_ref.model",
    "load_nequip": "allegro_ref.io",
}


def test_import_is_light():
    """``import allegro_ref`` imports neither the model (nor NumPy) nor ASE."""
    code = (
        "import sys, allegro_ref\n"
        "heavy = [m for m in ('numpy', 'ase', 'allegro_ref.model', 'allegro_ref.potential')\n"
        "         if m in sys.modules]\n"
        "print(heavy)\n"
        "dir(allegro_ref)\n"
        "assert 'allegro_ref.model' not in sys.modules  # tab completion imports nothing\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves_and_is_listed():
    assert set(allegro_ref.__all__) == {*EXPORTS, "presets", "pretrained", "__version__"}
    assert set(allegro_ref.__all__) == {*allegro_ref._EXPORTS, "__version__"}
    assert set(allegro_ref.__all__) <= set(dir(allegro_ref))
    for name, module in EXPORTS.items():
        if name == "AllegroCalculator":
            pytest.importorskip("ase")
        value = getattr(allegro_ref, name)
        assert value is getattr(sys.modules[module], name)
    from allegro_ref.model import presets

    assert allegro_ref.presets is presets
    assert allegro_ref.presets.tiny().type_names == ("O", "Cu")
    assert set(allegro_ref.pretrained.available()) == {"cu-emt", "ethanol-gfn2"}


def test_star_import_and_unknown_names():
    pytest.importorskip("ase")
    namespace: dict = {}
    exec("from allegro_ref import *", namespace)
    assert {"Potential", "AllegroConfig", "load_nequip", "presets"} <= set(namespace)
    with pytest.raises(AttributeError, match="has no attribute 'Potentail'"):
        allegro_ref.Potentail  # noqa: B018
