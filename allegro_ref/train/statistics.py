"""Dataset statistics that set a model's normalizations before training.

The official trainer (nequip 0.19 with nequip-allegro 0.8: its data statistics manager, and
Musaelian et al., Nat. Commun. 14, 579 (2023)) computes these on the training set and writes
them into the model:

- ``avg_num_neighbors`` N̄: the mean number of edges per atom (full list, so the coordination
  number), N̄ = E / N over the training set, or per centre type N̄_t = E_t / N_t;
- ``per_type_energy_shifts``: an energy per atom of each type, removed before the network sees
  the data. Least squares over the structures, min_μ Σ_s (Σ_t n_st μ_t − E_s)², gives
  composition-aware shifts (for one species it is Σ_s n_s E_s / Σ_s n_s²); the official
  tutorial's ``per_atom_energy_mean`` (mean of E_s / n_s, one value for all types) and known
  isolated-atom energies are the alternatives;
- ``per_type_energy_scales``: the force RMS, sqrt(mean over atoms and components of F²) (eV/Å):
  the network's outputs are O(1), and forces are the energy's derivative over Å, so this scale
  makes predicted forces start at the size of the data's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data import Graph, Structure

__all__ = [
    "average_num_neighbors",
    "per_type_average_num_neighbors",
    "per_type_energy_shifts",
    "per_atom_energy_mean",
    "force_rms",
]


def average_num_neighbors(graphs: Sequence[Graph]) -> float:
    """N̄ = (total number of directed edges) / (total number of atoms)."""
    n_atoms = sum(g.structure.num_atoms for g in graphs)
    if n_atoms == 0:
        raise ValueError("average_num_neighbors needs at least one atom")
    return sum(g.centers.shape[0] for g in graphs) / n_atoms


def per_type_average_num_neighbors(graphs: Sequence[Graph], type_names: Sequence[str]) -> dict:
    """{type: E_t / N_t}: edges centred on atoms of type t per atom of type t (types absent
    from the data get the overall mean)."""
    n_types = len(type_names)
    atoms = np.zeros(n_types)
    edges = np.zeros(n_types)
    for g in graphs:
        atoms += np.bincount(g.atom_types, minlength=n_types)
        edges += np.bincount(g.atom_types[g.centers], minlength=n_types)
    overall = average_num_neighbors(graphs)
    return {
        name: float(edges[t] / atoms[t]) if atoms[t] else overall
        for t, name in enumerate(type_names)
    }


def _energies(structures: Sequence[Structure]) -> np.ndarray:
    energies = np.array([s.energy for s in structures], dtype=np.float64)
    if energies.size == 0 or not np.all(np.isfinite(energies)):
        missing = np.flatnonzero(~np.isfinite(energies))[:10].tolist()
        raise ValueError(
            f"energy statistics need an energy for every structure; missing: {missing}"
        )
    return energies


def per_type_energy_shifts(structures: Sequence[Structure], type_names: Sequence[str]) -> dict:
    """{type: μ_t}, the least-squares energies per atom: min_μ Σ_s (Σ_t n_st μ_t − E_s)².

    When the compositions do not determine every μ_t (e.g. all structures have the same
    composition) the minimum-norm solution is returned; isolated-atom energies are then the
    better choice.
    """
    energies = _energies(structures)
    index = {name: t for t, name in enumerate(type_names)}
    counts = np.zeros((len(structures), len(type_names)))
    for s, structure in enumerate(structures):
        for name in structure.species:
            if name not in index:
                raise ValueError(f"species {name!r} is not in type_names {list(type_names)}")
            counts[s, index[name]] += 1
    shifts, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {name: float(shifts[t]) for t, name in enumerate(type_names)}


def per_atom_energy_mean(structures: Sequence[Structure]) -> float:
    """mean over structures of E_s / n_s (eV/atom), the official tutorial's shift."""
    energies = _energies(structures)
    return float(np.mean(energies / np.array([s.num_atoms for s in structures])))


def force_rms(structures: Sequence[Structure]) -> float:
    """sqrt(mean over all atoms and components of F²), eV/Å."""
    forces = np.concatenate([s.forces.reshape(-1) for s in structures])
    if forces.size == 0 or not np.all(np.isfinite(forces)):
        raise ValueError("force_rms needs forces for every atom of every structure")
    return float(np.sqrt(np.mean(forces * forces)))
