"""Hypothesis strategies shared by the test suite.

Rotations are drawn as Haar-random orthogonal matrices from a hypothesis-drawn seed (so
failures shrink to a seed and replay exactly); improper ones are ``-R`` (det = -1).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def haar_rotation(rng: np.random.Generator) -> np.ndarray:
    """A Haar-random proper rotation [3, 3] (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@st.composite
def orthogonal_matrices(draw, proper: bool | None = None) -> np.ndarray:
    """A random element of O(3): a proper rotation, or (``proper=False``) a rotation times -1.
    ``proper=None`` draws either."""
    rng = np.random.default_rng(draw(seeds))
    rotation = haar_rotation(rng)
    improper = draw(st.booleans()) if proper is None else not proper
    return -rotation if improper else rotation


def vectors(n_min: int = 1, n_max: int = 20, scale: float = 10.0):
    """Arrays [n, 3] of float64 vectors with norms between ~1e-3 and ``scale`` (no zero vector)."""
    finite = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    shapes = st.tuples(st.integers(n_min, n_max), st.just(3))
    return hnp.arrays(np.float64, shapes, elements=finite).filter(
        lambda v: bool(np.all(np.linalg.norm(v, axis=-1) > 1e-3))
    )
