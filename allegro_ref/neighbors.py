"""Neighbour list with periodic images, and the edge vectors built from it.

An *edge* e = (i, j, S) is a directed pair: centre atom i, neighbour atom j and an integer
lattice shift S (row vector), with the edge vector

    r_e = x_j - x_i + S @ cell        [Å]  (cell rows = lattice vectors, as in ASE)

The list is *full* (both i -> j and j -> i), keeps every edge with |r_e| < cutoff, never holds
the zero-shift self pair (i, i, 0), and holds every periodic image inside the cutoff as its own
edge: a cell smaller than the cutoff gives many edges between the same two atoms, and an atom
sees its own images. Edges are sorted by centre, then neighbour (images of one pair keep the
order of the underlying library), which is the order the model's segment sums expect.

The search runs on the host with vesin (BSD-3), whatever array library the caller uses: this is
the one place where allegro_ref copies data to host memory and back (positions in, integer
edge arrays out; O(N + E) bytes per call). Everything downstream, including the edge vectors,
runs in the caller's namespace and device.

Conventions for cells (checked against ``ase.neighborlist`` in the tests):
- ``pbc`` is one bool or three; a non-periodic direction ignores its lattice vector, which may
  be zero (a molecule may have an all-zero cell).
- Periodic directions need linearly independent, non-zero lattice vectors.
- Atoms may lie outside the cell: the shifts are those of the positions as given (not wrapped).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import check_cell_and_pbc, check_positions
from .backend import device, namespace

__all__ = ["neighbor_list", "edge_vectors", "within_pair_cutoffs"]


def neighbor_list(
    positions: Any, cell: Any, pbc: bool | Any, cutoff: float
) -> tuple[Any, Any, Any]:
    """Full directed neighbour list with periodic images.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions, Å (any supported array library).
        cell: ``[3, 3]`` lattice vectors as rows, Å; ``None`` means an all-zero cell.
        pbc: periodicity, one bool or ``[3]`` bools (one per lattice vector).
        cutoff: radius r_c > 0, Å; edges satisfy |r_e| < r_c.

    Returns:
        ``(centers, neighbors, shifts)``: ``[n_edges]``, ``[n_edges]`` and ``[n_edges, 3]``
            int64 arrays in the namespace and on the device of ``positions``, with
            r_e = positions[neighbors] - positions[centers] + shifts @ cell, sorted by centre
            then neighbour.
    """
    xp = namespace(positions)
    host_positions = check_positions(positions)
    host_cell, host_pbc = check_cell_and_pbc(cell, pbc)
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0.0):
        raise ValueError(f"cutoff must be a finite positive number of Å, got {cutoff}")

    import vesin

    search = vesin.NeighborList(cutoff=cutoff, full_list=True, sorted=True)
    centers, neighbors, shifts = search.compute(
        host_positions, host_cell, host_pbc, quantities="ijS", copy=True
    )
    centers = centers.astype(np.int64)
    neighbors = neighbors.astype(np.int64)
    shifts = shifts.astype(np.int64)
    # vesin sorts by centre only; a stable sort on (centre, neighbour) keeps it deterministic.
    key = centers * max(1, host_positions.shape[0]) + neighbors
    if key.size and not bool(np.all(key[1:] >= key[:-1])):
        order = np.argsort(key, kind="stable")
        centers, neighbors, shifts = centers[order], neighbors[order], shifts[order]

    where = device(positions)
    return (
        xp.asarray(centers, device=where),
        xp.asarray(neighbors, device=where),
        xp.asarray(shifts, device=where),
    )


def edge_vectors(positions: Any, cell: Any, centers: Any, neighbors: Any, shifts: Any) -> Any:
    """Edge vectors r_e = x_j - x_i + S_e @ cell, ``[n_edges, 3]`` Å, in the namespace, device
    and dtype of ``positions`` (``cell``: ``[3, 3]`` of the same namespace; integer ``shifts``
    are cast to the float dtype). Linear in positions and cell: dr_e/dx_j = -dr_e/dx_i = 1."""
    xp = namespace(positions)
    shift_vectors = xp.astype(shifts, positions.dtype) @ cell
    return (
        xp.take(positions, neighbors, axis=0) - xp.take(positions, centers, axis=0) + shift_vectors
    )


def within_pair_cutoffs(
    vectors: Any, centers: Any, neighbors: Any, atom_types: Any, cutoff_matrix: np.ndarray
) -> Any:
    """Indices of the edges inside their per-type-pair cutoff: |r_e| < r_cut(t_i, t_j).

    Args:
        vectors: ``[n_edges, 3]`` edge vectors, Å.
        centers: ``[n_edges]`` integer index of each edge's centre atom.
        neighbors: ``[n_edges]`` integer index of each edge's neighbour atom.
        atom_types: ``[n_atoms]`` integer types (indices into the model's type names).
        cutoff_matrix: ``[n_types, n_types]`` float64 NumPy array, Å (row: centre type).

    Returns:
        ``[n_kept]`` int64 indices into the edges, increasing (so the sort order is kept); use
            ``xp.take(a, kept, axis=0)`` on every per-edge array.
    """
    xp = namespace(vectors)
    n_types = cutoff_matrix.shape[0]
    if cutoff_matrix.shape != (n_types, n_types):
        raise ValueError(f"cutoff_matrix must be square [T, T], got shape {cutoff_matrix.shape}")
    table = xp.asarray(
        np.ascontiguousarray(cutoff_matrix, dtype=np.float64).reshape(-1), device=device(vectors)
    )
    pair = xp.take(atom_types, centers, axis=0) * n_types + xp.take(atom_types, neighbors, axis=0)
    r_cut = xp.astype(xp.take(table, pair, axis=0), vectors.dtype)
    inside = xp.linalg.vector_norm(vectors, axis=-1) < r_cut
    return xp.astype(xp.nonzero(inside)[0], xp.int64)
