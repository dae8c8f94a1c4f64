"""Training data: labelled structures, their neighbour lists, splits and batches.

A `Structure` is one labelled configuration on the host (NumPy): positions, species,
cell, periodicity and the reference energy, forces and stress (any of them may be missing).
`read_structures` reads them from any file ASE can read (extxyz first) or from an
``ase.db`` database. `split_structures` draws a reproducible train/validation/test split.

Training evaluates the same structures many times, so each structure's neighbour list is built
once (`build_graph`, with ``allegro_ref.neighbors``) and kept as a `Graph`.
Several graphs form one `Batch` by concatenating their atoms and edges, with the atom
indices of structure s offset by the number of atoms before it (`collate`): the batch is
one disjoint graph, which the model evaluates in one pass, and every per-structure quantity is
a segment sum over ``atom_structure`` or ``edge_structure``.

Units: Å, eV, eV/Å, eV/Å³. Stress has ASE's sign (σ = (1/V) ∂E/∂ε; negative under compression)
and is stored as a full ``[3, 3]`` matrix. A missing label is NaN.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._files import atomic_write
from .._validation import atom_types_from_species, check_cell_and_pbc, check_positions
from ..backend import device, namespace
from ..neighbors import edge_vectors, neighbor_list, within_pair_cutoffs

__all__ = [
    "Structure",
    "Graph",
    "Batch",
    "structure_from_atoms",
    "read_structures",
    "write_structures",
    "split_structures",
    "build_graph",
    "collate",
    "batches",
]

# File name endings write_structures compresses, and the module that does it.
_COMPRESSIONS = {".gz": gzip, ".bz2": bz2, ".xz": lzma}


@dataclass(frozen=True)
class Structure:
    """One labelled configuration (host NumPy arrays, float64).

    Attributes:
        positions: ``[N, 3]`` Å.
        species: ``N`` chemical symbols / type names.
        cell: ``[3, 3]`` lattice vectors as rows, Å (zeros for a molecule).
        pbc: ``[3]`` bool.
        energy: total energy, eV (NaN if unknown).
        forces: ``[N, 3]`` eV/Å (NaN if unknown).
        stress: ``[3, 3]`` eV/Å³, ASE sign (NaN if unknown or not periodic).
    """

    positions: np.ndarray
    species: tuple[str, ...]
    cell: np.ndarray
    pbc: np.ndarray
    energy: float
    forces: np.ndarray
    stress: np.ndarray

    @property
    def num_atoms(self) -> int:
        return len(self.species)

    @property
    def volume(self) -> float:
        """|det cell| in Å³ for a cell periodic in all three directions, else NaN."""
        return float(abs(np.linalg.det(self.cell))) if bool(np.all(self.pbc)) else float("nan")

    def to_atoms(self):
        """This structure as an ``ase.Atoms`` with its labels in a SinglePointCalculator."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.stress import full_3x3_to_voigt_6_stress

        atoms = Atoms(self.species, positions=self.positions, cell=self.cell, pbc=self.pbc)
        labels = {}
        if np.isfinite(self.energy):
            labels["energy"] = self.energy
        if np.all(np.isfinite(self.forces)):
            labels["forces"] = self.forces
        if np.all(np.isfinite(self.stress)):
            labels["stress"] = full_3x3_to_voigt_6_stress(self.stress)
        if labels:
            atoms.calc = SinglePointCalculator(atoms, **labels)
        return atoms


def structure_from_atoms(
    atoms: Any,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> Structure:
    """A `Structure` from an ``ase.Atoms``.

    Labels come from the attached calculator's results (what ASE's readers produce for the
    standard names ``energy``, ``forces``, ``stress``), or, when a key is given, from
    ``atoms.info[energy_key]``, ``atoms.arrays[forces_key]``, ``atoms.info[stress_key]``
    (stress as 6 Voigt components xx, yy, zz, yz, xz, xy, or 9). Missing labels become NaN.
    """
    n = len(atoms)
    results = dict(atoms.calc.results) if atoms.calc is not None else {}

    def label(key: str | None, default_name: str, table: dict):
        if key is not None:
            if key not in table:
                raise ValueError(
                    f"structure has no {default_name} under {key!r}; available: {sorted(table)}"
                )
            return table[key]
        return results.get(default_name)

    energy = label(energy_key, "energy", atoms.info)
    forces = label(forces_key, "forces", atoms.arrays)
    stress = label(stress_key, "stress", atoms.info)
    return Structure(
        positions=check_positions(atoms.get_positions()),
        species=tuple(atoms.get_chemical_symbols()),
        cell=np.array(atoms.cell.array, dtype=np.float64),
        pbc=np.array(atoms.pbc, dtype=bool),
        energy=float("nan") if energy is None else float(energy),
        forces=np.full((n, 3), np.nan) if forces is None else _forces(forces, n),
        stress=np.full((3, 3), np.nan) if stress is None else _stress_3x3(stress),
    )


def _forces(forces: Any, n: int) -> np.ndarray:
    forces = np.array(forces, dtype=np.float64)
    if forces.shape != (n, 3):
        raise ValueError(f"forces must have shape [{n}, 3] for {n} atoms, got {forces.shape}")
    return forces


def _stress_3x3(stress: Any) -> np.ndarray:
    stress = np.asarray(stress, dtype=np.float64).reshape(-1)
    if stress.shape == (9,):
        return stress.reshape(3, 3)
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"stress must have 6 (Voigt) or 9 components, got {stress.shape[0]}")


def read_structures(
    path: str | os.PathLike,
    index: str | int | slice = ":",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
) -> list[Structure]:
    """Read labelled structures from any file ASE reads (``.xyz``/``.extxyz``, optionally
    compressed ``.gz``/``.xz``/``.bz2``; an ASE database ``.db``; ...).

    Args:
        path: the file.
        index: which frames, in ASE's syntax (``":"`` all, ``"-10:"``, ``3``, a slice).
        energy_key: where the energy label is when not under the standard name (see
            `structure_from_atoms`).
        forces_key: likewise for the forces.
        stress_key: likewise for the stress.
    """
    import ase.io

    frames = ase.io.read(os.fspath(path), index=index)
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"{os.fspath(path)!r} holds no structures (index {index!r})")
    return [structure_from_atoms(a, energy_key, forces_key, stress_key) for a in frames]


def write_structures(path: str | os.PathLike, structures: Sequence[Structure]) -> None:
    """Write structures with their labels as extended XYZ (compressed if the name ends in
    `.gz`, `.bz2` or `.xz`). ASE writes per-atom columns (positions, forces) with 8
    decimals and the energy and stress at full precision. The file is replaced atomically
    (`atomic_write`): a write that fails half way leaves the previous file intact."""
    import ase.io

    name = os.fspath(path)
    frames = [s.to_atoms() for s in structures]
    compression = _COMPRESSIONS.get(os.path.splitext(name)[1])
    if compression is None:
        with atomic_write(name, "w", encoding="utf-8") as text:
            ase.io.write(text, frames, format="extxyz")
        return
    # the compressed stream ends (its trailer written) before atomic_write renames the file
    with atomic_write(name) as raw, compression.open(raw, "wt", encoding="utf-8") as text:
        ase.io.write(text, frames, format="extxyz")


def split_structures(
    structures: Sequence[Any], n_train: int, n_val: int, n_test: int | None = None, seed: int = 0
) -> tuple[list[Any], list[Any], list[Any]]:
    """A random, reproducible split into (train, validation, test) lists.

    The items are permuted with ``numpy.random.default_rng(seed)``; the first ``n_train`` go to
    training, the next ``n_val`` to validation and the next ``n_test`` (all the rest if None)
    to test.
    """
    n = len(structures)
    rest = n - n_train - n_val
    n_test = rest if n_test is None else n_test
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test > n:
        raise ValueError(
            f"cannot split {n} structures into {n_train} train + {n_val} validation + {n_test} test"
        )
    order = np.random.default_rng(seed).permutation(n)
    pick = [structures[int(i)] for i in order]
    return (
        pick[:n_train],
        pick[n_train : n_train + n_val],
        pick[n_train + n_val : n_train + n_val + n_test],
    )


@dataclass(frozen=True)
class Graph:
    """A structure with its neighbour list (host NumPy arrays).

    Attributes:
        structure: the labelled structure.
        atom_types: ``[N]`` int64 indices into the model's ``type_names``.
        centers, neighbors: ``[E]`` int64 atom indices of every directed edge i -> j.
        edge_vectors: ``[E, 3]`` float64 Å, r_e = x_j − x_i + S_e @ cell.
    """

    structure: Structure
    atom_types: np.ndarray
    centers: np.ndarray
    neighbors: np.ndarray
    edge_vectors: np.ndarray


def build_graph(structure: Structure, type_names: Sequence[str], r_max: float, cutoff_matrix=None):
    """The `Graph` of ``structure`` for a model with these ``type_names`` and cutoff
    ``r_max`` (Å); ``cutoff_matrix`` ``[T, T]`` (Å, from ``AllegroConfig.cutoff_matrix()``)
    prunes edges to per-type-pair cutoffs when given."""
    cell, pbc = check_cell_and_pbc(structure.cell, structure.pbc)
    types = atom_types_from_species(list(structure.species), type_names, structure.num_atoms)
    centers, neighbors, shifts = neighbor_list(structure.positions, cell, pbc, r_max)
    vectors = edge_vectors(structure.positions, cell, centers, neighbors, shifts)
    if cutoff_matrix is not None and np.any(cutoff_matrix < r_max):
        kept = within_pair_cutoffs(vectors, centers, neighbors, types, cutoff_matrix)
        centers, neighbors, vectors = centers[kept], neighbors[kept], vectors[kept]
    return Graph(structure, types, centers, neighbors, vectors)


@dataclass(frozen=True)
class Batch:
    """Several graphs concatenated into one disjoint graph (arrays of one namespace/device).

    Shapes: B structures, N atoms, E edges in total. Labels that are missing are NaN.

    Attributes:
        edge_vectors: ``[E, 3]`` float64 Å.
        centers, neighbors: ``[E]`` int64 atom indices into the batch's atoms.
        atom_types: ``[N]`` int64.
        atom_structure: ``[N]`` int64, the structure of every atom.
        edge_structure: ``[E]`` int64, the structure of every edge.
        num_atoms: ``[B]`` float64, atoms per structure.
        volume: ``[B]`` float64 Å³ (NaN unless periodic in 3-D).
        energy: ``[B]`` float64 eV.
        forces: ``[N, 3]`` float64 eV/Å.
        stress: ``[B, 3, 3]`` float64 eV/Å³.
        num_structures: B.
    """

    edge_vectors: Any
    centers: Any
    neighbors: Any
    atom_types: Any
    atom_structure: Any
    edge_structure: Any
    num_atoms: Any
    volume: Any
    energy: Any
    forces: Any
    stress: Any
    num_structures: int

    @property
    def total_atoms(self) -> int:
        return int(self.atom_types.shape[0])


def collate(graphs: Sequence[Graph], like: Any = None) -> Batch:
    """Concatenate ``graphs`` into one `Batch`, on the namespace and device of ``like``
    (an array, or a model: its ``namespace`` and ``device``; NumPy if None). Atom indices of
    graph s are offset by the number of atoms in graphs 0..s−1."""
    if not graphs:
        raise ValueError("collate needs at least one graph")
    sizes = np.array([g.structure.num_atoms for g in graphs])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edge_counts = [g.centers.shape[0] for g in graphs]
    host = dict(
        edge_vectors=np.concatenate([g.edge_vectors for g in graphs]).reshape(-1, 3),
        centers=np.concatenate([g.centers + o for g, o in zip(graphs, offsets, strict=True)]),
        neighbors=np.concatenate([g.neighbors + o for g, o in zip(graphs, offsets, strict=True)]),
        atom_types=np.concatenate([g.atom_types for g in graphs]),
        atom_structure=np.repeat(np.arange(len(graphs)), sizes),
        edge_structure=np.repeat(np.arange(len(graphs)), edge_counts),
        num_atoms=sizes.astype(np.float64),
        volume=np.array([g.structure.volume for g in graphs]),
        energy=np.array([g.structure.energy for g in graphs]),
        forces=np.concatenate([g.structure.forces for g in graphs]).reshape(-1, 3),
        stress=np.stack([g.structure.stress for g in graphs]),
    )
    for name in ("centers", "neighbors", "atom_types", "atom_structure", "edge_structure"):
        host[name] = host[name].astype(np.int64)
    if like is not None:
        if hasattr(like, "namespace") and hasattr(like, "device"):  # a model
            xp, where = like.namespace, like.device
        else:
            xp, where = namespace(like), device(like)
        host = {k: xp.asarray(v, device=where) for k, v in host.items()}
    return Batch(**host, num_structures=len(graphs))


def batches(
    graphs: Sequence[Graph], batch_size: int, rng: np.random.Generator | None = None, like=None
):
    """Yield `Batch` es of ``batch_size`` graphs (the last one may be smaller), in a
    random order drawn from ``rng`` (in the given order if None), on the namespace and device
    of ``like`` (see `collate`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.arange(len(graphs)) if rng is None else rng.permutation(len(graphs))
    for start in range(0, len(graphs), batch_size):
        yield collate([graphs[int(i)] for i in order[start : start + batch_size]], like=like)
