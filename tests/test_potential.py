"""Potential: forces = -∇E and stress = strain derivative (central finite differences), E(3)
invariance / equivariance, permutations, supercells, strict locality, per-type cutoffs,
backends and dtypes, weight files, and the documented input errors."""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given

from allegro_ref.model import Allegro2022Config, Allegro2022Model, AllegroConfig, AllegroModel
from allegro_ref.neighbors import neighbor_list
from allegro_ref.potential import FILE_FORMAT_VERSION, Potential, WeightFileError
from tests.models import TYPE_NAMES, tiny_config
from tests.strategies import orthogonal_matrices


@pytest.fixture(scope="module")
def potential() -> Potential:
    return Potential.from_config(tiny_config(), seed=7)


def molecule(seed: int = 0, n_atoms: int = 6):
    """A random cluster (atoms >= 0.9 Å apart), no cell."""
    rng = np.random.default_rng(seed)
    while True:
        positions = rng.uniform(0.0, 3.0, (n_atoms, 3))
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        if np.all(d[np.triu_indices(n_atoms, 1)] > 0.9):
            return positions, list(rng.choice(TYPE_NAMES, n_atoms)), None, False


def crystal(seed: int = 0, n_atoms: int = 3):
    """A random triclinic, arbitrarily oriented cell with edges 2.6-3.4 Å (< r_max = 3.5 Å, so
    atoms see their own images), atoms >= 0.9 Å apart including images."""
    rng = np.random.default_rng(seed)
    while True:
        lengths = rng.uniform(2.6, 3.4, 3)
        cell = np.diag(lengths)
        cell[1, 0], cell[2, 0], cell[2, 1] = rng.uniform(-0.3, 0.3, 3) * lengths[[1, 2, 2]]
        cell = cell @ np.linalg.qr(rng.standard_normal((3, 3)))[0]
        positions = rng.uniform(0.0, 1.0, (n_atoms, 3)) @ cell
        c, _, _ = neighbor_list(positions, cell, pbc=True, cutoff=0.9)
        if c.size == 0:
            return positions, list(rng.choice(TYPE_NAMES, n_atoms)), cell, True


SYSTEMS = {
    "molecule": molecule(),
    "crystal": crystal(),
    "crystal-mixed-pbc": crystal(1)[:3] + (np.array([True, False, True]),),
}


def energy(potential, positions, species, cell, pbc) -> float:
    return potential.compute(positions, species, cell, pbc)["energy"]


# ---------------------------------------------------------------------------------------------
# Derivatives
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_forces_are_minus_the_energy_gradient(potential, name):
    positions, species, cell, pbc = SYSTEMS[name]
    out = potential.compute(positions, species, cell, pbc)
    assert np.all(np.isfinite(out["forces"])) and np.max(np.abs(out["forces"])) > 1e-3
    rng = np.random.default_rng(11)
    h = 1e-5  # truncation error O(h²) ~ 1e-9 relative here; rounding ~1e-10
    for _ in range(3):
        direction = rng.standard_normal(positions.shape)
        plus = energy(potential, positions + h * direction, species, cell, pbc)
        minus = energy(potential, positions - h * direction, species, cell, pbc)
        numeric = (plus - minus) / (2 * h)
        analytic = -np.sum(out["forces"] * direction)
        scale = np.linalg.norm(out["forces"]) * np.linalg.norm(direction)
        assert abs(numeric - analytic) <= 1e-7 * scale, (numeric, analytic)


@pytest.mark.parametrize("seed", [0, 1])
def test_stress_is_the_strain_derivative(potential, seed):
    """σ = (1/V) ∂E/∂ε for x -> x (1 + ε), cell -> cell (1 + ε), ε symmetric."""
    positions, species, cell, pbc = crystal(seed)
    out = potential.compute(positions, species, cell, pbc)
    stress = out["stress"]
    np.testing.assert_array_equal(stress, stress.T)
    volume = abs(np.linalg.det(cell))
    rng = np.random.default_rng(seed)
    h = 1e-5
    for _ in range(3):
        strain = rng.standard_normal((3, 3))
        strain = 0.5 * (strain + strain.T)

        def strained(t, strain=strain):
            deformation = np.eye(3) + t * strain
            return energy(potential, positions @ deformation, species, cell @ deformation, pbc)

        numeric = (strained(h) - strained(-h)) / (2 * h)
        analytic = volume * np.sum(stress * strain)
        scale = volume * np.linalg.norm(stress) * np.linalg.norm(strain)
        assert abs(numeric - analytic) <= 1e-7 * scale, (numeric, analytic)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_per_atom_virials_are_strain_derivatives_of_per_atom_energies(potential, name):
    """E_i depends only on the edges centered on i and a strain maps every r_e to r_e (1 + ε),
    so W_i = -∂E_i/∂ε: checked by central differences of the per-atom energies."""
    positions, species, cell, pbc = SYSTEMS[name]
    virials = potential.compute(positions, species, cell, pbc)["virials"]
    strain = np.random.default_rng(2).standard_normal((3, 3))  # any ε, not only symmetric
    h = 1e-5

    def strained_energies(t):
        deformation = np.eye(3) + t * strain
        strained_cell = None if cell is None else cell @ deformation
        return potential.compute(positions @ deformation, species, strained_cell, pbc)["energies"]

    numeric = (strained_energies(h) - strained_energies(-h)) / (2 * h)
    analytic = -np.sum(virials * strain, axis=(1, 2))
    scale = np.linalg.norm(virials, axis=(1, 2)) * np.linalg.norm(strain)
    assert np.all(np.abs(numeric - analytic) <= 1e-7 * scale), (numeric, analytic)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_energies_and_virials_add_up(potential, name):
    positions, species, cell, pbc = SYSTEMS[name]
    out = potential.compute(positions, species, cell, pbc)
    assert out["energies"].shape == (len(species),)
    assert out["virials"].shape == (len(species), 3, 3)
    np.testing.assert_allclose(np.sum(out["energies"]), out["energy"], rtol=1e-14)
    np.testing.assert_allclose(np.sum(out["forces"], axis=0), 0.0, atol=1e-12)
    total_virial = np.sum(out["virials"], axis=0)
    # rotation invariance makes the total virial symmetric
    np.testing.assert_allclose(total_virial, total_virial.T, atol=1e-12)
    if out["stress"] is None:
        assert not np.all(pbc)
    else:
        volume = abs(np.linalg.det(cell))
        np.testing.assert_allclose(-total_virial / volume, out["stress"], atol=1e-13)


# ---------------------------------------------------------------------------------------------
# Symmetries
# ---------------------------------------------------------------------------------------------


@given(orthogonal_matrices())
def test_rotations_and_reflections(potential, rotation):
    """E invariant; F -> F Qᵀ, σ -> Q σ Qᵀ, virials likewise, for Q in O(3)."""
    for positions, species, cell, pbc in SYSTEMS.values():
        ref = potential.compute(positions, species, cell, pbc)
        rotated_cell = None if cell is None else cell @ rotation.T
        out = potential.compute(positions @ rotation.T, species, rotated_cell, pbc)
        np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12)
        np.testing.assert_allclose(out["energies"], ref["energies"], rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(out["forces"], ref["forces"] @ rotation.T, atol=1e-11)
        np.testing.assert_allclose(
            out["virials"], rotation @ ref["virials"] @ rotation.T, atol=1e-11
        )
        if ref["stress"] is not None:
            np.testing.assert_allclose(
                out["stress"], rotation @ ref["stress"] @ rotation.T, atol=1e-12
            )


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_translations_and_lattice_shifts(potential, name):
    positions, species, cell, pbc = SYSTEMS[name]
    ref = potential.compute(positions, species, cell, pbc)
    moved = positions + np.array([1.7, -4.2, 0.3])
    if cell is not None:  # also move atom 0 by a lattice vector along a periodic direction
        moved[0] += cell[np.flatnonzero(np.broadcast_to(pbc, 3))[0]]
    out = potential.compute(moved, species, cell, pbc)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12)
    np.testing.assert_allclose(out["forces"], ref["forces"], atol=1e-11)


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_permutations(potential, name):
    positions, species, cell, pbc = SYSTEMS[name]
    ref = potential.compute(positions, species, cell, pbc)
    order = np.random.default_rng(5).permutation(len(species))
    out = potential.compute(positions[order], [species[i] for i in order], cell, pbc)
    np.testing.assert_allclose(out["energy"], ref["energy"], rtol=1e-12)
    np.testing.assert_allclose(out["energies"], ref["energies"][order], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(out["forces"], ref["forces"][order], atol=1e-11)
    np.testing.assert_allclose(out["virials"], ref["virials"][order], atol=1e-11)


def test_supercell(potential):
    """A 2x2x2 repeat has 8x the energy, the same stress and the forces of the images."""
    positions, species, cell, pbc = crystal(2)
    ref = potential.compute(positions, species, cell, pbc)
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    big_positions = (positions[None, :, :] + (grid @ cell)[:, None, :]).reshape(-1, 3)
    out = potential.compute(big_positions, species * 8, 2 * cell, pbc)
    np.testing.assert_allclose(out["energy"], 8 * ref["energy"], rtol=1e-12)
    np.testing.assert_allclose(out["energies"], np.tile(ref["energies"], 8), rtol=1e-11)
    np.testing.assert_allclose(out["forces"], np.tile(ref["forces"], (8, 1)), atol=1e-11)
    np.testing.assert_allclose(out["stress"], ref["stress"], atol=1e-12)


def test_strict_locality(potential):
    """Fragments farther apart than r_max do not interact: energies and forces add up."""
    a_positions, a_species, _, _ = molecule(1, 4)
    b_positions, b_species, _, _ = molecule(2, 5)
    b_positions = b_positions + np.array([0.0, 0.0, 3.0 + potential.config.r_max + 1e-3])
    a = potential.compute(a_positions, a_species)
    b = potential.compute(b_positions, b_species)
    both = potential.compute(np.concatenate([a_positions, b_positions]), a_species + b_species)
    np.testing.assert_allclose(both["energy"], a["energy"] + b["energy"], rtol=1e-13)
    np.testing.assert_allclose(
        both["forces"], np.concatenate([a["forces"], b["forces"]]), atol=1e-13
    )


def test_isolated_atom_has_its_shift(potential):
    for species, shift in (("O", -1.5), ("Cu", -3.0)):
        out = potential.compute(np.zeros((1, 3)), [species])
        assert out["energy"] == pytest.approx(shift, abs=1e-15)
        np.testing.assert_array_equal(out["forces"], 0.0)
        # periodic, cell wider than r_max: still no neighbor
        out = potential.compute(np.zeros((1, 3)), [species], 4.0 * np.eye(3), True)
        assert out["energy"] == pytest.approx(shift, abs=1e-15)
        np.testing.assert_array_equal(out["stress"], 0.0)


def test_species_as_atomic_numbers(potential):
    positions, species, cell, pbc = SYSTEMS["crystal"]
    numbers = [{"O": 8, "Cu": 29}[s] for s in species]
    ref = potential.compute(positions, species, cell, pbc)
    for given_species in (numbers, np.array(numbers), np.array(species)):
        out = potential.compute(positions, given_species, cell, pbc)
        assert out["energy"] == ref["energy"]


def test_stress_only_for_3d_periodic_cells(potential):
    positions, species, cell, _ = SYSTEMS["crystal"]
    for pbc in (False, [True, True, False]):
        assert potential.compute(positions, species, cell, pbc)["stress"] is None


def test_per_edge_type_cutoffs():
    """With r_cut(O, Cu) = 2.0 < r_max, an O-Cu pair 2.5 Å apart does not interact, one 1.8 Å
    apart does; forces stay exact gradients."""
    config = tiny_config(per_edge_type_cutoff={"O": {"Cu": 2.0}, "Cu": {"O": 2.0}})
    potential = Potential.from_config(config, seed=3)
    isolated = sum(potential.compute(np.zeros((1, 3)), [s])["energy"] for s in ("O", "Cu"))
    far = potential.compute(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]]), ["O", "Cu"])
    assert far["energy"] == pytest.approx(isolated, abs=1e-15)
    near = potential.compute(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.8]]), ["O", "Cu"])
    assert abs(near["energy"] - isolated) > 1e-6
    # a Cu-Cu pair at 2.5 Å (cutoff r_max = 3.5) interacts
    cucu = potential.compute(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]]), ["Cu", "Cu"])
    assert abs(cucu["energy"] - 2 * potential.compute(np.zeros((1, 3)), ["Cu"])["energy"]) > 1e-6
    positions, species, cell, pbc = crystal(3, 4)
    out = potential.compute(positions, species, cell, pbc)
    direction = np.random.default_rng(0).standard_normal(positions.shape)
    h = 1e-5  # truncation error O(h²) ~ 1e-9 relative here; rounding ~1e-10
    numeric = (
        energy(potential, positions + h * direction, species, cell, pbc)
        - energy(potential, positions - h * direction, species, cell, pbc)
    ) / (2 * h)
    scale = np.linalg.norm(out["forces"]) * np.linalg.norm(direction)
    assert abs(numeric + np.sum(out["forces"] * direction)) <= 1e-7 * scale


# ---------------------------------------------------------------------------------------------
# Chunks of center atoms
# ---------------------------------------------------------------------------------------------


def mixed_crystal(repeats=(2, 2, 2)):
    """A rattled rock-salt-like O/Cu crystal with variable numbers of neighbors per atom."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.0, cubic=True).repeat(repeats)
    atoms.rattle(0.15, seed=3)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[::3] = "O"
    return atoms.positions, list(symbols), atoms.cell.array, True


@pytest.mark.parametrize("name", ["molecule", "crystal", "mixed"])
@pytest.mark.parametrize("parallel", [{}, {"num_threads": 2}, {"num_processes": 2}])
def test_chunks_give_the_unchunked_results(potential, name, parallel):
    """One center atom per chunk (two BLAS threads, two worker processes) equals the model run
    once on the whole neighbor list, to rounding: Allegro's energy of atom i depends only on the
    edges centered on i, and on their neighbors only through their species."""
    positions, species, cell, pbc = mixed_crystal() if name == "mixed" else SYSTEMS[name]
    model = potential.model
    # reference: the model on all edges at once, forces and virials from its edge gradients
    centers, neighbors, shifts = neighbor_list(positions, cell, pbc, model.config.r_max)
    vectors = (
        positions[neighbors]
        - positions[centers]
        + shifts @ (cell if cell is not None else np.zeros((3, 3)))
    )
    types = np.array([model.config.type_names.index(s) for s in species])
    n_atoms = len(species)
    energies, cache = model.forward(vectors, centers, neighbors, types)
    grads = model.backward(cache, np.ones(n_atoms))
    forces = np.zeros((n_atoms, 3))
    np.add.at(forces, centers, grads)
    np.add.at(forces, neighbors, -grads)
    virials = np.zeros((n_atoms, 3, 3))
    np.add.at(virials, centers, -vectors[:, :, None] * grads[:, None, :])
    ref = {"energies": energies, "forces": forces, "virials": virials}
    with Potential(model, chunk_bytes=1, **parallel) as split:
        assert split.chunk_edges == 1
        out = split.compute(positions, species, cell, pbc)
    assert out["energy"] == pytest.approx(float(np.sum(energies)), rel=1e-14)
    for key, value in ref.items():
        scale = np.max(np.abs(value))
        np.testing.assert_allclose(out[key], value, rtol=0, atol=1e-13 * scale)


def test_chunks_cover_every_atom_once():
    """Chunks are consecutive atom ranges with their edge ranges, atoms without edges included,
    at most one atom's edges above the budget."""
    from allegro_ref.potential import _chunks_of_centers

    centers = np.array([0, 0, 0, 2, 2, 3, 3, 3, 3, 5])  # atoms 1 and 4 have no edges
    for max_edges in (100, 4, 3, 1):
        chunks = _chunks_of_centers(centers, 7, max_edges)
        atoms = np.concatenate([np.arange(a, b) for a, b, _, _ in chunks])
        edges = np.concatenate([np.arange(s, e) for _, _, s, e in chunks])
        np.testing.assert_array_equal(atoms, np.arange(7))
        np.testing.assert_array_equal(edges, np.arange(10))
        for a, b, s, e in chunks:
            assert np.all((centers[s:e] >= a) & (centers[s:e] < b))
            assert e - s <= max_edges + 4  # at most one atom's edges more (atom 3 has 4)
    assert len(_chunks_of_centers(np.repeat(np.arange(8), 5), 8, 10)) == 4
    assert _chunks_of_centers(centers[:0], 0, 10) == [(0, 0, 0, 0)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_distance=0), "min_distance must be a positive finite number, got 0"),
        (dict(min_distance=-0.1), "min_distance must be a positive finite number"),
        (dict(min_distance=float("nan")), "min_distance must be a positive finite number"),
        (dict(min_distance=float("inf")), "min_distance must be a positive finite number"),
        (dict(min_distance="0.1"), "min_distance must be a positive finite number"),
        (dict(min_distance=True), "min_distance must be a positive finite number"),
        (dict(min_distance=10**400), "min_distance must be a positive finite number"),
        (dict(chunk_bytes=0), "chunk_bytes must be a positive integer, got 0"),
        (dict(chunk_bytes=1.5), "chunk_bytes must be a positive integer"),
        (dict(chunk_bytes=float("inf")), "chunk_bytes must be a positive integer"),
        (dict(chunk_bytes="64M"), "chunk_bytes must be a positive integer"),
        (dict(num_threads=0), "num_threads must be a positive integer or None"),
        (dict(num_threads=1.5), "num_threads must be a positive integer or None"),
        (dict(num_threads=True), "num_threads must be a positive integer or None"),
        (dict(num_processes=0), "num_processes must be a positive integer"),
        (dict(num_processes=1.5), "num_processes must be a positive integer"),
        (dict(num_processes="2"), "num_processes must be a positive integer"),
        (dict(num_processes=float("nan")), "num_processes must be a positive integer"),
        (dict(keep_host_memory="no"), "keep_host_memory must be True, False or None"),
    ],
)
def test_constructor_arguments_are_checked(potential, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Potential(potential.model, **kwargs)


def test_valid_constructor_arguments_are_kept(potential):
    tuned = Potential(potential.model, min_distance=1, chunk_bytes=2.0**20, num_threads=np.int64(2))
    assert (tuned.min_distance, tuned.chunk_bytes, tuned.num_threads) == (1.0, 2**20, 2)
    assert type(tuned.chunk_bytes) is int and type(tuned.num_threads) is int
    with pytest.raises(ValueError, match="num_processes must be a positive integer"):
        tuned.num_processes = 0
    with pytest.raises(ValueError, match="num_threads must be a positive integer or None"):
        tuned.num_threads = -1


# ---------------------------------------------------------------------------------------------
# Backends and dtypes
# ---------------------------------------------------------------------------------------------


def test_numpy_and_strict_agree(potential, backend):
    """The network runs on array-api-strict (a simulated device where any hidden conversion to
    NumPy raises); results come back in the namespace of the positions."""
    model = potential.model
    params = {name: backend.asarray(value) for name, value in model.params.items()}
    on_backend = Potential(AllegroModel(model.config, params, model.dtype))
    for positions, species, cell, pbc in SYSTEMS.values():
        ref = potential.compute(positions, species, cell, pbc)
        xp_cell = None if cell is None else backend.asarray(cell)
        out = on_backend.compute(backend.asarray(positions), species, xp_cell, pbc)
        assert out["energy"] == pytest.approx(ref["energy"], rel=1e-13)
        for key in ("energies", "forces", "virials", "stress"):
            if ref[key] is None:
                assert out[key] is None
                continue
            assert type(out[key]) is type(backend.asarray(positions))
            np.testing.assert_allclose(backend.to_numpy(out[key]), ref[key], rtol=1e-12, atol=1e-13)
        # NumPy inputs to a potential on another backend give NumPy results
        host = on_backend.compute(positions, species, cell, pbc)
        assert isinstance(host["forces"], np.ndarray)


def test_float32_close_to_float64():
    config = tiny_config()
    p64 = Potential.from_config(config, seed=7, dtype="float64")
    p32 = Potential.from_config(config, seed=7, dtype="float32")
    for positions, species, cell, pbc in SYSTEMS.values():
        a = p64.compute(positions, species, cell, pbc)
        b = p32.compute(positions, species, cell, pbc)
        assert b["forces"].dtype == np.float64
        np.testing.assert_allclose(b["energy"], a["energy"], rtol=1e-5)
        scale = np.max(np.abs(a["forces"]))
        np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-4 * scale)


# ---------------------------------------------------------------------------------------------
# Weight files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    potential = Potential.from_config(
        tiny_config(per_edge_type_cutoff={"O": 3.0}), seed=4, dtype=dtype
    )
    path = tmp_path / "model.npz"
    potential.save(path)
    loaded = Potential.load(path)
    assert loaded.config == potential.config
    assert loaded.dtype == dtype
    assert set(loaded.model.params) == set(potential.model.params)
    for name, value in potential.model.params.items():
        assert loaded.model.params[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded.model.params[name], value)
    positions, species, cell, pbc = SYSTEMS["crystal"]
    a = potential.compute(positions, species, cell, pbc)
    b = loaded.compute(positions, species, cell, pbc)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])


def test_a_2022_model_saves_and_loads_as_its_family(tmp_path):
    """The file records the family: a 2022-era model comes back as an ``Allegro2022Model``."""
    config = Allegro2022Config(
        type_names=("O", "Cu"), r_max=3.5, num_tensor_features=2,
        two_body_latent_dims=(8, 8), latent_dims=(8,), edge_eng_dims=(4,),
    )  # fmt: skip
    potential = Potential.from_config(config, seed=2)
    assert isinstance(potential.model, Allegro2022Model)
    path = tmp_path / "model_2022.npz"
    potential.save(path)
    assert _metadata(path)["family"] == "allegro-2022"
    loaded = Potential.load(path)
    assert isinstance(loaded.model, Allegro2022Model) and loaded.config == config
    positions, species, cell, pbc = SYSTEMS["crystal"]
    assert loaded.compute(positions, species, cell, pbc)["energy"] == (
        potential.compute(positions, species, cell, pbc)["energy"]
    )


def test_a_version_1_file_still_loads(tmp_path, potential):
    """Format version 1 (no family entry) is today's family and reads as before."""
    path = tmp_path / "model.npz"
    potential.save(path)

    def version_1(metadata, arrays):
        metadata["format_version"] = 1
        del metadata["family"]

    _rewrite(path, version_1)
    loaded = Potential.load(path)
    assert isinstance(loaded.model, AllegroModel) and loaded.config == potential.config
    for name, value in potential.model.params.items():
        np.testing.assert_array_equal(loaded.model.params[name], value)


def _metadata(path):
    with np.load(path) as archive:
        return json.loads(str(archive["__metadata__"]))


def _rewrite(path, edit):
    """Rewrite a saved file after ``edit(metadata, arrays)``."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    metadata = json.loads(str(arrays.pop("__metadata__")))
    edit(metadata, arrays)
    with open(path, "wb") as handle:
        np.savez(handle, __metadata__=np.asarray(json.dumps(metadata)), **arrays)


def _set(key, value):
    def edit(metadata, arrays):
        metadata[key] = value

    return edit


def _set_config(key, value):
    def edit(metadata, arrays):
        metadata["config"][key] = value

    return edit


def _drop_config(metadata, arrays):
    del metadata["config"]


def _drop_array(metadata, arrays):
    name = sorted(arrays)[0]
    del arrays[name]
    del metadata["parameters"][name]


def _reshape_array(metadata, arrays):
    name = "center_embed"
    arrays[name] = np.zeros((arrays[name].shape[0] + 1, arrays[name].shape[1]))
    metadata["parameters"][name] = list(arrays[name].shape)


def _unlisted_array(metadata, arrays):
    arrays["extra"] = np.zeros(3)


def _nan_weight(metadata, arrays):
    arrays["readout.0"] = arrays["readout.0"].copy()
    arrays["readout.0"][0, 0] = np.nan


def _integer_weights(metadata, arrays):
    arrays["readout.0"] = arrays["readout.0"].astype(np.int64)


def _huge_l_max(metadata, arrays):
    metadata["config"]["l_max"] = 40


def _huge_widths(metadata, arrays):
    """A small file that declares widths of a million (terabytes of parameters)."""
    metadata["config"].update(num_scalar_features=10**6, allegro_mlp_hidden_layers_width=10**6)


def _huge_widths_listed(metadata, arrays):
    """... and lists the shapes that go with them: the arrays are still small."""
    _huge_widths(metadata, arrays)
    config = AllegroConfig.from_dict(metadata["config"])
    metadata["parameters"] = {k: list(v) for k, v in config.parameter_shapes().items()}


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set("format", "something-else"), "format 'something-else', expected"),
        (_set("format_version", FILE_FORMAT_VERSION + 1), "version 3 was written by a later"),
        (_set("format_version", None), "format version None is not one"),
        (_set("format_version", "2"), "format version '2' is not one"),
        (_set("format_version", True), "format version True is not one"),
        (_set("family", "mace"), "metadata 'family' is 'mace', expected one of"),
        (_set("dtype", "float16"), "metadata 'dtype' is 'float16'"),
        (_set("config", None), "'config': AllegroConfig.from_dict needs a mapping of field"),
        (_set("config", [1, 2]), "metadata 'config': .* got list"),
        (_set("parameters", []), "metadata 'parameters' must be an object"),
        (_set("parameters", {"center_embed": "2x4"}), "'parameters' of 'center_embed'"),
        (_set_config("parity", "false"), "'config': parity must be true or false, got 'false'"),
        (_set_config("l_max", 2.0), "'config': l_max must be an integer, got 2.0"),
        (_set_config("num_layers", True), "'config': num_layers must be an integer, got True"),
        (_set_config("r_max", None), "'config': r_max must be a number, got None"),
        (_set_config("avg_num_neighbors", [1, 2]), "'config': avg_num_neighbors must be a number"),
        (_set_config("per_edge_type_cutoff", [3.0]), "per_edge_type_cutoff must be a mapping"),
        (_set_config("type_names", None), "'config': type_names must be a non-empty list"),
        (_set_config("lmax", 2), r"'config': unknown AllegroConfig fields \['lmax'\]"),
        (_drop_config, r"metadata lacks the entries \['config'\]"),
        (_drop_array, "missing"),
        (_reshape_array, r"center_embed: got \(3, 4\), expected \(2, 4\)"),
        (_unlisted_array, "inconsistent"),
        (_nan_weight, "parameter 'readout.0' has 1 non-finite values"),
        (_integer_weights, "parameter 'readout.0' has dtype int64, expected float32 or float64"),
        (_huge_l_max, r"'config': l_max must be in 0..6, got 40"),
        (_huge_widths, "parameters have wrong shapes"),
        (_huge_widths_listed, r"'center_embed' has shape \(2, 4\), expected \(2, 500000\)"),
    ],
)
def test_load_refuses_bad_files(tmp_path, potential, edit, match):
    """Each a ``WeightFileError`` (a ``ValueError``) naming the file and the field, before any
    allocation of the size the file declares."""
    path = tmp_path / "model.npz"
    potential.save(path)
    _rewrite(path, edit)
    tracemalloc.start()
    try:
        with pytest.raises(WeightFileError, match=match) as error:
            Potential.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(error.value)
    assert peak < 16 * 2**20


def test_load_refuses_other_files(tmp_path):
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    with pytest.raises(WeightFileError, match="model.txt' is not an allegro_ref weights file"):
        Potential.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(WeightFileError, match="no '__metadata__' entry"):
        Potential.load(other)
    assert zipfile.is_zipfile(other)
    with pytest.raises(FileNotFoundError, match="no weights file: .*missing.npz"):
        Potential.load(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        Potential.load(tmp_path)


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("failure", ["exception", "disk full"])
def test_a_failed_save_keeps_the_previous_file(tmp_path, potential, monkeypatch, failure):
    """A save that fails half way (an exception in the writer; a full disk, ENOSPC) leaves the
    previous file as it was, loadable, and no temporary file behind."""
    import errno

    path = tmp_path / "model.npz"
    potential.save(path)
    before = path.read_bytes()
    other = Potential.from_config(tiny_config(), seed=99)
    savez = np.savez

    def failing_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half of an archive")
        if failure == "exception":
            raise _Interrupted("the writer failed half way")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(_Interrupted if failure == "exception" else OSError):
        other.save(path)
    monkeypatch.setattr(np, "savez", savez)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    loaded = Potential.load(path)
    for name, value in potential.model.params.items():
        np.testing.assert_array_equal(loaded.model.params[name], value)


def test_a_failed_fsync_keeps_the_previous_file(tmp_path, potential, monkeypatch):
    """The disk fills at the very end (fsync fails with ENOSPC): the old file stays."""
    import errno
    import os

    path = tmp_path / "model.npz"
    potential.save(path)
    before = path.read_bytes()

    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        Potential.from_config(tiny_config(), seed=99).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


# ---------------------------------------------------------------------------------------------
# Input errors
# ---------------------------------------------------------------------------------------------

POSITIONS = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(species=["O", "Xx"]), r"species 'Xx' is not in the model's type_names \['O', 'Cu'\]"),
        (dict(species=[8, 1]), r"species 'H' is not in the model's type_names"),
        (dict(species=[8, 0]), "atomic number 0 is not an element"),
        (dict(species=["O"]), r"one entry per atom: got shape \(1,\) for 2 atoms"),
        (dict(species=np.array([1.0, 2.0])), "type names .* or atomic numbers"),
        (dict(positions=np.array([[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]])), r"atoms \[1\]"),
        (dict(positions=np.zeros((2, 2))), r"positions must have shape \[n_atoms, 3\]"),
        (dict(cell=np.eye(2), pbc=True), r"cell must have shape \[3, 3\]"),
        (dict(cell=np.full((3, 3), np.nan), pbc=True), "cell is not finite"),
        (dict(cell=np.zeros((3, 3)), pbc=True), "must be non-zero and linearly independent"),
        (dict(pbc="yes"), "pbc must be one bool or three"),
        (dict(positions=np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]])), "atoms 0 and 1 are 0.05 Å"),
        (
            dict(
                positions=np.array([[0.0, 0.0, 0.0], [2.97, 0.0, 0.0]]),
                cell=3.0 * np.eye(3),
                pbc=True,
            ),
            r"atoms 0 and 1 \(periodic image \[-1, 0, 0\]\) are 0.03 Å",
        ),
    ],
)
def test_bad_inputs(potential, kwargs, match):
    arguments = dict(positions=POSITIONS, species=["O", "Cu"], cell=None, pbc=False)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        potential.compute(**arguments)


def test_pretrained_lists_and_loads_the_shipped_models():
    available = Potential.available_pretrained()
    assert set(available) == {"cu-emt", "ethanol-gfn2"}
    assert all(isinstance(d, str) and d for d in available.values())
    with pytest.warns(DeprecationWarning, match="available_pretrained"):
        assert Potential.pretrained() == available
    cu = Potential.pretrained("cu-emt")
    assert isinstance(cu, Potential)
    assert cu.config.type_names == ("Cu",)
    with pytest.raises(ValueError, match="unknown pretrained model"):
        Potential.pretrained("water")


def test_num_threads_sets_the_blas_threads_during_compute_only(potential, monkeypatch):
    """The BLAS runs ``num_threads`` threads inside ``compute`` and is restored afterwards; the
    chunks run one after the other, so repeated calls give identical numbers (chunks on
    concurrent Python threads did not, with the OpenBLAS that NumPy bundles)."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    seen = []
    model = potential.model
    forward = model.forward

    def recording_forward(*args):
        seen.append(blas_threads())
        return forward(*args)

    monkeypatch.setattr(model, "forward", recording_forward)
    two = Potential(model, chunk_bytes=1, num_threads=2)
    positions, species, cell, pbc = mixed_crystal()
    first = two.compute(positions, species, cell, pbc)
    second = two.compute(positions, species, cell, pbc)
    assert len(seen) > 2 and all(threads == [2] * len(before) for threads in seen)
    assert blas_threads() == before
    for key in ("energies", "forces", "virials"):
        np.testing.assert_array_equal(first[key], second[key])


def test_worker_processes_give_the_same_numbers_and_stop(potential):
    """Chunks evaluated by two worker processes (one BLAS thread each) are bit for bit those
    of the same chunks evaluated here with one BLAS thread; close() stops the workers, a later
    compute starts new ones, and copies do not share them."""
    import copy

    positions, species, cell, pbc = mixed_crystal()
    reference = Potential(potential.model, chunk_bytes=1, num_threads=1)
    expected = reference.compute(positions, species, cell, pbc)
    parallel = Potential(potential.model, chunk_bytes=1, num_processes=2)
    for _ in range(2):
        out = parallel.compute(positions, species, cell, pbc)
        for key in ("energies", "forces", "virials", "stress"):
            np.testing.assert_array_equal(out[key], expected[key])
        pool = parallel._executor._pool
        assert pool is not None and copy.copy(parallel)._executor._pool is None
        parallel.close()
        assert parallel._executor._pool is None
        with pytest.raises(RuntimeError, match="after shutdown"):
            pool.submit(abs, -1)


def test_execution_settings_are_kept_by_to_and_settable(potential):
    """num_threads, num_processes and keep_host_memory travel with ``to``; setting
    num_processes stops the current workers (a later compute starts the new number)."""
    tuned = Potential(potential.model, num_threads=2, num_processes=3, keep_host_memory=True)
    moved = tuned.to("numpy")
    assert (moved.num_threads, moved.num_processes, moved.keep_host_memory) == (2, 3, True)
    assert moved._executor.keep_host_memory is True
    moved.num_processes = 1
    moved.num_threads = None
    assert (moved._executor.num_processes, moved._executor.num_threads) == (1, None)
