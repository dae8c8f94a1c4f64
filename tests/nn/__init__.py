"""Tests of allegro_ref.nn, and what the block tests share: the finite-difference check and the
strategy of edge sets grouped by center atom."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from hypothesis import strategies as st

from tests.strategies import seeds


def assert_directional_derivatives(
    loss: Callable[[list[np.ndarray]], float],
    inputs: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    rng: np.random.Generator,
    step: float = 1e-6,
    rtol: float = 1e-7,
) -> None:
    """For each input separately, compare the central difference of ``loss`` along a random
    direction v, (L(a + h v) − L(a − h v)) / 2h, with the analytic ⟨grad, v⟩.

    The error is measured relative to ‖grad‖·‖v‖, the scale of the directional derivative
    (Cauchy-Schwarz), so a direction that happens to be nearly orthogonal to the gradient cannot
    make the check vacuous or spuriously fail; on top of it the difference quotient's own
    rounding error, 8·eps·|L| / step, is allowed (it only matters where the gradient vanishes).
    ``loss`` takes the full list of (float64) inputs and returns L, or an array of terms whose
    sum is L: then the rounding allowance uses Σ|terms|, the right scale when the terms cancel.
    """
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    for i, (a, grad) in enumerate(zip(inputs, grads, strict=True)):
        g = np.asarray(grad)
        assert g.shape == a.shape, f"input {i}: gradient shape {g.shape} != input shape {a.shape}"
        v = rng.standard_normal(a.shape)
        plus = [b + step * v if j == i else b for j, b in enumerate(inputs)]
        minus = [b - step * v if j == i else b for j, b in enumerate(inputs)]
        numeric = (float(np.sum(loss(plus))) - float(np.sum(loss(minus)))) / (2 * step)
        analytic = float(np.sum(g * v))
        scale = np.linalg.norm(g) * np.linalg.norm(v)
        magnitude = float(np.sum(np.abs(loss(inputs))))
        rounding = 8 * np.finfo(np.float64).eps * magnitude / step
        error = abs(numeric - analytic)
        assert error <= rtol * scale + rounding, (
            f"input {i}: finite difference {numeric!r} vs analytic {analytic!r} "
            f"(error {error:.3e}, scale {scale:.3e}, rounding {rounding:.3e})"
        )


@st.composite
def edge_sets(draw):
    """(centers [E], n_atoms): sorted with equal counts (the reshape path of ``group_edges``),
    or random centers (unsorted, variable counts, some atoms without edges, the last atoms
    never a center, possibly no edge at all)."""
    rng = np.random.default_rng(draw(seeds))
    if draw(st.booleans()):
        n_atoms, k = draw(st.integers(1, 6)), draw(st.integers(1, 5))
        return np.repeat(np.arange(n_atoms), k), n_atoms
    n_atoms = draw(st.integers(1, 8))
    n_edges = draw(st.integers(0, 25))
    n_centers = draw(st.integers(1, n_atoms))
    return rng.integers(0, n_centers, n_edges), n_atoms
