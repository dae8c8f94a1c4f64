"""Dataset statistics against exact values: fcc coordination, energies built from known
per-type energies (least squares recovers them), per-atom mean and force RMS by hand."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.train.data import Structure, build_graph
from allegro_ref.train.statistics import (
    average_num_neighbors,
    force_rms,
    per_atom_energy_mean,
    per_type_average_num_neighbors,
    per_type_energy_shifts,
)


def _structure(species, energy=0.0, forces=None, positions=None, cell=None):
    n = len(species)
    return Structure(
        positions=np.zeros((n, 3)) if positions is None else positions,
        species=tuple(species),
        cell=np.zeros((3, 3)) if cell is None else cell,
        pbc=np.array([cell is not None] * 3),
        energy=energy,
        forces=np.zeros((n, 3)) if forces is None else forces,
        stress=np.full((3, 3), np.nan),
    )


def test_neighbors_of_fcc_and_of_a_dimer():
    """fcc: 12 neighbours inside r = 3.0 Å (a = 3.61: first shell 2.55, second 3.61); a dimer
    within the cutoff plus an isolated atom: 2 edges / 3 atoms."""
    from ase.build import bulk

    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    fcc = _structure(["Cu"] * 4, positions=cu.positions, cell=cu.cell.array)
    dimer = _structure(["O", "Cu", "Cu"], positions=np.array([[0, 0, 0], [0, 0, 1.2], [9, 0, 0]]))
    graphs = [build_graph(s, ["O", "Cu"], 3.0) for s in (fcc, dimer)]
    assert average_num_neighbors(graphs[:1]) == 12.0
    assert average_num_neighbors(graphs[1:]) == pytest.approx(2 / 3)
    assert average_num_neighbors(graphs) == pytest.approx(50 / 7)
    per_type = per_type_average_num_neighbors(graphs, ["O", "Cu", "H"])
    assert per_type["O"] == 1.0 and per_type["Cu"] == pytest.approx(49 / 6)
    assert per_type["H"] == pytest.approx(50 / 7)  # absent type: the overall mean


def test_least_squares_shifts_recover_exact_per_type_energies():
    mu = {"H": -13.6, "C": -1030.5, "O": -2040.25}
    rng = np.random.default_rng(0)
    structures = []
    for _ in range(8):
        species = list(rng.choice(list(mu), rng.integers(2, 9)))
        structures.append(_structure(species, energy=sum(mu[s] for s in species)))
    shifts = per_type_energy_shifts(structures, ["H", "C", "O"])
    for name, value in mu.items():
        assert shifts[name] == pytest.approx(value, rel=1e-12)


def test_single_species_least_squares_and_per_atom_mean():
    structures = [_structure(["Cu"] * n, energy=e) for n, e in ((2, -7.0), (4, -12.0))]
    # min_mu sum (n mu - E)^2: mu = sum n E / sum n^2 = (-14 - 48) / 20
    assert per_type_energy_shifts(structures, ["Cu"])["Cu"] == pytest.approx(-3.1)
    assert per_atom_energy_mean(structures) == pytest.approx((-3.5 - 3.0) / 2)


def test_force_rms_and_errors():
    forces = np.array([[3.0, 0, 0], [0, 4.0, 0]])
    structures = [
        _structure(["Cu", "Cu"], forces=forces),
        _structure(["Cu"], forces=np.zeros((1, 3))),
    ]
    assert force_rms(structures) == pytest.approx(np.sqrt(25 / 9))
    with pytest.raises(ValueError, match="forces for every atom"):
        force_rms([_structure(["Cu"], forces=np.full((1, 3), np.nan))])
    with pytest.raises(ValueError, match="missing: \\[0\\]"):
        per_atom_energy_mean([_structure(["Cu"], energy=np.nan)])
    with pytest.raises(ValueError, match="'Xe' is not in type_names"):
        per_type_energy_shifts([_structure(["Xe"])], ["Cu"])
