"""Trained models shipped with allegro_ref, each trained by ``allegro_ref.train`` from a config
kept beside it (``<name>.yaml``, data from ``allegro_ref.data``):

- ``cu-emt``: bulk fcc copper, fitted to ASE's EMT potential (not to DFT). Good for: MD of
  bulk fcc Cu at 300-1000 K and strains of a few per cent, tutorials and benchmarks with a
  realistic (smooth, physical) energy surface. Not for: surfaces, vacancies, liquids, other
  elements, or any claim about real copper beyond what EMT describes.
- ``ethanol-gfn2``: one ethanol molecule, fitted to GFN2-xTB (tblite) energies and forces of
  500 K MD. Good for: gas-phase MD of ethanol near room temperature to 500 K, tutorials on
  molecules. Not for: other molecules, bond breaking, condensed phases, periodic cells
  (no stress), DFT-level accuracy.

`available()` (or `Potential.available_pretrained()`) lists them; `load(name)` (or
`Potential.pretrained(name)`) loads one.

Examples:
    ```python
    import allegro_ref

    for name, description in allegro_ref.pretrained.available().items():
        print(f"{name}: {description}")
    potential = allegro_ref.Potential.pretrained("ethanol-gfn2")
    print(potential.config.type_names)  # ('H', 'C', 'O')
    ```
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MODELS", "available", "path", "load"]

# name -> (weights file, one-line description)
MODELS = {
    "cu-emt": (
        "cu_emt.npz",
        "bulk fcc Cu fitted to ASE's EMT (energy, forces, stress); MD at 300-1000 K",
    ),
    "ethanol-gfn2": (
        "ethanol_gfn2.npz",
        "gas-phase ethanol fitted to GFN2-xTB (energy, forces) of 500 K MD",
    ),
}


def available() -> dict[str, str]:
    """{name: description} of the shipped models."""
    return {name: description for name, (_, description) in MODELS.items()}


def path(name: str) -> Path:
    """The weights file of the shipped model ``name`` (a `ValueError` listing the shipped
    models if there is none of that name)."""
    if name not in MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(MODELS)}")
    return Path(__file__).with_name(MODELS[name][0])


def load(name: str, min_distance: float = 0.1):
    """The shipped model ``name`` as a `Potential` (NumPy, float64).

    Raises:
        ValueError: ``name`` is not a shipped model (the message lists them).
    """
    from ..potential import Potential

    return Potential.load(path(name), min_distance=min_distance)
