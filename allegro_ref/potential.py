"""``Potential``: atoms in, energy, forces, stress, per-atom energies and virials out.

One evaluation (``Potential.compute``):

1. check the input on the host (finite positions, known species, cell and pbc, no two atoms
   closer than ``min_distance`` including periodic images);
2. neighbor list on the host (``allegro_ref.neighbors``), pruned to the per-edge-type cutoffs
   (exact: the model's envelope is zero beyond them; pruning only saves work); edge vectors
   r_e = x_j - x_i + S_e @ cell in float64, moved to the model's backend;
3. the model on its own backend (NumPy, CuPy, ...): per-atom energies E_i, then one backward
   pass with ∂E/∂E_i = 1 gives g_e = ∂E/∂r_e for every edge. The energy of atom i depends only
   on the edges centered on i (Allegro is strictly local), so the center atoms are processed in
   chunks, each with its edges: forward and backward per chunk, so that the model's working
   memory is bounded by ``chunk_bytes`` whatever the size of the system (the neighbor list
   and the per-edge gradients, ~150 bytes per edge, are the only arrays that grow with it).
   On NumPy, the chunks run in this process or on ``num_processes`` worker processes
   (``allegro_ref._execution``: BLAS thread limits, worker pool, glibc malloc tuning);
4. from g_e, with segment sums over edges (no loops; ``allegro_ref._derivatives`` derives them):

   - forces, F = -∂E/∂x: F_i = Σ_{e: center i} g_e - Σ_{e: neighbor i} g_e;
   - per-atom virials W_i = -Σ_{e: center i} r_e ⊗ g_e (each edge's term is assigned to its
     center atom, which owns the edge's energy; the sign of nequip and LAMMPS, W = -∂E/∂ε);
   - stress (ASE sign, eV/Å³), σ = sym(-Σ_i W_i / V) = sym((1/V) Σ_e r_e ⊗ g_e). Only for cells
     periodic in all three directions; ``None`` otherwise.

Weights are stored in one versioned `.npz` file (`Potential.save` / `Potential.load`): an entry
`__metadata__` holding a JSON string (format name and version, the model family, allegro_ref's
version, the model dtype, the config as a dict, every parameter's name and shape) and one array
per parameter, named as in the config's `parameter_shapes()`. `save` writes it atomically (a
failed save leaves the previous file intact); `load` checks everything before it allocates and
raises `WeightFileError` (a `ValueError`) naming the file and the entry for anything wrong
(`allegro_ref._weights_file` describes the format and the checks).
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import warnings
from typing import Any

import numpy as np

from ._derivatives import (
    forces_from_edge_gradients,
    stress_from_virial,
    virials_from_edge_gradients,
)
from ._execution import Executor
from ._validation import (
    atom_types_from_species,
    check_cell_and_pbc,
    check_min_distance,
    check_positions,
    to_host,
)
from ._weights_file import (
    FAMILIES,
    FILE_FORMAT,
    FILE_FORMAT_VERSION,
    WeightFileError,
    read_model,
    write_model,
)
from .backend import device, is_numpy, is_numpy_namespace, namespace
from .model import Allegro2022Config, Allegro2022Model, AllegroConfig, AllegroModel
from .neighbors import edge_vectors, neighbor_list, within_pair_cutoffs

__all__ = ["Potential", "WeightFileError", "FILE_FORMAT", "FILE_FORMAT_VERSION"]

Model = AllegroModel | Allegro2022Model
Config = AllegroConfig | Allegro2022Config


# Working memory of the model's forward and backward per edge, in numbers (of the model's
# dtype), as a function of the config: 12·U·D + 16·W with D = (l_max + 1)² and W the widest
# scalar feature; an upper bound of what tracemalloc measures for the official default
# configurations (e.g. 5 800 numbers per edge for l_max 2, U 32, S 64).
_EDGE_NUMBERS_TENSOR, _EDGE_NUMBERS_SCALAR = 12, 16
DEFAULT_CHUNK_BYTES = 64 * 2**20


class Potential:
    """An Allegro model ready to evaluate structures.

    Examples:
        A shipped model on a small copper crystal, and a potential with random weights from a
        config of your own:

        ```python
        import numpy as np
        import allegro_ref

        potential = allegro_ref.Potential.pretrained("cu-emt")
        cell = 3.61 * np.eye(3)  # one cubic fcc cell, Å
        positions = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) @ cell
        out = potential.compute(positions, ["Cu"] * 4, cell, pbc=True)
        print(f"{out['energy'] / 4:.3f} eV/atom", out["forces"].shape, out["stress"].shape)

        config = allegro_ref.AllegroConfig(type_names=["H", "O"], r_max=4.0, num_layers=1)
        random = allegro_ref.Potential.from_config(config, seed=0)
        print(random)
        ```

    Args:
        model: the `AllegroModel` or `Allegro2022Model` (its parameters' backend is where the
            network runs).
        min_distance: smallest allowed distance between two atoms (periodic images included),
            Å, a positive finite number; closer atoms raise `ValueError` (the model's edge
            geometry needs $|r_e| > 0$, and such structures are almost always input mistakes).
        chunk_bytes: working memory of the model per chunk of center atoms (bytes, default
            64 MiB; an estimate from the config, see ``chunk_edges``). The results do not depend
            on it beyond rounding. Chunks of a few thousand edges are also the fastest on CPUs
            (their arrays stay in cache).
        num_threads: threads of the BLAS library while ``compute`` runs on NumPy in this
            process (set with threadpoolctl and restored afterwards); ``None`` (default) leaves
            the BLAS as the process has it (OpenBLAS: one per core, or ``OPENBLAS_NUM_THREADS``).
            Chunk-sized matrix products gain little from BLAS threads; use ``num_processes``.
        num_processes: worker processes evaluating chunks at once on NumPy (default 1: the
            chunks run in this process). They start on the first ``compute`` (``spawn``: a
            second or two; a script that uses them needs the ``if __name__ == "__main__":``
            guard of Python's multiprocessing), hold a copy of the model taken then, run one
            BLAS thread each, and stop with `close`, at the end of a ``with`` block, or
            when the potential is garbage collected.
        keep_host_memory: tune glibc's malloc of this process to keep freed memory (faster
            chunked evaluations on NumPy; process-wide and permanent, see
            ``allegro_ref._execution``). ``None`` (default): only if the environment variable
            ``ALLEGRO_REF_KEEP_HOST_MEMORY`` is ``1``. Worker processes always do.

    Raises:
        ValueError: naming the argument: ``min_distance`` not a positive finite number,
            ``chunk_bytes``, ``num_threads`` or ``num_processes`` not a positive integer,
            ``keep_host_memory`` not a bool or None.
    """

    def __init__(
        self,
        model: Model,
        min_distance: float = 0.1,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        num_threads: int | None = None,
        num_processes: int = 1,
        keep_host_memory: bool | None = None,
    ):
        self.model = model
        self.min_distance = _positive_number(min_distance, "min_distance")
        self.chunk_bytes = _positive_integer(chunk_bytes, "chunk_bytes")
        if num_threads is not None:
            num_threads = _positive_integer(num_threads, "num_threads", "or None")
        num_processes = _positive_integer(num_processes, "num_processes")
        if keep_host_memory is not None and not isinstance(keep_host_memory, bool):
            raise ValueError(
                f"keep_host_memory must be True, False or None, got {keep_host_memory!r}"
            )
        self.keep_host_memory = keep_host_memory
        self._executor = Executor(
            num_threads=num_threads,
            num_processes=num_processes,
            keep_host_memory=keep_host_memory,
        )
        self._cutoffs = model.config.cutoff_matrix()
        self._per_type_cutoffs = bool(np.any(self._cutoffs < model.config.r_max))

    @property
    def num_threads(self) -> int | None:
        """BLAS threads while chunks run in this process (``None``: as the process has it)."""
        return self._executor.num_threads

    @num_threads.setter
    def num_threads(self, value: int | None) -> None:
        if value is not None:
            value = _positive_integer(value, "num_threads", "or None")
        self._executor.num_threads = value

    @property
    def num_processes(self) -> int:
        """Worker processes evaluating chunks (1: in this process); setting it stops the
        current workers."""
        return self._executor.num_processes

    @num_processes.setter
    def num_processes(self, value: int) -> None:
        value = _positive_integer(value, "num_processes")
        self._executor.close()
        self._executor.num_processes = value

    @property
    def config(self) -> Config:
        """The model's hyperparameters."""
        return self.model.config

    @property
    def dtype(self) -> str:
        """The model's dtype, `"float64"` or `"float32"`."""
        return self.model.dtype

    @classmethod
    def from_config(cls, config: Config, seed: int = 0, dtype: str = "float64") -> Potential:
        """A potential with random weights (the model class's `init`: `AllegroModel` for an
        `AllegroConfig`, `Allegro2022Model` for an `Allegro2022Config`), on NumPy."""
        for config_class, model_class in FAMILIES.values():
            if isinstance(config, config_class):
                return cls(model_class.init(config, seed=seed, dtype=dtype))
        raise TypeError(
            f"config must be an AllegroConfig or an Allegro2022Config, got {type(config).__name__}"
        )

    @staticmethod
    def available_pretrained() -> dict[str, str]:
        """{name: one-line description} of the models shipped with allegro_ref (the names
        `pretrained` takes; `allegro_ref.pretrained.available`)."""
        from . import pretrained

        return pretrained.available()

    @staticmethod
    def pretrained(name: str | None = None, min_distance: float = 0.1) -> Potential:
        """A model shipped with allegro_ref (`"cu-emt"`, `"ethanol-gfn2"`; see
        `available_pretrained` and `allegro_ref.pretrained`).

        Calling it without a name returns the {name: description} of the shipped models, as
        before, with a `DeprecationWarning`: use `available_pretrained()`; a later release will
        require the name.

        Raises:
            ValueError: ``name`` is not a shipped model (the message lists them).
        """
        from . import pretrained

        if name is None:
            warnings.warn(
                "Potential.pretrained() without a name is deprecated: use "
                "Potential.available_pretrained() to list the shipped models",
                DeprecationWarning,
                stacklevel=2,
            )
            return pretrained.available()
        return pretrained.load(name, min_distance=min_distance)

    @classmethod
    def from_nequip(cls, path: str | os.PathLike, min_distance: float = 0.1) -> Potential:
        """A potential from an official nequip-allegro checkpoint (``.ckpt``) or package
        (`.nequip.zip`); see `allegro_ref.io.load_nequip`."""
        from .io import load_nequip

        return cls(load_nequip(path), min_distance=min_distance)

    def to(self, backend: str) -> Potential:
        """The same potential with the network on ``"numpy"`` (host) or ``"cupy"`` (GPU)."""
        return Potential(
            self.model.to(backend),
            min_distance=self.min_distance,
            chunk_bytes=self.chunk_bytes,
            num_threads=self.num_threads,
            num_processes=self.num_processes,
            keep_host_memory=self.keep_host_memory,
        )

    @property
    def chunk_edges(self) -> int:
        """Edges per chunk: ``chunk_bytes`` over the estimated working memory per edge,
        (12·U·D + 16·W) numbers of the model's dtype with U tensor channels, D = (l_max + 1)²
        components (or the config's ``tensor_track_dim`` where it has one: the 2022 family's
        one slot per path) and W the widest scalar feature (S, the MLP widths, U·(l_max + 1))."""
        c = self.config
        tensor_dim = getattr(c, "tensor_track_dim", c.sh_irreps.dim)
        widest = max(
            c.num_scalar_features * (c.num_layers + 1),
            c.allegro_mlp_hidden_layers_width,
            c.readout_mlp_hidden_layers_width,
            c.scalar_embed_mlp_hidden_layers_width,
            c.num_tensor_features * c.num_sh_irreps,
        )
        numbers = (
            _EDGE_NUMBERS_TENSOR * c.num_tensor_features * tensor_dim
            + _EDGE_NUMBERS_SCALAR * widest
        )
        itemsize = 4 if self.dtype == "float32" else 8
        return max(1, self.chunk_bytes // (numbers * itemsize))

    # ---------------------------------------------------------------------------------------
    # Weight files
    # ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to ``path`` (one `.npz` file; the name is used as given).

        The file is written beside ``path`` under a temporary name, synced to disk and only
        then renamed onto ``path``: if the save fails (an error, a full disk), a file that was
        at ``path`` keeps its previous content.
        """
        write_model(path, self.model)

    @classmethod
    def load(cls, path: str | os.PathLike, min_distance: float = 0.1) -> Potential:
        """Read a file written by `save` (either model family; parameters on NumPy, bit for
        bit).

        Args:
            path: the `.npz` file.
            min_distance: as in `Potential`.

        Raises:
            FileNotFoundError: there is no file at ``path`` (other `OSError`s, such as a
                permission error, as `open` raises them).
            WeightFileError: a `ValueError` naming the file and what is wrong, for anything
                that is not a valid weights file of a version this allegro_ref reads: not a zip
                archive or a damaged one, metadata that is not a JSON object, another format, a
                later format version, an unknown family or dtype, a config field of the wrong
                type or out of range (a list where a mapping belongs, `"false"` for a bool, a
                too large `l_max`), parameters missing, unknown, of another shape or dtype than
                the config says, or not finite. Nothing of the size the file declares is
                allocated before it has been checked against the file.
        """
        return cls(read_model(path), min_distance=min_distance)

    # ---------------------------------------------------------------------------------------
    # Evaluation
    # ---------------------------------------------------------------------------------------
    def compute(
        self, positions: Any, species: Any, cell: Any = None, pbc: bool | Any = False
    ) -> dict[str, Any]:
        """Energy and its derivatives for one structure.

        Args:
            positions: ``[N, 3]`` Cartesian positions, Å (NumPy, CuPy, array-api arrays, lists).
            species: ``[N]`` type names (e.g. ``"Cu"``) or atomic numbers (mapped to chemical
                symbols, which must be among ``config.type_names``).
            cell: ``[3, 3]`` lattice vectors as rows, Å, or ``None`` (no cell).
            pbc: periodicity, one bool or three.

        Returns:
            A dict with ``"energy"`` (float, eV), ``"energies"`` ``[N]`` eV (per-atom, they sum
            to the energy), ``"forces"`` ``[N, 3]`` eV/Å, ``"stress"`` ``[3, 3]`` eV/Å³ (or
            ``None`` unless ``pbc`` is True in all three directions), ``"virials"``
            ``[N, 3, 3]`` eV (per-atom virials, summing to -V·stress); float64 arrays in the
            namespace and on the device of ``positions`` (NumPy for lists).

        Examples:
            A water molecule (no cell) with a small random model:

            ```python
            import numpy as np
            import allegro_ref

            potential = allegro_ref.Potential.from_config(allegro_ref.presets.tiny(["H", "O"]))
            positions = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])  # Å
            out = potential.compute(positions, ["O", "H", "H"])
            print(f"{out['energy']:.4f} eV", out["forces"].shape, out["stress"])  # stress None
            assert np.allclose(out["forces"].sum(axis=0), 0.0)  # no net force
            assert np.isclose(out["energies"].sum(), out["energy"])
            ```

        Raises:
            ValueError: naming the problem: positions not ``[N, 3]`` or not finite, a species
                not in ``config.type_names`` (or an atomic number that is not an element), one
                species per atom expected, cell not ``[3, 3]`` or not finite, pbc not one or
                three bools, degenerate lattice vectors along periodic directions, two atoms
                (or an atom and an image) closer than ``min_distance``.
        """
        host_positions = check_positions(positions)
        host_cell, host_pbc = check_cell_and_pbc(cell, pbc)
        n_atoms = host_positions.shape[0]
        atom_types = atom_types_from_species(species, self.config.type_names, n_atoms)

        centers, neighbors, shifts = neighbor_list(
            host_positions, host_cell, host_pbc, self.config.r_max
        )
        vectors = edge_vectors(host_positions, host_cell, centers, neighbors, shifts)
        check_min_distance(vectors, centers, neighbors, self.min_distance, shifts)
        if self._per_type_cutoffs:
            kept = within_pair_cutoffs(vectors, centers, neighbors, atom_types, self._cutoffs)
            centers, neighbors, vectors = centers[kept], neighbors[kept], vectors[kept]

        # The network runs where the parameters live; chunks of center atoms (edges are sorted
        # by center) are evaluated independently and their results concatenated.
        xp, where = self.model.namespace, self.model.device
        chunks = _chunks_of_centers(centers, n_atoms, self.chunk_edges)
        inputs = (
            _chunk_inputs(chunk, vectors, centers, neighbors, atom_types, self.config.num_types)
            for chunk in chunks
        )
        if is_numpy_namespace(xp):
            parts = self._executor.map(_evaluate_chunk, self.model, inputs, len(chunks))
        else:
            parts = [
                _evaluate_chunk(self.model, *(xp.asarray(a, device=where) for a in arrays), n)
                for *arrays, n in inputs
            ]
        atomic_energies, grads, virials = (
            xp.concat(list(p), axis=0) for p in zip(*parts, strict=True)
        )

        centers, neighbors = (xp.asarray(a, device=where) for a in (centers, neighbors))
        forces = forces_from_edge_gradients(grads, centers, neighbors, n_atoms)
        stress = None
        if bool(np.all(host_pbc)):
            volume = abs(float(np.linalg.det(host_cell)))
            stress = stress_from_virial(xp.sum(virials, axis=0), volume)

        results = {
            "energy": float(xp.sum(atomic_energies)),
            "energies": atomic_energies,
            "forces": forces,
            "stress": stress,
            "virials": virials,
        }
        return _to_namespace_of(results, positions)

    def close(self) -> None:
        """Stop the worker processes (if any were started); a later ``compute`` starts new
        ones."""
        self._executor.close()

    def __enter__(self) -> Potential:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """Pickles and copies leave the worker processes behind (they start again if needed)."""
        return {**self.__dict__, "_executor": copy.copy(self._executor)}

    def compute_atoms(self, atoms: Any) -> dict[str, Any]:
        """`compute` for an `ase.Atoms` (species = its chemical symbols)."""
        return self.compute(
            atoms.get_positions(), atoms.get_chemical_symbols(), atoms.cell.array, atoms.pbc
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Potential(type_names={list(c.type_names)}, r_max={c.r_max}, l_max={c.l_max}, "
            f"num_layers={c.num_layers}, dtype={self.dtype!r}, "
            f"backend={self.model.namespace.__name__!r})"
        )


def _positive_number(value: Any, name: str) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless a positive finite number."""
    number = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float64
            pass
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _positive_integer(value: Any, name: str, alternative: str = "") -> int:
    """``value`` as an int; ``ValueError`` naming ``name`` unless a positive whole number (an
    integral float such as 2.0 is accepted, a bool or a string is not)."""
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()
    )
    if isinstance(value, bool | np.bool_) or not whole or value < 1:
        also = f" {alternative}" if alternative else ""
        raise ValueError(f"{name} must be a positive integer{also}, got {value!r}")
    return int(value)


def _chunks_of_centers(
    centers: np.ndarray, n_atoms: int, max_edges: int
) -> list[tuple[int, int, int, int]]:
    """Split atoms ``0 .. n_atoms - 1`` into consecutive ranges with about equal numbers of
    edges (at most ``max_edges`` plus the edges of one atom each), from the sorted centers of
    the edges: a range ends at the last atom whose edges start at or before its share of the
    edges.

    Returns ``(first_atom, last_atom + 1, first_edge, last_edge + 1)`` per chunk; every atom is
    in one chunk, with or without edges."""
    if n_atoms == 0:
        return [(0, 0, 0, 0)]
    n_edges = centers.shape[0]
    n_chunks = max(math.ceil(n_edges / max_edges), 1)
    # first edge of every atom, and of the (virtual) atom n_atoms
    starts = np.searchsorted(centers, np.arange(n_atoms + 1))
    cuts = np.searchsorted(starts, np.arange(1, n_chunks) * (n_edges / n_chunks), "right") - 1
    bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, n_atoms), [n_atoms]]))
    return [
        (int(a), int(b), int(starts[a]), int(starts[b]))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def _chunk_inputs(chunk, vectors, centers, neighbors, atom_types, num_types: int) -> tuple:
    """The center atoms ``first .. last - 1`` of ``chunk`` with their edges ``start .. stop - 1``
    as a small structure (host arrays): ``(edge vectors, local centers, local neighbors, local
    types, n_centers)`` for `_evaluate_chunk`.

    The chunk's centers are atoms 0 .. n_c - 1, followed by one atom of each species, n_c + t,
    standing for every neighbor of species t: an edge's features depend on its neighbor only
    through the neighbor's species (and the edge vector). These extra atoms have no edge; their
    energies (the species shifts) are dropped."""
    first, last, start, stop = chunk
    n_centers = last - first
    species = np.arange(num_types, dtype=atom_types.dtype)
    return (
        vectors[start:stop],
        centers[start:stop] - first,
        atom_types[neighbors[start:stop]] + n_centers,
        np.concatenate([atom_types[first:last], species]),
        n_centers,
    )


def _evaluate_chunk(model: AllegroModel, vectors, centers, neighbors, types, n_centers: int):
    """Forward and backward of one chunk (arrays of the model's backend): ``(energies [n_c],
    edge gradients g_e [n_e, 3], virials [n_c, 3, 3])``."""
    xp = namespace(vectors)
    energies, cache = model.forward(vectors, centers, neighbors, types)
    ones = xp.ones((types.shape[0],), dtype=xp.float64, device=device(vectors))
    grads = model.backward(cache, ones)
    virials = virials_from_edge_gradients(vectors, grads, centers, n_centers)
    return energies[:n_centers], grads, virials


def _to_namespace_of(results: dict[str, Any], positions: Any) -> dict[str, Any]:
    """Move the array results to the namespace and device of ``positions`` (NumPy for lists)."""
    try:
        xp = namespace(positions)
    except TypeError:  # a list or another non-array
        xp = None
    out = {}
    for key, value in results.items():
        if value is None or isinstance(value, float):
            out[key] = value
        elif xp is None or is_numpy(positions):
            out[key] = to_host(value)
        elif namespace(value) is xp and device(value) == device(positions):
            out[key] = value
        else:
            out[key] = xp.asarray(to_host(value), device=device(positions))
    return out
