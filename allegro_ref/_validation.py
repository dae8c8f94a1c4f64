"""Checks of user input (positions, cells, pbc, species) with errors in the user's language.

Everything here runs on the host in NumPy: inputs are copied to host memory once (``to_host``),
checked, and the checked copies feed the neighbor list. Each check raises ``ValueError`` naming
what is wrong and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import to_numpy

# Chemical symbols by atomic number (index 0 is a placeholder for "no element").
CHEMICAL_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge "
    "As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm "
    "Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U "
    "Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()


def to_host(x: Any) -> np.ndarray:
    """``x`` (NumPy, CuPy, any Array-API array, nested lists, scalars) as a host NumPy array."""
    return np.asarray(to_numpy(x))


def host_float64(x: Any, name: str) -> np.ndarray:
    """``x`` as a contiguous float64 host array; refuses non-numeric data."""
    host = to_host(x)
    if not (np.issubdtype(host.dtype, np.floating) or np.issubdtype(host.dtype, np.integer)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {host.dtype}")
    return np.ascontiguousarray(host, dtype=np.float64)


def check_positions(x: Any) -> np.ndarray:
    """Host float64 positions ``[n_atoms, 3]``, all finite."""
    positions = host_float64(x, "positions")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [n_atoms, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.flatnonzero(~np.all(np.isfinite(positions), axis=1))
        raise ValueError(f"positions of atoms {bad[:10].tolist()} are not finite")
    return positions


def check_cell_and_pbc(cell: Any, pbc: bool | Any) -> tuple[np.ndarray, np.ndarray]:
    """Host ``(cell [3, 3] float64, pbc [3] bool)``.

    ``cell`` rows are lattice vectors (Å); ``None`` is an all-zero cell. ``pbc`` is one bool or
    three. Lattice vectors of non-periodic directions are ignored (they may be zero); those of
    periodic directions must be non-zero and linearly independent.
    """
    host_cell = np.zeros((3, 3)) if cell is None else host_float64(cell, "cell")
    if host_cell.shape != (3, 3):
        raise ValueError(
            f"cell must have shape [3, 3] (rows = lattice vectors), got {host_cell.shape}"
        )
    if not np.all(np.isfinite(host_cell)):
        raise ValueError(f"cell is not finite: {host_cell.tolist()}")
    host_pbc = to_host(pbc)
    if host_pbc.dtype != np.bool_ or host_pbc.shape not in ((), (3,)):
        raise ValueError(f"pbc must be one bool or three bools, got {pbc!r}")
    host_pbc = np.array(np.broadcast_to(host_pbc, (3,)))
    periodic = host_cell[host_pbc]
    if periodic.shape[0] and np.linalg.matrix_rank(periodic) < periodic.shape[0]:
        raise ValueError(
            f"the lattice vectors of the periodic directions {np.flatnonzero(host_pbc).tolist()} "
            f"must be non-zero and linearly independent, got cell {host_cell.tolist()}"
        )
    return host_cell, host_pbc


def atom_types_from_species(species: Any, type_names: Sequence[str], n_atoms: int) -> np.ndarray:
    """Type indices ``[n_atoms]`` int64 of ``species``: type names (strings, e.g. ``"Cu"``) or
    atomic numbers (mapped to chemical symbols, which must then be among ``type_names``)."""
    names = list(type_names)
    values = np.asarray(species) if isinstance(species, (list, tuple)) else to_host(species)
    if values.shape != (n_atoms,):
        raise ValueError(
            f"species must hold one entry per atom: got shape {values.shape} for {n_atoms} atoms"
        )
    if n_atoms == 0:
        return np.zeros(0, dtype=np.int64)
    if np.issubdtype(values.dtype, np.integer):
        numbers = values.astype(np.int64)
        bad = numbers[(numbers < 1) | (numbers >= len(CHEMICAL_SYMBOLS))]
        if bad.size:
            raise ValueError(f"atomic number {int(bad[0])} is not an element (1..118)")
        values = np.asarray(CHEMICAL_SYMBOLS, dtype=object)[numbers]
    elif values.dtype.kind != "U" and not (
        values.dtype.kind == "O" and all(isinstance(v, str) for v in values.tolist())
    ):  # a NumPy string array needs no per-atom check; an object array must hold only strings
        raise ValueError(
            f"species must be type names (strings) or atomic numbers (integers), got dtype "
            f"{values.dtype}"
        )
    unique, inverse = np.unique(values.astype(str), return_inverse=True)
    index = {name: i for i, name in enumerate(names)}
    unknown = [str(u) for u in unique if u not in index]
    if unknown:
        raise ValueError(
            f"species {unknown[0]!r} is not in the model's type_names {names}"
            + (f" (also unknown: {unknown[1:]})" if len(unknown) > 1 else "")
        )
    return np.asarray([index[str(u)] for u in unique], dtype=np.int64)[inverse.reshape(-1)]


def check_min_distance(
    vectors: np.ndarray,
    centers: np.ndarray,
    neighbors: np.ndarray,
    min_distance: float,
    shifts: np.ndarray | None = None,
    *,
    atoms: str = "atoms",
    where: str = "",
) -> None:
    """Refuse atoms closer than ``min_distance`` Å: a ``ValueError`` naming the closest pair, its
    periodic image (if ``shifts`` is given and non-zero), its distance and ``min_distance``.

    ``vectors`` ``[n_edges, 3]`` Å are the edges of a neighbor list, ``centers`` and
    ``neighbors`` ``[n_edges]`` their two atoms, ``shifts`` ``[n_edges, 3]`` the lattice shifts
    of the neighbors (``None``: no cell). ``atoms`` and ``where`` say what the indices count:
    "atoms 0 and 1", or "rows 0 and 1 of this domain" for ``atoms="rows"``,
    ``where=" of this domain"``.
    """
    if vectors.shape[0] == 0:
        return
    lengths = np.linalg.norm(vectors, axis=1)
    e = int(np.argmin(lengths))
    if lengths[e] < min_distance:
        image = ""
        if shifts is not None and np.any(shifts[e]):
            image = f" (periodic image {shifts[e].tolist()})"
        raise ValueError(
            f"{atoms} {int(centers[e])} and {int(neighbors[e])}{image}{where} are "
            f"{lengths[e]:.4g} Å apart, closer than min_distance = {min_distance} Å"
        )
