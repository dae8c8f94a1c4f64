"""Tests of allegro_ref.train, and the small labelled structures they share (the model is
``tests.models.tiny_config``)."""

from __future__ import annotations

import numpy as np

from allegro_ref.train.data import Structure
from tests.models import TYPE_NAMES


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
