"""Tests of allegro_ref.train, and the small labelled structures and model they share."""

from __future__ import annotations

import numpy as np

from allegro_ref.model import AllegroConfig
from allegro_ref.train.data import Structure

TYPE_NAMES = ("O", "Cu")


def tiny_config(**overrides) -> AllegroConfig:
    """A small two-species model (every parameter group present, l_max 2, two layers)."""
    base = dict(
        type_names=TYPE_NAMES,
        r_max=3.0,
        l_max=2,
        num_layers=2,
        num_scalar_features=6,
        num_tensor_features=3,
        scalar_embed_mlp_hidden_layers_width=6,
        allegro_mlp_hidden_layers_width=6,
        readout_mlp_hidden_layers_width=6,
        avg_num_neighbors={"O": 6.0, "Cu": 9.0},
        per_type_energy_scales={"O": 0.7, "Cu": 1.3},
        per_type_energy_shifts={"O": -1.5, "Cu": -3.0},
        bessel_trainable=True,
    )
    base.update(overrides)
    return AllegroConfig(**base)


def _spread(rng, n_atoms: int, box: np.ndarray, periodic: bool) -> np.ndarray:
    """Random positions in ``box`` with all pairs (and periodic images) >= 0.9 Å apart."""
    while True:
        positions = rng.uniform(0.0, 1.0, (n_atoms, 3)) @ box
        d = positions[:, None] - positions[None]
        if periodic:
            frac = d @ np.linalg.inv(box)
            d = (frac - np.round(frac)) @ box
        dist = np.linalg.norm(d, axis=-1)[np.triu_indices(n_atoms, 1)]
        if np.all(dist > 0.9):
            return positions


def random_structures(seed: int = 0) -> list[Structure]:
    """Labelled structures with random (not physical) labels: two periodic triclinic cells
    smaller than 2 r_max (atoms see their own images) and a molecule without a cell."""
    rng = np.random.default_rng(seed)
    out = []
    for n_atoms, periodic in ((3, True), (2, True), (4, False)):
        cell = np.eye(3) * 3.3 + rng.uniform(-0.3, 0.3, (3, 3)) if periodic else np.zeros((3, 3))
        box = cell if periodic else np.eye(3) * 2.6
        stress = rng.standard_normal((3, 3)) * 0.05
        out.append(
            Structure(
                positions=_spread(rng, n_atoms, box, periodic),
                species=tuple(rng.choice(TYPE_NAMES, n_atoms)),
                cell=cell,
                pbc=np.array([periodic] * 3),
                energy=float(rng.normal(-2.0 * n_atoms, 1.0)),
                forces=rng.standard_normal((n_atoms, 3)),
                stress=0.5 * (stress + stress.T) if periodic else np.full((3, 3), np.nan),
            )
        )
    return out
