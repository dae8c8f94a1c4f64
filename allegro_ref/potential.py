"""``Potential``: atoms in, energy, forces, stress, per-atom energies and virials out.

One evaluation (``Potential.compute``):

1. check the input on the host (finite positions, known species, cell and pbc, no two atoms
   closer than ``min_distance`` including periodic images);
2. neighbour list on the host (``allegro_ref.neighbors``), pruned to the per-edge-type cutoffs
   (exact: the model's envelope is zero beyond them; pruning only saves work); edge vectors
   r_e = x_j - x_i + S_e @ cell in float64, moved to the model's backend;
3. the model on its own backend (NumPy, CuPy, ...): per-atom energies E_i, then one backward
   pass with ∂E/∂E_i = 1 gives g_e = ∂E/∂r_e for every edge;
4. from g_e, with segment sums over edges (no loops):

   - forces, F = -∂E/∂x: since ∂r_e/∂x_j = -∂r_e/∂x_i = 1 for e = (i -> j),
     F_i = Σ_{e: centre i} g_e - Σ_{e: neighbour i} g_e;
   - stress (ASE sign, eV/Å³), σ = (1/V) ∂E/∂ε for the strain x -> x (1 + ε), cell -> cell (1 + ε):
     every r_e -> r_e (1 + ε), so σ = (1/V) Σ_e r_e ⊗ g_e (symmetrized; its antisymmetric part
     is zero for a rotation-invariant energy). Only for cells periodic in all three directions;
     ``None`` otherwise;
   - per-atom virials W_i = -Σ_{e: centre i} r_e ⊗ g_e (each edge's term is assigned to its
     centre atom, which owns the edge's energy), so that Σ_i W_i = -V σ is the total virial
     (the sign convention of nequip and LAMMPS: W = -∂E/∂ε).

Weights are stored in one versioned ``.npz`` file (``Potential.save`` / ``Potential.load``):
an entry ``__metadata__`` holding a JSON string (format name, format version, allegro_ref
version, model dtype, the config as a dict, every parameter's name and shape) and one array
per parameter, named as in ``AllegroConfig.parameter_shapes()``.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from . import __version__
from ._validation import (
    atom_types_from_species,
    check_cell_and_pbc,
    check_positions,
    to_host,
)
from .backend import device, is_numpy, namespace, segment_sum
from .model import AllegroConfig, AllegroModel
from .neighbors import edge_vectors, neighbor_list, within_pair_cutoffs

__all__ = ["Potential", "FILE_FORMAT", "FILE_FORMAT_VERSION"]

FILE_FORMAT = "allegro_ref.potential"
FILE_FORMAT_VERSION = 1
_METADATA_KEY = "__metadata__"


class Potential:
    """An Allegro model ready to evaluate structures.

    Args:
        model: the ``AllegroModel`` (its parameters' backend is where the network runs).
        min_distance: smallest allowed distance between two atoms (periodic images included),
            Å; closer atoms raise ``ValueError`` (the model's edge geometry needs |r_e| > 0, and
            such structures are almost always input mistakes).
    """

    def __init__(self, model: AllegroModel, min_distance: float = 0.1):
        self.model = model
        self.min_distance = float(min_distance)
        self._cutoffs = model.config.cutoff_matrix()
        self._per_type_cutoffs = bool(np.any(self._cutoffs < model.config.r_max))

    @property
    def config(self) -> AllegroConfig:
        return self.model.config

    @property
    def dtype(self) -> str:
        return self.model.dtype

    @classmethod
    def from_config(cls, config: AllegroConfig, seed: int = 0, dtype: str = "float64") -> Potential:
        """A potential with random weights (``AllegroModel.init``), on NumPy."""
        return cls(AllegroModel.init(config, seed=seed, dtype=dtype))

    @classmethod
    def from_nequip(cls, path: str | os.PathLike, min_distance: float = 0.1) -> Potential:
        """A potential from an official nequip-allegro checkpoint (``.ckpt``) or package
        (``.nequip.zip``); see :func:`allegro_ref.io.load_nequip`."""
        from .io import load_nequip

        return cls(load_nequip(path), min_distance)

    def to(self, backend: str) -> Potential:
        """The same potential with the network on ``"numpy"`` (host) or ``"cupy"`` (GPU)."""
        return Potential(self.model.to(backend), self.min_distance)

    # ---------------------------------------------------------------------------------------
    # Weight files
    # ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` (one ``.npz`` file; the name is used as given)."""
        params = {name: to_host(value) for name, value in self.model.params.items()}
        metadata = {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "allegro_ref_version": __version__,
            "dtype": self.model.dtype,
            "config": self.config.to_dict(),
            "parameters": {name: list(value.shape) for name, value in params.items()},
        }
        with open(path, "wb") as handle:
            np.savez(handle, **{_METADATA_KEY: np.asarray(json.dumps(metadata))}, **params)

    @classmethod
    def load(cls, path: str | os.PathLike, min_distance: float = 0.1) -> Potential:
        """Read a file written by :meth:`save` (parameters on NumPy, bit for bit).

        Raises ``ValueError`` if the file is not such a file, has an unknown format version, or
        its arrays do not match its config (missing, unknown or wrongly shaped parameters).
        """
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{os.fspath(path)!r} is not an allegro_ref potential file (.npz)")
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if _METADATA_KEY not in arrays:
            raise ValueError(
                f"{os.fspath(path)!r} is an .npz file without {_METADATA_KEY!r}: not an "
                f"allegro_ref potential file"
            )
        metadata = json.loads(str(arrays.pop(_METADATA_KEY)))
        if metadata.get("format") != FILE_FORMAT:
            raise ValueError(
                f"{os.fspath(path)!r} has format {metadata.get('format')!r}, "
                f"expected {FILE_FORMAT!r}"
            )
        if metadata.get("format_version") != FILE_FORMAT_VERSION:
            raise ValueError(
                f"{os.fspath(path)!r} has format version {metadata.get('format_version')!r}; this "
                f"allegro_ref ({__version__}) reads version {FILE_FORMAT_VERSION}"
            )
        missing = sorted({"config", "dtype", "parameters"} - set(metadata))
        if missing:
            raise ValueError(f"{os.fspath(path)!r}: its metadata lacks the entries {missing}")
        config = AllegroConfig.from_dict(metadata["config"])
        listed = {name: tuple(shape) for name, shape in metadata["parameters"].items()}
        stored = {name: tuple(value.shape) for name, value in arrays.items()}
        if listed != stored:
            raise ValueError(
                f"{os.fspath(path)!r} is inconsistent: its metadata lists parameters {listed} "
                f"but it holds arrays {stored}"
            )
        return cls(AllegroModel(config, arrays, metadata["dtype"]), min_distance)

    # ---------------------------------------------------------------------------------------
    # Evaluation
    # ---------------------------------------------------------------------------------------
    def compute(
        self, positions: Any, species: Any, cell: Any = None, pbc: bool | Any = False
    ) -> dict[str, Any]:
        """Energy and its derivatives for one structure.

        Args:
            positions: ``[N, 3]`` Cartesian positions, Å (NumPy, CuPy, array-api arrays, lists).
            species: ``[N]`` type names (e.g. ``"Cu"``) or atomic numbers (mapped to chemical
                symbols, which must be among ``config.type_names``).
            cell: ``[3, 3]`` lattice vectors as rows, Å, or ``None`` (no cell).
            pbc: periodicity, one bool or three.

        Returns:
            A dict with ``"energy"`` (float, eV), ``"energies"`` ``[N]`` eV (per-atom, they sum
            to the energy), ``"forces"`` ``[N, 3]`` eV/Å, ``"stress"`` ``[3, 3]`` eV/Å³ (or
            ``None`` unless ``pbc`` is True in all three directions), ``"virials"``
            ``[N, 3, 3]`` eV (per-atom virials, summing to -V·stress); float64 arrays in the
            namespace and on the device of ``positions`` (NumPy for lists).

        Raises:
            ValueError: naming the problem: positions not ``[N, 3]`` or not finite, a species
                not in ``config.type_names`` (or an atomic number that is not an element), one
                species per atom expected, cell not ``[3, 3]`` or not finite, pbc not one or
                three bools, degenerate lattice vectors along periodic directions, two atoms
                (or an atom and an image) closer than ``min_distance``.
        """
        host_positions = check_positions(positions)
        host_cell, host_pbc = check_cell_and_pbc(cell, pbc)
        n_atoms = host_positions.shape[0]
        atom_types = atom_types_from_species(species, self.config.type_names, n_atoms)

        centers, neighbors, shifts = neighbor_list(
            host_positions, host_cell, host_pbc, self.config.r_max
        )
        vectors = edge_vectors(host_positions, host_cell, centers, neighbors, shifts)
        self._check_distances(vectors, centers, neighbors, shifts)
        if self._per_type_cutoffs:
            kept = within_pair_cutoffs(vectors, centers, neighbors, atom_types, self._cutoffs)
            centers, neighbors, vectors = centers[kept], neighbors[kept], vectors[kept]

        # The network runs where the parameters live.
        like = next(iter(self.model.params.values()))
        xp, where = namespace(like), device(like)
        centers, neighbors, vectors, types = (
            xp.asarray(a, device=where) for a in (centers, neighbors, vectors, atom_types)
        )
        atomic_energies, cache = self.model.forward(vectors, centers, neighbors, types)
        grads = self.model.backward(cache, xp.ones((n_atoms,), dtype=xp.float64, device=where))

        forces = segment_sum(grads, centers, n_atoms) - segment_sum(grads, neighbors, n_atoms)
        edge_virials = vectors[:, :, None] * grads[:, None, :]  # r_e ⊗ g_e, [E, 3, 3]
        virials = -segment_sum(edge_virials, centers, n_atoms)
        stress = None
        if bool(np.all(host_pbc)):
            volume = abs(float(np.linalg.det(host_cell)))
            total = -xp.sum(virials, axis=0) / volume
            stress = 0.5 * (total + xp.permute_dims(total, (1, 0)))

        results = {
            "energy": float(xp.sum(atomic_energies)),
            "energies": atomic_energies,
            "forces": forces,
            "stress": stress,
            "virials": virials,
        }
        return _to_namespace_of(results, positions)

    def compute_atoms(self, atoms: Any) -> dict[str, Any]:
        """:meth:`compute` for an ``ase.Atoms`` (species = its chemical symbols)."""
        return self.compute(
            atoms.get_positions(), atoms.get_chemical_symbols(), atoms.cell.array, atoms.pbc
        )

    def _check_distances(self, vectors, centers, neighbors, shifts) -> None:
        if vectors.shape[0] == 0:
            return
        lengths = np.linalg.norm(vectors, axis=1)
        e = int(np.argmin(lengths))
        if lengths[e] < self.min_distance:
            image = "" if not np.any(shifts[e]) else f" (periodic image {shifts[e].tolist()})"
            raise ValueError(
                f"atoms {int(centers[e])} and {int(neighbors[e])}{image} are {lengths[e]:.4g} Å "
                f"apart, closer than min_distance = {self.min_distance} Å"
            )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Potential(type_names={list(c.type_names)}, r_max={c.r_max}, l_max={c.l_max}, "
            f"num_layers={c.num_layers}, dtype={self.dtype!r}, "
            f"backend={namespace(next(iter(self.model.params.values()))).__name__!r})"
        )


def _to_namespace_of(results: dict[str, Any], positions: Any) -> dict[str, Any]:
    """Move the array results to the namespace and device of ``positions`` (NumPy for lists)."""
    try:
        xp = namespace(positions)
    except TypeError:  # a list or another non-array
        xp = None
    out = {}
    for key, value in results.items():
        if value is None or isinstance(value, float):
            out[key] = value
        elif xp is None or is_numpy(positions):
            out[key] = to_host(value)
        elif namespace(value) is xp and device(value) == device(positions):
            out[key] = value
        else:
            out[key] = xp.asarray(to_host(value), device=device(positions))
    return out
