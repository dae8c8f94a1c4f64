"""Forces, virials and stress from edge gradients (``allegro_ref._derivatives``), checked against
central finite differences of an independent analytic energy: a pair energy
E = Σ_e φ(|r_e|) over fixed edges e = (i -> j, S_e), r_e = x_j - x_i + S_e·cell, whose edge
gradients g_e = φ'(|r_e|) r_e / |r_e| are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref._derivatives import (
    forces_from_edge_gradients,
    stress_from_virial,
    virials_from_edge_gradients,
)


def phi(r):
    return np.exp(-r) * (1.0 + r * r)


def phi_prime(r):
    return np.exp(-r) * (2.0 * r - 1.0 - r * r)


def random_structure(rng, n_atoms=6, n_edges=30):
    """Positions, a skewed cell, and random edges (center, neighbor, integer shift)."""
    cell = np.diag([4.0, 4.5, 5.0]) + 0.3 * rng.standard_normal((3, 3))
    positions = rng.uniform(0.0, 1.0, (n_atoms, 3)) @ cell
    centers = np.sort(rng.integers(0, n_atoms, n_edges))
    neighbors = (centers + rng.integers(1, n_atoms, n_edges)) % n_atoms  # never i -> i
    shifts = rng.integers(-1, 2, (n_edges, 3)).astype(np.float64)
    return positions, cell, centers, neighbors, shifts


def vectors_of(positions, cell, centers, neighbors, shifts):
    return positions[neighbors] - positions[centers] + shifts @ cell


def energy(positions, cell, centers, neighbors, shifts):
    r = vectors_of(positions, cell, centers, neighbors, shifts)
    return float(np.sum(phi(np.linalg.norm(r, axis=1))))


def edge_gradients(vectors):
    lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
    return phi_prime(lengths) * vectors / lengths


def test_forces_are_minus_the_position_gradient(backend, rng):
    positions, cell, centers, neighbors, shifts = random_structure(rng)
    n = positions.shape[0]
    g = edge_gradients(vectors_of(positions, cell, centers, neighbors, shifts))
    forces = backend.to_numpy(
        forces_from_edge_gradients(
            backend.asarray(g), backend.asarray(centers), backend.asarray(neighbors), n
        )
    )
    h = 1e-5
    expected = np.zeros((n, 3))
    for k in range(n):
        for a in range(3):
            plus, minus = positions.copy(), positions.copy()
            plus[k, a] += h
            minus[k, a] -= h
            expected[k, a] = -(
                energy(plus, cell, centers, neighbors, shifts)
                - energy(minus, cell, centers, neighbors, shifts)
            ) / (2 * h)
    np.testing.assert_allclose(forces, expected, rtol=1e-7, atol=1e-9)


def test_stress_is_the_strain_derivative_over_the_volume(backend, rng):
    """σ = (1/V) ∂E/∂ε for x -> x (1 + ε), cell -> cell (1 + ε) (ASE sign), symmetric."""
    positions, cell, centers, neighbors, shifts = random_structure(rng)
    vectors = vectors_of(positions, cell, centers, neighbors, shifts)
    g = edge_gradients(vectors)
    virials = virials_from_edge_gradients(
        backend.asarray(vectors), backend.asarray(g), backend.asarray(centers), 6
    )
    xp = backend.xp
    volume = abs(float(np.linalg.det(cell)))
    stress = backend.to_numpy(stress_from_virial(xp.sum(virials, axis=0), volume))
    h = 1e-6
    expected = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            strain = np.zeros((3, 3))
            strain[a, b] = h
            plus, minus = np.eye(3) + strain, np.eye(3) - strain
            expected[a, b] = (
                energy(positions @ plus, cell @ plus, centers, neighbors, shifts)
                - energy(positions @ minus, cell @ minus, centers, neighbors, shifts)
            ) / (2 * h * volume)
    np.testing.assert_allclose(stress, expected, rtol=1e-7, atol=1e-10)
    np.testing.assert_array_equal(stress, stress.T)


def test_virials_sum_to_minus_volume_times_stress(backend, rng):
    """Σ_i W_i = -V σ before symmetrization; σ = sym(-Σ_i W_i / V) for any g (not only
    gradients of rotation-invariant energies)."""
    positions, cell, centers, neighbors, shifts = random_structure(rng)
    vectors = vectors_of(positions, cell, centers, neighbors, shifts)
    g = rng.standard_normal(vectors.shape)
    xp = backend.xp
    virials = virials_from_edge_gradients(
        backend.asarray(vectors), backend.asarray(g), backend.asarray(centers), 6
    )
    total = backend.to_numpy(xp.sum(virials, axis=0))
    np.testing.assert_allclose(total, -vectors.T @ g, rtol=1e-13, atol=1e-13)
    # per atom: only the edges centered on it
    for i in range(6):
        mine = centers == i
        np.testing.assert_allclose(
            backend.to_numpy(virials)[i], -vectors[mine].T @ g[mine], rtol=1e-13, atol=1e-13
        )
    volume = 7.5
    stress = backend.to_numpy(stress_from_virial(backend.asarray(total), volume))
    unsymmetrized = vectors.T @ g / volume
    np.testing.assert_allclose(stress, 0.5 * (unsymmetrized + unsymmetrized.T), rtol=1e-13)


def test_a_batch_gives_each_structure_its_own_forces_virial_and_stress(backend, rng):
    """Two structures concatenated (atoms and edges offset): forces are the concatenation,
    per-structure virials (segments = the structure of each edge) and stresses ``[B, 3, 3]``
    with volumes ``[B]`` are each structure's alone."""
    structures = [random_structure(rng, 5, 20), random_structure(rng, 7, 25)]
    xp = backend.xp
    single = []
    for positions, cell, centers, neighbors, shifts in structures:
        vectors = vectors_of(positions, cell, centers, neighbors, shifts)
        g = edge_gradients(vectors)
        n = positions.shape[0]
        forces = forces_from_edge_gradients(
            backend.asarray(g), backend.asarray(centers), backend.asarray(neighbors), n
        )
        virials = virials_from_edge_gradients(
            backend.asarray(vectors), backend.asarray(g), backend.asarray(centers), n
        )
        volume = abs(float(np.linalg.det(cell)))
        stress = stress_from_virial(xp.sum(virials, axis=0), volume)
        single.append((vectors, g, centers, neighbors, n, volume, forces, stress))

    offsets = [0, single[0][4]]
    vectors = np.concatenate([s[0] for s in single])
    g = np.concatenate([s[1] for s in single])
    centers = np.concatenate([s[2] + o for s, o in zip(single, offsets, strict=True)])
    neighbors = np.concatenate([s[3] + o for s, o in zip(single, offsets, strict=True)])
    edge_structure = np.repeat([0, 1], [s[0].shape[0] for s in single])
    volumes = np.array([s[5] for s in single])
    n_atoms = sum(s[4] for s in single)

    forces = forces_from_edge_gradients(
        backend.asarray(g), backend.asarray(centers), backend.asarray(neighbors), n_atoms
    )
    virials = virials_from_edge_gradients(
        backend.asarray(vectors), backend.asarray(g), backend.asarray(edge_structure), 2
    )
    stress = backend.to_numpy(stress_from_virial(virials, backend.asarray(volumes)))
    expected_forces = np.concatenate([backend.to_numpy(s[6]) for s in single])
    np.testing.assert_allclose(backend.to_numpy(forces), expected_forces, rtol=1e-13, atol=1e-13)
    for b in range(2):
        np.testing.assert_allclose(stress[b], backend.to_numpy(single[b][7]), rtol=1e-12)


def test_complex_edge_gradients_give_complex_forces_and_stress(rng):
    """Complex inputs (complex-step differentiation in training) are handled linearly."""
    positions, cell, centers, neighbors, shifts = random_structure(rng)
    vectors = vectors_of(positions, cell, centers, neighbors, shifts)
    g_real, g_imag = rng.standard_normal((2, *vectors.shape))
    g = g_real + 1j * g_imag
    forces = forces_from_edge_gradients(g, centers, neighbors, 6)
    assert forces.dtype == np.complex128
    np.testing.assert_allclose(
        forces.imag, forces_from_edge_gradients(g_imag, centers, neighbors, 6), rtol=1e-13
    )
    virial = np.sum(virials_from_edge_gradients(vectors + 0j, g, centers, 6), axis=0)
    stress = stress_from_virial(virial, 3.0)
    np.testing.assert_allclose(
        stress.imag, stress_from_virial(-vectors.T @ g_imag, 3.0), rtol=1e-13
    )


@pytest.mark.parametrize("n_atoms", [0, 3])
def test_no_edges_give_zero_forces_and_virials(backend, n_atoms):
    empty = backend.asarray(np.zeros((0, 3)))
    ids = backend.asarray(np.zeros((0,), dtype=np.int64))
    forces = backend.to_numpy(forces_from_edge_gradients(empty, ids, ids, n_atoms))
    virials = backend.to_numpy(virials_from_edge_gradients(empty, empty, ids, n_atoms))
    assert forces.shape == (n_atoms, 3) and not np.any(forces)
    assert virials.shape == (n_atoms, 3, 3) and not np.any(virials)
