"""Neighbour list: same edge sets as ase.neighborlist (an independent implementation) on
triclinic cells smaller than the cutoff, mixed pbc, molecules, single atoms, unwrapped atoms."""

from __future__ import annotations

import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.neighbors import edge_vectors, neighbor_list, within_pair_cutoffs
from tests.strategies import seeds


def ase_edges(positions, cell, pbc, cutoff) -> list[tuple]:
    i, j, shifts = primitive_neighbor_list(
        "ijS", pbc, cell, positions, cutoff, self_interaction=False
    )
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, shifts.tolist()), strict=True))


def as_edges(centers, neighbors, shifts) -> list[tuple]:
    return sorted(
        zip(centers.tolist(), neighbors.tolist(), map(tuple, shifts.tolist()), strict=True)
    )


@st.composite
def systems(draw, fully_periodic: bool = False, zero_free_cells: bool = False):
    """(positions, cell, pbc, cutoff): a random triclinic cell (lengths 1.5-6 Å, so often below
    the cutoff), random pbc, atoms drawn in fractional coordinates [-0.5, 1.5) (some outside)."""
    rng = np.random.default_rng(draw(seeds))
    n_atoms = draw(st.integers(1, 6))
    pbc = np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    pbc |= fully_periodic
    lengths = rng.uniform(1.5, 6.0, size=3)
    shear = rng.uniform(-0.5, 0.5, size=3)
    cell = np.diag(lengths)
    cell[1, 0], cell[2, 0], cell[2, 1] = shear * lengths[[1, 2, 2]]
    cell = cell @ np.linalg.qr(rng.standard_normal((3, 3)))[0]  # arbitrary orientation
    fractional = rng.uniform(-0.5, 1.5, size=(n_atoms, 3))
    positions = fractional @ cell
    if draw(st.booleans()) and not (fully_periodic or zero_free_cells):
        # a non-periodic lattice vector may be zero (ASE allows it)
        cell[~pbc] = 0.0
    cutoff = float(rng.uniform(1.0, 4.0))
    return positions, cell, pbc, cutoff


def brute_force_edges(positions, cell, pbc, cutoff) -> list[tuple]:
    """Every (i, j, S) with |x_j - x_i + S @ cell| < cutoff, S over a box of integer shifts wide
    enough for any pair (|S_k| <= r_c / plane spacing + span of the fractional coordinates)."""
    periodic = cell[pbc]
    reach = np.zeros(3, dtype=int)
    if periodic.shape[0]:
        # fractional coordinates along the periodic directions (least squares = exact there)
        dual = np.linalg.pinv(periodic)  # [3, n_periodic]
        span = np.ptp(positions @ dual, axis=0) if len(positions) else 0.0
        reach[pbc] = np.ceil(cutoff * np.linalg.norm(dual, axis=0) + span).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij"), -1).reshape(
        -1, 3
    )
    # [shift, i, j, 3]: x_j - x_i + S @ cell
    vectors = (
        positions[None, None, :, :] - positions[None, :, None, :] + (grid @ cell)[:, None, None]
    )
    inside = np.linalg.norm(vectors, axis=-1) < cutoff
    inside[np.all(grid == 0, axis=1)] &= ~np.eye(len(positions), dtype=bool)
    s, i, j = np.nonzero(inside)
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, grid[s].tolist()), strict=True))


@given(systems(zero_free_cells=True))
def test_same_edges_as_ase(system):
    positions, cell, pbc, cutoff = system
    centers, neighbors, shifts = neighbor_list(positions, cell, pbc, cutoff)
    assert centers.dtype == neighbors.dtype == shifts.dtype == np.int64
    assert as_edges(centers, neighbors, shifts) == ase_edges(positions, cell, pbc, cutoff)


@given(systems())
def test_same_edges_as_brute_force(system):
    """Also covers zero lattice vectors in non-periodic directions, where
    ase.neighborlist.primitive_neighbor_list (ase 3.29) misses pairs in rotated cells."""
    positions, cell, pbc, cutoff = system
    edges = as_edges(*neighbor_list(positions, cell, pbc, cutoff))
    assert edges == brute_force_edges(positions, cell, pbc, cutoff)


@given(systems())
def test_edge_invariants(system):
    positions, cell, pbc, cutoff = system
    centers, neighbors, shifts = neighbor_list(positions, cell, pbc, cutoff)
    vectors = edge_vectors(positions, cell, centers, neighbors, shifts)
    assert np.all(np.linalg.norm(vectors, axis=1) < cutoff)
    # sorted by centre, then neighbour
    key = centers * len(positions) + neighbors
    assert np.all(np.diff(key) >= 0)
    # no zero-shift self pair
    assert not np.any((centers == neighbors) & np.all(shifts == 0, axis=1))
    # full list: every edge (i, j, S) has its reverse (j, i, -S)
    forward = set(as_edges(centers, neighbors, shifts))
    assert forward == {(j, i, tuple(-s for s in shift)) for i, j, shift in forward}
    # no shift along a non-periodic direction
    assert np.all(shifts[:, ~pbc] == 0)


def test_cell_smaller_than_cutoff_has_many_images():
    """One atom in a 2 Å cubic cell with r_c = 4.5 Å sees its own images: every integer
    shift S != 0 with 2|S| < 4.5, i.e. the lattice points inside a sphere of radius 2.25."""
    centers, neighbors, shifts = neighbor_list(
        np.array([[0.3, 0.2, 0.1]]), 2.0 * np.eye(3), True, 4.5
    )
    grid = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    expected = grid[(np.linalg.norm(grid, axis=1) < 2.25) & np.any(grid != 0, axis=1)]
    assert np.all(centers == 0) and np.all(neighbors == 0)
    assert sorted(map(tuple, shifts.tolist())) == sorted(map(tuple, expected.tolist()))


@pytest.mark.parametrize("cell", [None, np.zeros((3, 3)), 10.0 * np.eye(3)])
def test_molecule(cell):
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.1], [0.0, 3.0, 0.0]])
    centers, neighbors, shifts = neighbor_list(positions, cell, False, 2.0)
    assert centers.tolist() == [0, 1] and neighbors.tolist() == [1, 0]
    assert np.all(shifts == 0)


def test_single_atom_and_no_atoms():
    for n_atoms in (0, 1):
        centers, neighbors, shifts = neighbor_list(np.zeros((n_atoms, 3)), None, False, 5.0)
        assert centers.shape == neighbors.shape == (0,) and shifts.shape == (0, 3)


@given(systems(fully_periodic=True))
def test_wrapping_keeps_the_edge_vectors(system):
    """Wrapping atoms into the cell changes the shifts, not the set of edge vectors."""
    positions, cell, pbc, cutoff = system
    fractional = np.linalg.solve(cell.T, positions.T).T
    wrapped = (fractional - np.floor(fractional)) @ cell

    def vector_set(pos):
        c, n, s = neighbor_list(pos, cell, pbc, cutoff)
        vectors = np.round(edge_vectors(pos, cell, c, n, s), 9)
        return sorted(zip(c.tolist(), n.tolist(), map(tuple, vectors.tolist()), strict=True))

    assert vector_set(positions) == vector_set(wrapped)


def test_backends_agree(backend, rng):
    cell = np.array([[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [0.5, 0.4, 3.2]])
    positions = rng.uniform(0.0, 1.0, (5, 3)) @ cell
    reference = neighbor_list(positions, cell, [True, False, True], 3.5)
    result = neighbor_list(
        backend.asarray(positions), backend.asarray(cell), [True, False, True], 3.5
    )
    xp_positions = backend.asarray(positions)
    for got, want in zip(result, reference, strict=True):
        assert type(got) is type(xp_positions)
        np.testing.assert_array_equal(backend.to_numpy(got), want)
    vectors = edge_vectors(xp_positions, backend.asarray(cell), *result)
    np.testing.assert_array_equal(
        backend.to_numpy(vectors), edge_vectors(positions, cell, *reference)
    )


def test_within_pair_cutoffs(backend, rng):
    cell = 4.0 * np.eye(3)
    positions = rng.uniform(0.0, 4.0, (6, 3))
    atom_types = np.array([0, 1, 1, 0, 1, 0])
    cutoff_matrix = np.array([[3.0, 2.0], [2.0, 4.5]])
    centers, neighbors, shifts = neighbor_list(positions, cell, True, 4.5)
    vectors = edge_vectors(positions, cell, centers, neighbors, shifts)
    r_cut = cutoff_matrix[atom_types[centers], atom_types[neighbors]]
    expected = np.flatnonzero(np.linalg.norm(vectors, axis=1) < r_cut)
    assert 0 < expected.size < centers.size
    kept = within_pair_cutoffs(
        backend.asarray(vectors),
        backend.asarray(centers),
        backend.asarray(neighbors),
        backend.asarray(atom_types),
        cutoff_matrix,
    )
    np.testing.assert_array_equal(backend.to_numpy(kept), expected)
    # the pruned list is the union over type pairs of the neighbour list at that pair's cutoff
    union = []
    for ti in (0, 1):
        for tj in (0, 1):
            c, n, s = neighbor_list(positions, cell, True, cutoff_matrix[ti, tj])
            pair = (atom_types[c] == ti) & (atom_types[n] == tj)
            union += as_edges(c[pair], n[pair], s[pair])
    assert sorted(union) == as_edges(centers[expected], neighbors[expected], shifts[expected])


@pytest.mark.parametrize(
    "positions, cell, pbc, cutoff, match",
    [
        (np.zeros((2, 2)), None, False, 5.0, r"positions must have shape \[n_atoms, 3\]"),
        (np.array([[0.0, np.nan, 0.0]]), None, False, 5.0, r"positions of atoms \[0\]"),
        (np.zeros((1, 3)), np.eye(2), True, 5.0, r"cell must have shape \[3, 3\]"),
        (np.zeros((1, 3)), np.full((3, 3), np.inf), True, 5.0, "cell is not finite"),
        (np.zeros((1, 3)), np.eye(3), [True, False], 5.0, "pbc must be one bool or three"),
        (np.zeros((1, 3)), np.eye(3), [1, 0, 1], 5.0, "pbc must be one bool or three"),
        (np.zeros((1, 3)), np.diag([3.0, 3.0, 0.0]), True, 5.0, r"periodic directions \[0, 1, 2\]"),
        (np.zeros((1, 3)), np.ones((3, 3)), [True, True, False], 5.0, "linearly independent"),
        (np.zeros((1, 3)), np.eye(3), True, -1.0, "cutoff must be a finite positive"),
        (np.array([["a", "b", "c"]]), None, False, 5.0, "positions must be a real numeric"),
    ],
)
def test_bad_inputs(positions, cell, pbc, cutoff, match):
    with pytest.raises(ValueError, match=match):
        neighbor_list(positions, cell, pbc, cutoff)
