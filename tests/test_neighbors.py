"""Neighbor list: same edge sets as ase.neighborlist (an independent implementation) on
triclinic cells smaller than the cutoff, mixed pbc, molecules, single atoms, unwrapped atoms."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.neighborlist import primitive_neighbor_list
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.neighbors import MAX_EDGES, edge_vectors, neighbor_list, within_pair_cutoffs
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
    # sorted by center, then neighbor
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
    # the pruned list is the union over type pairs of the neighbor list at that pair's cutoff
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


# ---------------------------------------------------------------------------------------------
# Guards: inputs the native library would crash on, hang on, or allocate tens of GB for.
# Each runs in a child process, so a regression kills the child, not pytest.
# ---------------------------------------------------------------------------------------------
_CHILD = """
import json, sys
import numpy as np
from allegro_ref.neighbors import neighbor_list
positions, cell, pbc, cutoff = json.load(sys.stdin)
try:
    centers, neighbors, shifts = neighbor_list(
        np.array(positions, dtype=float).reshape(-1, 3),
        None if cell is None else np.array(cell, dtype=float), pbc, cutoff
    )
except ValueError as error:
    print(json.dumps({"error": str(error)}))
else:
    print(json.dumps({"edges": sorted(zip(centers.tolist(), neighbors.tolist(),
                                          map(tuple, shifts.tolist())))}))
"""


def neighbor_list_in_child(positions, cell, pbc, cutoff, timeout=60.0) -> dict:
    """``{"edges": [...]}`` or ``{"error": message}`` of ``neighbor_list`` run in a fresh Python
    process; fails the test if the child dies (signal) or runs longer than ``timeout`` s."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    argument = json.dumps(
        [
            np.asarray(positions).tolist(),
            None if cell is None else np.asarray(cell).tolist(),
            pbc,
            cutoff,
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=argument,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"child exited with {done.returncode}: {done.stderr[-2000:]}"
    result = json.loads(done.stdout)
    if "edges" in result:
        result["edges"] = [(i, j, tuple(s)) for i, j, s in result["edges"]]
    return result


def test_open_box_with_a_huge_extent_is_searched_correctly():
    """vesin 0.6.2 dies with SIGFPE on two atoms 10⁶ Å apart in an open box (its grid gets
    zero cells); the gaps are closed up first, and the pairs are those of the input."""
    far = neighbor_list_in_child([[0.0, 0.0, 0.0], [1e6, 0.0, 0.0]], None, False, 5.0)
    assert far == {"edges": []}
    positions = np.array(
        [
            [0.0, 0.0, 0.0],
            [1.5, 0.2, 0.0],
            [1e6, 0.0, 0.0],
            [1e6 + 4.99, 0.0, 0.0],
            [2e6, -1e6, 3e5],
            [2e6 + 1.0, -1e6 + 1.0, 3e5 + 1.0],
            [7.0, 0.0, 0.0],
        ]
    )
    result = neighbor_list_in_child(positions, None, False, 5.0)
    assert result["edges"] == ase_edges(positions, np.zeros((3, 3)), [False] * 3, 5.0)
    assert len(result["edges"]) == 6


@given(seeds)
def test_far_apart_clusters_same_edges_as_ase(seed):
    """Clusters scattered over 10⁸ Å: the closed-up search gives ASE's edges exactly."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-1e8, 1e8, (4, 3)) * (rng.uniform(size=(4, 3)) < 0.5)
    positions = (centers[:, None, :] + rng.uniform(0.0, 6.0, (4, 5, 3))).reshape(-1, 3)
    edges = as_edges(*neighbor_list(positions, None, False, 3.0))
    assert edges == ase_edges(positions, np.zeros((3, 3)), [False] * 3, 3.0)


@pytest.mark.parametrize(
    "positions, cell, pbc, match",
    [
        # a near-singular cell: vesin would loop over ~10¹⁸ images (a hang Ctrl-C can't stop)
        (
            [[0, 0, 0], [1, 1, 1]],
            [[10, 0, 0], [10, 1e-8, 0], [0, 0, 10]],
            True,
            r"height across lattice vector 0 is 1e-08 Å.*nearly parallel",
        ),
        # a 0.01 Å cube: 5·10⁸ images of one atom, tens of GB
        ([[0, 0, 0]], np.eye(3) * 0.01, True, r"height across lattice vector 0 is 0.01 Å"),
        # an atom 10¹¹ cells from the cell: vesin's int32 cell index would overflow
        ([[0, 0, 0], [1e12, 0, 0]], np.eye(3) * 10, True, "cells away from the periodic cell"),
        # coordinates whose differences overflow float64
        ([[0, 0, 0], [1.7e308, 0, 0], [-1.7e308, 0, 0]], None, False, "beyond 1e\\+12 Å"),
        ([[0, 0, 0]], np.eye(3) * 1e300, True, "cell reach 1e\\+300 Å"),
        # 10⁵ atoms in a 10 Å periodic box: 8·10⁴ neighbors each
        (
            np.random.default_rng(0).uniform(0, 10, (100_000, 3)),
            np.eye(3) * 10,
            True,
            "neighbors per atom",
        ),
    ],
)
def test_inputs_the_library_cannot_search_are_refused(positions, cell, pbc, match):
    start = time.perf_counter()
    result = neighbor_list_in_child(positions, cell, pbc, 5.0, timeout=60.0)
    assert "error" in result, result
    assert re.search(match, result["error"]), result["error"]
    assert time.perf_counter() - start < 30.0


def test_max_edges_is_an_upper_bound_the_caller_can_set():
    positions = np.random.default_rng(1).uniform(0.0, 20.0, (400, 3))
    with pytest.raises(ValueError, match=r"max_edges = 1e\+03"):
        neighbor_list(positions, 20.0 * np.eye(3), True, 5.0, max_edges=1000)
    centers, _, _ = neighbor_list(positions, 20.0 * np.eye(3), True, 5.0)
    assert centers.size > 1000


def test_physical_extremes_pass_the_guards():
    """Ten million atoms of a liquid (0.1 atoms/Å³, r_c = 5 Å), a 1 Å cell with r_c = 6 Å, a
    slab 10⁴ Å wide, a cell with a 1 Å height: all within the limits (checked without the
    search, which for ten million atoms would take minutes)."""
    from allegro_ref.neighbors import _guard_search

    side = (1e7 / 0.1) ** (1 / 3)
    liquid = np.random.default_rng(2).uniform(0.0, side, (10_000_000, 3))
    _guard_search(liquid, side * np.eye(3), np.ones(3, bool), 5.0, MAX_EDGES)
    small = neighbor_list(np.zeros((1, 3)), np.eye(3), True, 6.0)
    assert small[0].size == ase_edges(np.zeros((1, 3)), np.eye(3), [True] * 3, 6.0).__len__()
    slab = np.random.default_rng(3).uniform(0.0, 1.0, (50, 3)) * [1e4, 1e4, 3.0]
    cell = np.diag([1e4, 1e4, 0.0])
    pbc = [True, True, False]
    assert as_edges(*neighbor_list(slab, cell, pbc, 5.0)) == ase_edges(slab, cell, pbc, 5.0)
    sheared = np.array([[4.0, 0.0, 0.0], [3.9, 1.0, 0.0], [0.0, 0.0, 4.0]])
    atoms = np.random.default_rng(4).uniform(0.0, 1.0, (3, 3)) @ sheared
    assert as_edges(*neighbor_list(atoms, sheared, True, 5.0)) == ase_edges(
        atoms, sheared, [True] * 3, 5.0
    )


def test_a_chain_too_long_for_the_library_grid_is_searched_correctly():
    """A chain of 250000 atoms 4 Å apart, 10⁶ Å long in an open box: no gap to close, and
    vesin 0.6.2's own grid would have zero cells across it (SIGFPE); each atom's neighbors
    within 5 Å are the two next to it."""
    n = 250_000
    result = neighbor_list_in_child(np.c_[np.arange(n) * 4.0, np.zeros((n, 2))], None, False, 5.0)
    index = np.arange(n - 1)
    expected = sorted(
        [(i, i + 1, (0, 0, 0)) for i in index.tolist()]
        + [(i + 1, i, (0, 0, 0)) for i in index.tolist()]
    )
    assert result["edges"] == expected


@pytest.mark.parametrize(
    "positions, cell, pbc",
    [
        # two atoms 10⁶ Å apart along the open direction of a slab
        ([[0, 0, 0], [0, 0, 1e6], [1, 1, 1e6]], np.eye(3) * 10, [True, True, False]),
        # a sheet 2000 Å wide and 3 Å thick, open or periodic across
        (
            np.random.default_rng(3).uniform(0, 1, (400, 3)) * [2e3, 2e3, 3],
            np.diag([2e3, 2e3, 0]),
            [True, True, False],
        ),
        (
            np.random.default_rng(3).uniform(0, 1, (400, 3)) * [2e3, 2e3, 6],
            np.diag([2e3, 2e3, 6]),
            True,
        ),
    ],
)
def test_boxes_vesin_would_crash_on_are_searched_correctly(positions, cell, pbc):
    """vesin 0.6.2 dies with SIGFPE on each of these (zero grid cells along a direction)."""
    result = neighbor_list_in_child(positions, cell, pbc, 5.0)
    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    pbc = np.broadcast_to(np.asarray(pbc), (3,))
    assert result["edges"] == brute_force_edges(positions, cell, pbc, 5.0)


def test_a_tall_slab_with_an_open_direction_is_fast_and_exact():
    """vesin 0.6.2's time for a slab open along z grows as atoms² (0.6 s for these 10000 atoms
    in 10 × 10 × 1000 Å, 2.4 s for twice as many in twice the height); searched as a long
    periodic box it is linear, with the edges of the same slab in a fully periodic box too
    tall for any image along z."""
    positions = np.random.default_rng(5).uniform(0, 1, (10_000, 3)) * [10.0, 10.0, 1000.0]
    start = time.perf_counter()
    open_z = as_edges(
        *neighbor_list(positions, np.diag([10.0, 10.0, 0.0]), [True, True, False], 5.0)
    )
    assert time.perf_counter() - start < 10.0
    tall = as_edges(*neighbor_list(positions, np.diag([10.0, 10.0, 1e4]), True, 5.0))
    assert open_z == tall


def test_large_searches_run_in_a_worker_thread_with_the_same_result(monkeypatch, rng):
    import allegro_ref.neighbors as module

    positions = rng.uniform(0.0, 12.0, (150, 3))
    direct = neighbor_list(positions, 12.0 * np.eye(3), True, 5.0)
    monkeypatch.setattr(module, "_INTERRUPTIBLE_EDGES", 0.0)
    threaded = neighbor_list(positions, 12.0 * np.eye(3), True, 5.0)
    for a, b in zip(direct, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ZeroDivisionError):
        module._interruptible(lambda: 1 / 0)


def test_ctrl_c_interrupts_a_long_native_call():
    """SIGINT during a 30 s call that holds no Python frame (a sleep, like a native search)
    ends the program within seconds."""
    code = (
        "import time\n"
        "from allegro_ref.neighbors import _interruptible\n"
        "print('started', flush=True)\n"
        "_interruptible(lambda: time.sleep(30))\n"
    )
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert child.stdout.readline().strip() == "started"
    time.sleep(0.3)
    start = time.perf_counter()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=20)
    assert time.perf_counter() - start < 5.0
    assert "KeyboardInterrupt" in stderr
