"""Neighbor list with periodic images, and the edge vectors built from it.

An *edge* e = (i, j, S) is a directed pair: center atom i, neighbor atom j and an integer
lattice shift S (row vector), with the edge vector

    r_e = x_j - x_i + S @ cell        [Å]  (cell rows = lattice vectors, as in ASE)

The list is *full* (both i -> j and j -> i), keeps every edge with |r_e| < cutoff, never holds
the zero-shift self pair (i, i, 0), and holds every periodic image inside the cutoff as its own
edge: a cell smaller than the cutoff gives many edges between the same two atoms, and an atom
sees its own images. Edges are sorted by center, then neighbor (images of one pair keep the
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

Guards. vesin is native code: an input it cannot handle may kill the process or run for hours
without answering Ctrl-C, so every input is checked here, before the call, from its own numbers
(see "Limits of the search" in ``neighbor_list``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ._validation import check_cell_and_pbc, check_positions
from .backend import device, namespace

__all__ = [
    "MAX_EDGES",
    "MAX_NEIGHBORS_PER_ATOM",
    "MAX_PERIODIC_IMAGES",
    "neighbor_list",
    "edge_vectors",
    "within_pair_cutoffs",
]


#: Most edges a neighbor list may hold unless ``max_edges`` says otherwise: about 2·10⁹ edges
#: take ~140 GB on the host (vesin's 28 bytes per edge, then 40 bytes of int64 copies). Ten
#: million atoms of a liquid (0.1 atoms/Å³) with a 5 Å cutoff need ~5·10⁸.
MAX_EDGES = 2_000_000_000
#: Most neighbors per atom the input may imply (density × volume of the cutoff sphere): dense
#: solids (0.2 atoms/Å³) with a 12 Å cutoff give ~1500; 20000 is reached only by atoms
#: or periodic images packed far closer than any physical matter (e.g. a 0.01 Å cell).
MAX_NEIGHBORS_PER_ATOM = 20_000
#: Most periodic images of the cell the search may visit: ∏ₖ (2⌈r_c / hₖ⌉ + 1) over the periodic
#: directions, hₖ the height of the cell across direction k (distance between its faces). A
#: 0.1 Å cell with a 5 Å cutoff visits 101³ ≈ 10⁶; nearly parallel lattice vectors give a
#: height near zero and an unbounded number.
MAX_PERIODIC_IMAGES = 10_000_000

# vesin 0.6 (cpu_cell_list.cpp) bins the atoms on a grid of cutoff-sized cells, at most this
# many; a longer box gets a coarser grid, and a very elongated one gets zero cells along a
# direction (an integer division by zero: SIGFPE kills the process).
_VESIN_MAX_CELLS = 1e5
# Open directions longer than this many cutoffs have their empty gaps closed up: vesin's grid
# along them would be longer than the atoms need (or degenerate: a crash).
_OPEN_SPAN = 50.0
# Searches expected to give more edges than this (~0.1 s or more) run in a worker thread, so
# that Ctrl-C interrupts them; smaller ones run directly (a thread costs ~0.1 ms).
_INTERRUPTIBLE_EDGES = 1e6
# Largest coordinate or lattice-vector component accepted, Å (100 m: beyond any simulation).
_MAX_COORDINATE = 1e12
# Cell indices and shifts are int32 inside vesin.
_INT32_SAFE = 2**30


def neighbor_list(
    positions: Any,
    cell: Any,
    pbc: bool | Any,
    cutoff: float,
    *,
    max_edges: int | None = None,
) -> tuple[Any, Any, Any]:
    """Full directed neighbor list with periodic images.

    Args:
        positions: ``[n_atoms, 3]`` Cartesian positions, Å (any supported array library).
        cell: ``[3, 3]`` lattice vectors as rows, Å; ``None`` means an all-zero cell.
        pbc: periodicity, one bool or ``[3]`` bools (one per lattice vector).
        cutoff: radius r_c > 0, Å; edges satisfy |r_e| < r_c.
        max_edges: most edges the input may imply before the search is refused (default
            ``MAX_EDGES``); raise it on a machine with the
            memory for more.

    Returns:
        ``(centers, neighbors, shifts)``: ``[n_edges]``, ``[n_edges]`` and ``[n_edges, 3]``
            int64 arrays in the namespace and on the device of ``positions``, with
            r_e = positions[neighbors] - positions[centers] + shifts @ cell, sorted by center
            then neighbor.

    Raises:
        ValueError: bad shapes, non-finite numbers, a singular periodic cell, or an input
            beyond the limits below, with the numbers that exceed them.

    Limits of the search (each checked before vesin runs):

    - periodic images: ∏ₖ (2⌈r_c / hₖ⌉ + 1) ≤
      ``MAX_PERIODIC_IMAGES``, hₖ the height of the
      cell across periodic direction k. Nearly parallel lattice vectors (a near-singular cell)
      or a cell much smaller than the cutoff are refused here instead of running for hours.
    - neighbors per atom, estimated as ρ · 4/3 π r_c³ with ρ = atoms / volume (periodic
      directions: the cell; open directions: the extent of the atoms, at least 2 r_c), ≤
      ``MAX_NEIGHBORS_PER_ATOM``, and
      atoms × that ≤ ``max_edges``.
    - coordinates and periodic lattice vectors within ±10¹² Å, and atoms at most ~10⁹ grid
      cells from the cell along a periodic direction (wrap them).
    - elongated or flat boxes are handled: vesin 0.6 bins atoms on a grid of at most 10⁵
      cutoff-sized cells and, for a box much longer or wider than it is thick (two atoms 10⁶ Å
      apart; a sheet 2000 Å wide and 3 Å thick), gives it zero cells along a direction and
      dies (SIGFPE). Here gaps wider than 2 r_c between atoms along an open direction are
      closed up (the pairs within r_c stay the same), and a box still too anisotropic is
      searched with the smallest larger cutoff that gives vesin a valid grid, then filtered
      to |r_e| < r_c. Only a box that would need more than ``max_edges`` that way is refused.
    - partly periodic boxes are searched as fully periodic ones whose open directions have a
      period longer than the atoms' span + 2 r_c (no image across them is within the cutoff,
      so their shifts are 0): vesin 0.6.2's time along open directions grows as atoms².
    - searches expected to give more than 10⁶ edges run in a worker thread, so that Ctrl-C
      stops the caller at once.
    """
    xp = namespace(positions)
    host_positions = check_positions(positions)
    host_cell, host_pbc = check_cell_and_pbc(cell, pbc)
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0.0):
        raise ValueError(f"cutoff must be a finite positive number of Å, got {cutoff}")
    max_edges = MAX_EDGES if max_edges is None else int(max_edges)
    search_positions, search_cell, search_pbc, search_cutoff, expected_edges = _guard_search(
        host_positions, host_cell, host_pbc, cutoff, max_edges
    )

    import vesin

    search = vesin.NeighborList(cutoff=search_cutoff, full_list=True, sorted=True)

    def compute():
        return search.compute(
            search_positions, search_cell, search_pbc, quantities="ijS", copy=True
        )

    if expected_edges > _INTERRUPTIBLE_EDGES:
        centers, neighbors, shifts = _interruptible(compute)
    else:
        centers, neighbors, shifts = compute()
    centers = centers.astype(np.int64)
    neighbors = neighbors.astype(np.int64)
    shifts = shifts.astype(np.int64)
    if search_cutoff != cutoff:
        # the box was closed up or searched with a larger cutoff (see _guard_search): keep
        # |r_e| < r_c computed from the positions as given, the test vesin applies (open
        # directions searched as long periodic ones have no image within the cutoff)
        vectors = host_positions[neighbors] - host_positions[centers] + shifts @ host_cell
        kept = np.einsum("ek,ek->e", vectors, vectors) < cutoff * cutoff
        kept &= np.all(shifts[:, ~host_pbc] == 0, axis=1)
        centers, neighbors, shifts = centers[kept], neighbors[kept], shifts[kept]
    # vesin sorts by center only; a stable sort on (center, neighbor) keeps it deterministic.
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


def _search_box(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The box vesin searches in: the periodic lattice vectors, and unit vectors orthogonal to
    them along the open directions (the Cartesian axes when nothing is periodic)."""
    box = np.eye(3)
    periodic = np.flatnonzero(pbc)
    if periodic.size == 3:
        return cell.copy()
    if periodic.size == 1:
        a = cell[periodic[0]] / np.linalg.norm(cell[periodic[0]])
        b = np.array([0.0, 1.0, 0.0]) if abs(a[1]) <= 0.9 else np.array([0.0, 0.0, 1.0])
        c = np.cross(a, b)
        c /= np.linalg.norm(c)
        b = np.cross(c, a)
        box[periodic[0]] = cell[periodic[0]]
        box[(periodic[0] + 1) % 3], box[(periodic[0] + 2) % 3] = b / np.linalg.norm(b), c
    elif periodic.size == 2:
        normal = np.cross(cell[periodic[0]], cell[periodic[1]])
        box[periodic] = cell[periodic]
        box[3 - periodic.sum()] = normal / np.linalg.norm(normal)
    return box


def _vesin_grid(widths: np.ndarray, cutoff: float) -> np.ndarray:
    """Number of grid cells per direction vesin 0.6 uses for a box of these ``widths`` (Å,
    distances between faces), including its shrinking of grids of more than 10⁵ cells."""
    with np.errstate(all="ignore"):
        n = np.maximum(np.trunc(widths / cutoff), 1.0)
        if n.prod() > _VESIN_MAX_CELLS:
            ratio_xy, ratio_yz = n[0] / n[1], n[1] / n[2]
            n2 = np.trunc(np.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz)))
            n1 = np.trunc(ratio_yz * n2)
            n = np.array([np.trunc(ratio_xy * n1), n1, n2])
    return n


def _open_widths(positions: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """vesin's width of an open direction k: 1.01 × the span of Cartesian coordinate k (1 Å
    when the atoms share that coordinate)."""
    if positions.shape[0] == 0:
        return np.full(3, 1.01)
    span = np.ptp(positions, axis=0)
    return np.where(span < 1e-6, 1.0, span) * 1.01


def _close_gaps(positions: np.ndarray, axes: np.ndarray, cutoff: float) -> np.ndarray:
    """Positions with every gap wider than 2 r_c between consecutive atoms along each of the
    unit ``axes`` ``[n_open, 3]`` (the open directions of the search box: orthonormal, and
    orthogonal to every periodic lattice vector) narrowed to 2 r_c, and the lowest atom moved to
    0 along each (far from the origin, vesin's int32 cell indices overflow). Atoms between two
    gaps move together, and no periodic image changes a coordinate along an open axis, so atoms
    on either side of a gap stay out of each other's cutoff and the pairs within r_c are those
    of the input."""
    closed = positions.copy()
    for axis in axes:
        along = positions @ axis
        order = np.argsort(along, kind="stable")
        gaps = np.diff(along[order])
        excess = np.concatenate([[0.0], np.cumsum(np.maximum(gaps - 2.0 * cutoff, 0.0))])
        closed[order] -= (excess + along[order[0]])[:, None] * axis
    return closed


def _guard_search(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float, max_edges: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Refuse inputs vesin cannot search (or not within memory), see ``neighbor_list``; return
    the positions, cell, pbc and cutoff to search with, and the number of edges expected
    within that cutoff: open directions may be closed up (and
    then searched with a slightly larger cutoff and filtered), made periodic with a long
    period, or searched with a larger cutoff where vesin's grid would be degenerate."""
    _check_coordinates(positions, cell, pbc)
    box = _search_box(cell, pbc)
    volume = abs(float(np.linalg.det(box)))
    faces = np.linalg.norm(np.cross(box[[1, 2, 0]], box[[2, 0, 1]]), axis=1)
    heights = volume / faces  # of the periodic directions; the open rows are unit vectors
    _check_periodic_images(cell, pbc, heights, cutoff)

    search_positions, search_cutoff = _compact_open_directions(positions, box, pbc, cutoff)
    widths_for = _search_widths(search_positions, box, pbc, heights)
    search_cutoff, widths, grid = _coarsen_grid(widths_for, search_cutoff, cutoff)
    if search_cutoff > cutoff * 1.01:
        _check_periodic_images(cell, pbc, heights, search_cutoff, coarsened_widths=widths)
    _check_far_atoms(search_positions, box, pbc, grid)
    expected_edges = _expected_edges(
        positions.shape[0], volume, widths, pbc, search_cutoff, max_edges
    )
    search_cell, search_pbc = cell, pbc
    if 0 < pbc.sum() < 3:
        search_cell = box.copy()
        search_cell[~pbc] *= widths[~pbc, None]
        search_pbc = np.ones(3, dtype=bool)
    return search_positions, search_cell, search_pbc, search_cutoff, expected_edges


def _check_coordinates(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Refuse coordinates (and periodic lattice vectors) beyond ``_MAX_COORDINATE`` Å."""
    for name, values in (("positions", positions), ("cell", cell[pbc])):
        if values.size and np.abs(values).max() > _MAX_COORDINATE:
            raise ValueError(
                f"{name} reach {np.abs(values).max():.3g} Å; coordinates beyond "
                f"{_MAX_COORDINATE:.0e} Å are refused (float64 no longer resolves 10⁻⁴ Å there)"
            )


def _check_periodic_images(
    cell: np.ndarray,
    pbc: np.ndarray,
    heights: np.ndarray,
    cutoff: float,
    coarsened_widths: np.ndarray | None = None,
) -> None:
    """Refuse a search that would visit more than ``MAX_PERIODIC_IMAGES`` periodic images
    (``heights``: the cell's heights across its faces, Å; ``coarsened_widths``: the search box
    when the cutoff was enlarged for vesin's grid)."""
    images = np.where(pbc, np.ceil(cutoff / np.where(pbc, heights, 1.0)), 0.0)
    n_images = float(np.prod(2.0 * images + 1.0))
    if n_images <= MAX_PERIODIC_IMAGES:
        return
    if coarsened_widths is not None:
        raise ValueError(
            f"the search box (widths {coarsened_widths.tolist()} Å across its faces) is too "
            f"elongated for the neighbor-list library's grid, and a coarser grid "
            f"({cutoff:.3g} Å) would visit {n_images:.3g} periodic images"
        )
    k = int(np.argmin(np.where(pbc, heights, np.inf)))
    raise ValueError(
        f"the periodic cell is too thin for the cutoff: its height across lattice vector {k} "
        f"is {heights[k]:.3g} Å, so a {cutoff} Å cutoff reaches {images[k]:.3g} cells that "
        f"way and the search would visit {n_images:.3g} periodic images (at most "
        f"{MAX_PERIODIC_IMAGES:.3g}): a cell far smaller than the cutoff, or two lattice "
        f"vectors nearly parallel? cell = {cell.tolist()} Å"
    )


def _compact_open_directions(
    positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, float]:
    """Positions with wide gaps along the open directions closed up (``_close_gaps``) when the
    atoms spread far or lie far from the origin there, and the cutoff to search with."""
    along = positions @ box[~pbc].T  # [n_atoms, n_open] coordinates along the open axes
    if positions.shape[0] and (
        np.any(np.ptp(along, axis=0) > _OPEN_SPAN * cutoff) or np.any(np.abs(along) > 1e6)
    ):
        return _close_gaps(positions, box[~pbc], cutoff), cutoff * (1.0 + 1e-6)  # rounding
    return positions, cutoff


def _search_widths(
    search_positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, heights: np.ndarray
) -> Callable[[float], np.ndarray]:
    """The widths across the faces of the box vesin searches (Å), as a function of the search
    cutoff."""
    n_atoms = search_positions.shape[0]
    spans = np.ptp(search_positions @ box[~pbc].T, axis=0) if n_atoms else np.zeros((~pbc).sum())
    mixed = 0 < pbc.sum() < 3

    def widths_for(search_cutoff: float) -> np.ndarray:
        if not mixed:
            return np.where(pbc, heights, _open_widths(search_positions, pbc))
        # vesin 0.6.2 is slow along the open directions of a partly periodic box (its time
        # grows as atoms²: 0.6 s for 10⁴ atoms in a 1000 Å slab, 2.4 s for twice that). They
        # are made periodic with a period longer than the atoms' span + 2 r_c: no image across
        # them comes within the cutoff, so their shifts stay 0 and the pairs are the same.
        widths = heights.copy()
        widths[~pbc] = spans + 2.0 * search_cutoff + 1.0
        return widths

    return widths_for


def _coarsen_grid(
    widths_for: Callable[[float], np.ndarray], search_cutoff: float, cutoff: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """The smallest search cutoff (from ``search_cutoff`` up, by 5 % steps) for which vesin's
    grid has at least one cell along every direction; with the box widths and the grid."""
    widths = widths_for(search_cutoff)
    grid = _vesin_grid(widths, search_cutoff)
    for _ in range(400):
        if np.all(grid >= 1):
            return search_cutoff, widths, grid
        # vesin would give this (elongated or flat) box zero grid cells along some direction
        # and crash: search with a larger cutoff (coarser grid), then keep |r_e| < r_c
        search_cutoff *= 1.05
        widths = widths_for(search_cutoff)
        grid = _vesin_grid(widths, search_cutoff)
    if np.all(grid >= 1):
        return search_cutoff, widths, grid
    raise ValueError(
        f"the search box (widths {widths.tolist()} Å across its faces) is too elongated "
        f"for the neighbor-list library's grid of {cutoff} Å cells (it would crash); "
        "split the structure or make the long direction periodic"
    )


def _check_far_atoms(
    search_positions: np.ndarray, box: np.ndarray, pbc: np.ndarray, grid: np.ndarray
) -> None:
    """Refuse atoms so many cells outside a periodic cell that vesin's int32 cell indices
    would overflow."""
    if not (search_positions.shape[0] and pbc.any()):
        return
    fractional = np.linalg.solve(box.T, search_positions.T).T
    far = np.abs(fractional[:, pbc]) * grid[pbc]
    if not np.all(far < _INT32_SAFE):
        atom = int(np.argmax(far.max(axis=1)))
        raise ValueError(
            f"atom {atom} lies {np.abs(fractional[atom]).max():.3g} cells away from the "
            "periodic cell; wrap the positions into the cell (e.g. ase.Atoms.wrap())"
        )


def _expected_edges(
    n_atoms: int,
    volume: float,
    widths: np.ndarray,
    pbc: np.ndarray,
    search_cutoff: float,
    max_edges: int,
) -> float:
    """The number of edges vesin will allocate for (atoms × density × cutoff sphere),
    refused above ``MAX_NEIGHBORS_PER_ATOM`` per atom or ``max_edges`` in all."""
    region = volume * float(np.prod(np.maximum(widths[~pbc], 2.0 * search_cutoff)))
    per_atom = n_atoms / region * (4.0 / 3.0) * np.pi * search_cutoff**3
    if not pbc.any():
        per_atom = min(per_atom, n_atoms - 1.0)
    if n_atoms and (per_atom > MAX_NEIGHBORS_PER_ATOM or n_atoms * per_atom > max_edges):
        raise ValueError(
            f"{n_atoms} atoms in {region:.3g} Å³ ({n_atoms / region:.3g} atoms/Å³ counting "
            f"periodic images) give about {per_atom:.3g} neighbors per atom within "
            f"{search_cutoff:.4g} Å "
            f"and {n_atoms * per_atom:.3g} edges; the limits are {MAX_NEIGHBORS_PER_ATOM} per "
            f"atom (no physical density reaches it) and max_edges = {max_edges:.3g}"
        )
    return n_atoms * per_atom


def _interruptible(function: Callable[[], Any]) -> Any:
    """``function()`` run in a worker thread while this one waits in short steps, so that
    Ctrl-C (``KeyboardInterrupt``) stops the caller at once even while native code runs (a
    native call holds no Python frame that could receive it). The abandoned worker finishes
    its (bounded) search in the background and its result is dropped."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    worker = threading.Thread(target=run, name="allegro_ref neighbor list", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


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
        centers: ``[n_edges]`` integer index of each edge's center atom.
        neighbors: ``[n_edges]`` integer index of each edge's neighbor atom.
        atom_types: ``[n_atoms]`` integer types (indices into the model's type names).
        cutoff_matrix: ``[n_types, n_types]`` float64 NumPy array, Å (row: center type).

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
