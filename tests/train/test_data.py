"""Data pipeline: reading labels from extxyz and ase.db (with ASE's own EMT as the reference),
custom label keys, splits, neighbour lists against the Potential's, and batching (a batch is the
disjoint union of its structures)."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.model import AllegroModel
from allegro_ref.train.data import (
    batches,
    build_graph,
    collate,
    read_structures,
    split_structures,
    structure_from_atoms,
    write_structures,
)
from tests.models import tiny_config
from tests.train import random_structures


def _emt_cells(n: int = 3):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        out.append(atoms)
    return out


@pytest.mark.parametrize("suffix", ["xyz", "xyz.gz", "db"])
def test_roundtrip_keeps_labels_from_ase(tmp_path, suffix):
    """Energy, forces and the 3x3 stress (ASE sign) read back equal to EMT's own values (extxyz
    stores per-atom columns with 8 decimals, the database at full precision)."""
    import ase.io

    cells = _emt_cells()
    expected = [
        (a.get_potential_energy(), a.get_forces(), a.get_stress(voigt=False)) for a in cells
    ]
    path = tmp_path / f"cu.{suffix}"
    ase.io.write(path, cells)
    structures = read_structures(path)
    assert len(structures) == 3
    digits = 1e-12 if suffix == "db" else 5e-9
    for s, (energy, forces, stress), atoms in zip(structures, expected, cells, strict=True):
        assert s.energy == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(s.forces, forces, rtol=0, atol=digits)
        np.testing.assert_allclose(s.stress, stress, rtol=1e-12, atol=0)
        np.testing.assert_allclose(s.positions, atoms.positions, rtol=0, atol=digits)
        assert s.species == tuple(atoms.get_chemical_symbols()) and s.volume == pytest.approx(
            atoms.get_volume()
        )


def test_write_structures_round_trip(tmp_path):
    """Periodic cells and a molecule without stress (NaN stays NaN), compressed extxyz."""
    structures = random_structures(0)
    path = tmp_path / "mixed.xyz.gz"
    write_structures(path, structures)
    for a, b in zip(read_structures(path), structures, strict=True):
        assert a.species == b.species and a.energy == pytest.approx(b.energy, rel=1e-12)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=5e-9)
        np.testing.assert_allclose(a.forces, b.forces, rtol=0, atol=5e-9)
        np.testing.assert_allclose(a.stress, b.stress, atol=1e-14)  # NaN == NaN here
        np.testing.assert_array_equal(a.pbc, b.pbc)


@pytest.mark.parametrize("suffix", [".xyz", ".xyz.gz", ".xyz.bz2", ".xyz.xz"])
def test_write_structures_compresses_by_name_and_replaces_atomically(tmp_path, suffix, monkeypatch):
    """Every ending gives a file ASE reads back; a write that fails half way leaves the previous
    file as it was and no temporary file behind."""
    import ase.io

    structures = random_structures(0)
    path = tmp_path / f"frames{suffix}"
    write_structures(path, structures)
    before = path.read_bytes()
    assert [a.species for a in read_structures(path)] == [b.species for b in structures]

    real_write = ase.io.write

    def write_then_fail(handle, frames, **kwargs):
        real_write(handle, frames[:1], **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(ase.io, "write", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_structures(path, structures[::-1])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_custom_label_keys_and_missing_labels():
    from ase import Atoms

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])
    atoms.info["REF_energy"] = -1.25
    atoms.arrays["REF_forces"] = np.array([[0.0, 0, 1], [0, 0, -1]])
    s = structure_from_atoms(atoms, energy_key="REF_energy", forces_key="REF_forces")
    assert s.energy == -1.25 and s.forces[0, 2] == 1.0
    assert np.all(np.isnan(s.stress)) and np.isnan(s.volume)
    unlabelled = structure_from_atoms(Atoms("Cu", positions=[[0, 0, 0]]))
    assert np.isnan(unlabelled.energy) and np.all(np.isnan(unlabelled.forces))
    with pytest.raises(ValueError, match="no energy under 'E'"):
        structure_from_atoms(atoms, energy_key="E")


def test_split_is_reproducible_disjoint_and_checked():
    items = list(range(20))
    train, val, test = split_structures(items, 12, 5, seed=3)
    assert (len(train), len(val), len(test)) == (12, 5, 3)
    assert sorted(train + val + test) == items
    assert split_structures(items, 12, 5, seed=3) == (train, val, test)
    assert split_structures(items, 12, 5, seed=4) != (train, val, test)
    assert len(split_structures(items, 10, 5, 2)[2]) == 2
    with pytest.raises(ValueError, match="cannot split 20 structures"):
        split_structures(items, 15, 5, 1)


def test_graph_has_the_potentials_edges():
    """Edges of build_graph = the Potential's neighbour list (same r_e set, sorted by centre)."""
    from allegro_ref.neighbors import edge_vectors, neighbor_list

    config = tiny_config()
    for s in random_structures(2):
        graph = build_graph(s, config.type_names, config.r_max)
        centers, neighbors, shifts = neighbor_list(s.positions, s.cell, s.pbc, config.r_max)
        np.testing.assert_array_equal(graph.centers, centers)
        np.testing.assert_array_equal(graph.neighbors, neighbors)
        np.testing.assert_allclose(
            graph.edge_vectors, edge_vectors(s.positions, s.cell, centers, neighbors, shifts)
        )
        assert list(graph.atom_types) == [config.type_names.index(x) for x in s.species]


def test_per_type_cutoffs_prune_edges():
    config = tiny_config(per_edge_type_cutoff={"O": 2.0})
    s = random_structures(2)[0]
    full = build_graph(s, config.type_names, config.r_max)
    pruned = build_graph(s, config.type_names, config.r_max, config.cutoff_matrix())
    lengths = np.linalg.norm(full.edge_vectors, axis=1)
    o_center = full.atom_types[full.centers] == 0
    assert pruned.centers.shape[0] == int(np.sum(~o_center | (lengths < 2.0)))


def test_batch_is_the_disjoint_union():
    """Atomic energies of a batch equal those of each structure evaluated alone, and the
    batch's index arrays are offset correctly."""
    config = tiny_config()
    model = AllegroModel.init(config, seed=1)
    structures = random_structures(3)
    graphs = [build_graph(s, config.type_names, config.r_max) for s in structures]
    batch = collate(graphs)
    sizes = [s.num_atoms for s in structures]
    assert batch.num_structures == 3 and batch.total_atoms == sum(sizes)
    np.testing.assert_array_equal(batch.atom_structure, np.repeat([0, 1, 2], sizes))
    energies, _ = model.forward(
        batch.edge_vectors, batch.centers, batch.neighbors, batch.atom_types
    )
    alone = [model.forward(g.edge_vectors, g.centers, g.neighbors, g.atom_types)[0] for g in graphs]
    np.testing.assert_allclose(energies, np.concatenate(alone), rtol=1e-14, atol=1e-14)
    assert np.all(np.isnan(batch.volume[2:])) and np.all(np.isfinite(batch.volume[:2]))

    order = [b.num_structures for b in batches(graphs, 2, np.random.default_rng(0))]
    assert order == [2, 1]
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(graphs, 0))
    with pytest.raises(ValueError, match="at least one graph"):
        collate([])


def test_collate_moves_to_the_backend(backend):
    config = tiny_config()
    graphs = [build_graph(s, config.type_names, config.r_max) for s in random_structures(3)]
    like = backend.asarray(np.zeros(2))
    batch = collate(graphs, like=like)
    assert type(batch.edge_vectors) is type(like)
    np.testing.assert_array_equal(backend.to_numpy(batch.centers), collate(graphs).centers)
