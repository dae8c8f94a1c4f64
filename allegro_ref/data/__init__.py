"""Small labelled data sets shipped with allegro_ref (extended XYZ, gzip-compressed), made by
``scripts/make_dataset.py`` (see its docstring and docs/training.md for their provenance):

- ``cu-emt`` (``cu_emt.xyz.gz``, 608 frames): fcc Cu₃₂ cells labelled with ASE's EMT
  calculator (energy, forces, stress) — 200 rattled and strained cells and Langevin MD at
  300, 600, 900 and 1200 K at three lattice constants;
- ``ethanol-gfn2`` (``ethanol_gfn2.xyz.gz``, 1000 frames): Langevin MD of ethanol at 500 K
  labelled with GFN2-xTB (tblite): energy and forces, no cell;
- ``3bpa-gfn2`` (``bpa3_gfn2.xyz.gz``, 850 frames): 3-(benzyloxy)pyridin-2-amine (3BPA,
  C₁₂H₁₂N₂O, 27 atoms), Langevin MD from its GFN2-xTB minimum labelled with GFN2-xTB (energy
  and forces, no cell): 550 frames at 300 K, 150 at 600 K and 150 at 1200 K, 20 fs apart, each
  with its thermostat temperature in ``info["temperature_K"]`` — the transferability test of
  Kovács et al. (J. Chem. Theory Comput. 17, 7696 (2021)) with GFN2-xTB labels instead of DFT.

Read them with ``allegro_ref.train.read_structures(allegro_ref.data.path("cu-emt"))``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DATASETS", "path"]

DATASETS = {
    "cu-emt": "cu_emt.xyz.gz",
    "ethanol-gfn2": "ethanol_gfn2.xyz.gz",
    "3bpa-gfn2": "bpa3_gfn2.xyz.gz",
}


def path(name: str) -> Path:
    """The file of the shipped data set ``name`` (one of ``DATASETS``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {sorted(DATASETS)}")
    return Path(__file__).with_name(DATASETS[name])
