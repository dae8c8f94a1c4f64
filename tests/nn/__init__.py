"""Tests of allegro_ref.nn, and the finite-difference check the block tests share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


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
    for i, (a, g) in enumerate(zip(inputs, grads, strict=True)):
        g = np.asarray(g)
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
