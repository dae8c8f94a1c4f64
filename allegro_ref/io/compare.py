"""Layer-by-layer comparison of allegro_ref with another Allegro implementation.

Two codes that compute the same function, given the same weights and the same edges, agree at
every stage to rounding. Comparing the features stage by stage, in forward order, locates a
disagreement: the first stage that differs holds the bug (or the differing convention).

- `allegro_ref_features`: allegro_ref's features of one structure on given edges — the
  model's named intermediates (``AllegroModel.intermediates`` of its forward cache), plus
  forces and stress from the backward pass;
- `compare_features`: two such dicts -> a `Comparison`, one
  `StageDifference` (max absolute and relative difference) per stage both have;
- `official_features` and `compare_with_official`: the same for the official
  nequip-allegro model (needs torch and nequip; imported only there), read from its output dict
  and from forward hooks on its modules, with allegro_ref run on the official neighbor list.

The relative difference of a stage is max|ours − theirs| / max|theirs| over all its entries
(normwise, so entries near zero do not blow it up). Stage names (allegro_ref's, in forward
order): edge_lengths, radial_basis, edge_sh, edge_embedding, initial_tensors,
layer{k}.tensors, layer{k}.scalars, edge_features, edge_energies, atomic_energies, forces,
stress.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._derivatives import (
    forces_from_edge_gradients,
    stress_from_virial,
    virials_from_edge_gradients,
)
from ..backend import Array, to_numpy
from ..model import AllegroModel

__all__ = [
    "StageDifference",
    "Comparison",
    "allegro_ref_features",
    "compare_features",
    "official_features",
    "compare_with_official",
]


class StageDifference(NamedTuple):
    """How one stage's features differ: ``max_abs`` = max|ours − theirs|, ``max_ref`` =
    max|theirs| (both in the stage's units), over entries of shape ``shape``."""

    stage: str
    shape: tuple[int, ...]
    max_abs: float
    max_ref: float

    @property
    def max_rel(self) -> float:
        """max|ours − theirs| / max|theirs| (0 if both are zero, inf if only theirs is)."""
        if self.max_ref > 0:
            return self.max_abs / self.max_ref
        return 0.0 if self.max_abs == 0 else math.inf


class Comparison(Sequence):
    """The `StageDifference` of every compared stage, in forward order; ``str()`` gives
    a table."""

    def __init__(self, rows: Sequence[StageDifference]):
        self.rows = tuple(rows)

    def __getitem__(self, index):
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[StageDifference]:
        return iter(self.rows)

    def first_divergence(self, rtol: float) -> StageDifference | None:
        """The first stage whose relative difference exceeds ``rtol`` (None if none does)."""
        return next((row for row in self.rows if not row.max_rel <= rtol), None)

    def __str__(self) -> str:
        lines = [f"{'stage':<20} {'shape':<16} {'max |Δ|':>10} {'max |ref|':>10} {'rel':>10}"]
        for row in self.rows:
            lines.append(
                f"{row.stage:<20} {str(list(row.shape)):<16} {row.max_abs:>10.3e} "
                f"{row.max_ref:>10.3e} {row.max_rel:>10.3e}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Comparison(\n{self}\n)"


def compare_features(ours: Mapping[str, Array], theirs: Mapping[str, Array]) -> Comparison:
    """Stage-by-stage differences of the stages present in both dicts, in ``ours``' order.

    Args:
        ours: stage name -> array (any backend; compared in float64 on the host).
        theirs: stage name -> array, with rows corresponding to ``ours``' (same edges in the
            same order, same atoms).

    Raises:
        ValueError: a stage whose shapes differ (naming the stage and both shapes), or no
            common stage.
    """
    rows = []
    for stage, value in ours.items():
        if stage not in theirs:
            continue
        a = np.asarray(to_numpy(value), dtype=np.float64)
        b = np.asarray(to_numpy(theirs[stage]), dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"stage {stage!r}: ours has shape {a.shape}, theirs {b.shape}")
        if a.size == 0:
            rows.append(StageDifference(stage, a.shape, 0.0, 0.0))
            continue
        rows.append(
            StageDifference(stage, a.shape, float(np.max(np.abs(a - b))), float(np.max(np.abs(b))))
        )
    if not rows:
        raise ValueError(f"no common stage: ours has {sorted(ours)}, theirs has {sorted(theirs)}")
    return Comparison(rows)


def allegro_ref_features(
    model: AllegroModel,
    edge_vectors: Array,
    centers: Array,
    neighbors: Array,
    atom_types: Array,
    cell: Array | None = None,
) -> dict[str, np.ndarray]:
    """allegro_ref's features of one structure on given edges, as host float64 arrays.

    Args:
        model: the model (any backend; inputs are moved to its namespace and device).
        edge_vectors: ``[E, 3]`` Å, r_e = x_j − x_i + shift·cell for edge e = (i → j).
        centers: ``[E]`` atom index i (center) of each edge.
        neighbors: ``[E]`` atom index j (neighbor) of each edge.
        atom_types: ``[N]`` type indices.
        cell: ``[3, 3]`` lattice vectors (rows), Å, for the stress of a cell periodic in all
            three directions; None for no stress.

    Returns:
        ``AllegroModel.intermediates`` of the forward (names in the module docstring),
            ``"forces"`` ``[N, 3]`` eV/Å and, with a cell, ``"stress"`` ``[3, 3]`` eV/Å³: from
            g_e = ∂E/∂r_e, F_i = Σ_{e: center i} g_e − Σ_{e: neighbor i} g_e and
            σ = sym((1/V) Σ_e r_e ⊗ g_e) (ASE sign; see ``allegro_ref._derivatives``).
    """
    xp, where = model.namespace, model.device
    host = [np.asarray(to_numpy(a)) for a in (edge_vectors, centers, neighbors, atom_types)]
    vectors, c, n, types = (xp.asarray(a, device=where) for a in host)
    _, cache = model.forward(xp.astype(vectors, xp.float64), c, n, types)
    n_atoms = host[3].shape[0]
    grads = model.backward(cache, xp.ones((n_atoms,), dtype=xp.float64, device=where))
    stages = model.intermediates(cache)
    order = _forward_order(model.config.num_layers)
    order += [name for name in stages if name not in order]
    out = {name: np.asarray(to_numpy(stages[name]), dtype=np.float64) for name in order}
    forces = forces_from_edge_gradients(grads, c, n, n_atoms)
    out["forces"] = np.asarray(to_numpy(forces), dtype=np.float64)
    if cell is not None:
        volume = abs(float(np.linalg.det(np.asarray(to_numpy(cell)))))
        r = xp.astype(vectors, xp.float64)
        virial = xp.sum(virials_from_edge_gradients(r, grads, c, n_atoms), axis=0)
        out["stress"] = np.asarray(to_numpy(stress_from_virial(virial, volume)), dtype=np.float64)
    return out


def _forward_order(num_layers: int) -> list[str]:
    """allegro_ref's stage names in the order the forward pass computes them."""
    layers = [f"layer{k}.{kind}" for k in range(num_layers) for kind in ("tensors", "scalars")]
    return [
        "edge_lengths",
        "radial_basis",
        "edge_sh",
        "edge_embedding",
        "initial_tensors",
        *layers,
        "edge_features",
        "edge_energies",
        "atomic_energies",
    ]


# Official module (suffix of its name in the GraphModel) -> how to read a stage from its output.
def _official_hooks(num_layers: int, num_scalar_features: int) -> dict[str, tuple[str, Any]]:
    hooks = {
        "radial_basis": ("radial_chemical_embed.bessel_encode", lambda out: out["edge_embedding"]),
        "initial_tensors": ("tensor_embed", lambda out: out["edge_features"]),
    }
    for k in range(num_layers):
        hooks[f"layer{k}.tensors"] = (f"allegro.tps.{k}", lambda out: out)
        hooks[f"layer{k}.scalars"] = (
            f"allegro.latents.{k}",
            lambda out: out[:, :num_scalar_features],
        )
    return hooks


def official_features(official_model: Any, atoms: Any, model: AllegroModel) -> dict[str, Any]:
    """The official model's features of ``atoms`` under allegro_ref's stage names.

    Runs the official ``GraphModel`` (nequip 0.19 / nequip-allegro 0.8, eager) on ``atoms``
    (``ase.Atoms``; chemical symbols = type names) with the official neighbor list for
    ``model``'s cutoffs, capturing the intermediate stages with forward hooks. Needs torch and
    nequip (``pip install 'allegro_ref[nequip]'``).

    Returns:
        stage name -> float64 NumPy array, plus the official edges as ``"edge_vectors"`` ``[E,
            3]``, ``"centers"``, ``"neighbors"`` ``[E]`` and ``"atom_types"`` ``[N]``, for
            `allegro_ref_features`.
    """
    try:
        import torch
        from nequip.data import AtomicDataDict, from_ase
        from nequip.data.transforms import (
            ChemicalSpeciesToAtomTypeMapper,
            NeighborListTransform,
        )
    except ImportError as error:
        raise ImportError(
            "comparing with the official model needs torch, nequip and nequip-allegro: "
            "pip install 'allegro_ref[nequip]'"
        ) from error
    cfg = model.config
    names = list(cfg.type_names)
    data = from_ase(atoms)
    for transform in (
        ChemicalSpeciesToAtomTypeMapper(
            model_type_names=names, chemical_species_to_atom_type_map={t: t for t in names}
        ),
        NeighborListTransform(
            r_max=cfg.r_max, per_edge_type_cutoff=cfg.per_edge_type_cutoff, type_names=names
        ),
    ):
        data = transform(data)
    modules = dict(official_model.named_modules())
    captured: dict[str, Any] = {}
    handles = []
    for stage, (suffix, read) in _official_hooks(cfg.num_layers, cfg.num_scalar_features).items():
        matches = [name for name in modules if name == suffix or name.endswith("." + suffix)]
        if len(matches) != 1:
            raise ValueError(f"the official model has {len(matches)} modules named *{suffix}")

        def hook(module, inputs, output, stage=stage, read=read):
            captured[stage] = read(output).detach().clone()

        handles.append(modules[matches[0]].register_forward_hook(hook))
    try:
        out = official_model(data)
    finally:
        for handle in handles:
            handle.remove()
    edge_index = out[AtomicDataDict.EDGE_INDEX_KEY]
    features = {
        "edge_vectors": out[AtomicDataDict.EDGE_VECTORS_KEY],
        "centers": edge_index[0],
        "neighbors": edge_index[1],
        "atom_types": out[AtomicDataDict.ATOM_TYPE_KEY].reshape(-1),
        "edge_lengths": out[AtomicDataDict.EDGE_LENGTH_KEY].reshape(-1),
        "edge_sh": out[AtomicDataDict.EDGE_ATTRS_KEY],
        "edge_embedding": out[AtomicDataDict.EDGE_EMBEDDING_KEY],
        "edge_features": out[AtomicDataDict.EDGE_FEATURES_KEY],
        "edge_energies": out[AtomicDataDict.EDGE_ENERGY_KEY].reshape(-1),
        "atomic_energies": out[AtomicDataDict.PER_ATOM_ENERGY_KEY].reshape(-1),
        "forces": out[AtomicDataDict.FORCE_KEY],
        **captured,
    }
    if bool(np.all(atoms.pbc)):
        features["stress"] = out[AtomicDataDict.STRESS_KEY].reshape(3, 3)
    with torch.no_grad():
        return {
            key: value.detach()
            .cpu()
            .numpy()
            .astype(np.int64 if key in ("centers", "neighbors", "atom_types") else np.float64)
            for key, value in features.items()
        }


def compare_with_official(model: AllegroModel, official_model: Any, atoms: Any) -> Comparison:
    """Stage-by-stage comparison of ``model`` with the official model on ``atoms``.

    Both run on the official neighbor list (so edges correspond row by row); see
    `official_features`. Needs torch and nequip, for example:

    ```python
    model = load_nequip("run/best.ckpt")
    official = nequip.model.saved_models.load_utils.load_saved_model("run/best.ckpt")
    print(compare_with_official(model, official, atoms))
    ```
    """
    theirs = official_features(official_model, atoms, model)
    cell = atoms.cell.array if bool(np.all(atoms.pbc)) else None
    ours = allegro_ref_features(
        model,
        theirs["edge_vectors"],
        theirs["centers"],
        theirs["neighbors"],
        theirs["atom_types"],
        cell,
    )
    return compare_features(ours, theirs)
