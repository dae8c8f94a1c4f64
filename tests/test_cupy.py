"""The o3 core on CuPy arrays gives NumPy's results (skipped where no CUDA GPU is usable).

``import cupy`` can succeed on a machine without a GPU; the first allocation then raises a CUDA
driver error. ``_usable_cupy`` tries one allocation, once, and every test here skips otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.backend import is_cupy
from allegro_ref.o3 import (
    Irreps,
    spherical_harmonics,
    spherical_harmonics_backward,
    spherical_harmonics_forward,
    spherical_harmonics_with_grad,
    wigner_D,
)
from tests.strategies import haar_rotation


def _usable_cupy():
    """The cupy module if it imports and can allocate on a GPU, else None."""
    try:
        import cupy

        cupy.zeros(1)
    except Exception:  # ImportError, or cupy's CUDARuntimeError / CUDADriverError without a GPU
        return None
    return cupy


cp = _usable_cupy()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason="no usable CUDA GPU")]


def sh_results(v, g, ls, normalize):
    y, cache = spherical_harmonics_forward(ls, v, normalize=normalize)
    _, jacobian = spherical_harmonics_with_grad(ls, v, normalize=normalize)
    return [
        spherical_harmonics(ls, v, normalize=normalize),
        y,
        spherical_harmonics_backward(cache, g),
        jacobian,
    ]


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-13), ("float32", 1e-5)])
@pytest.mark.parametrize("ls", [6, "1o+3o+1o"])
@pytest.mark.parametrize("normalize", [True, False])
def test_spherical_harmonics_on_cupy_match_numpy(rng, dtype, rtol, ls, normalize):
    v = rng.standard_normal((1000, 3))
    v[0] = 0.0
    dim = spherical_harmonics(ls, v[:1]).shape[-1]
    g = rng.standard_normal((1000, dim))
    expected = sh_results(v, g, ls, normalize)
    got = sh_results(cp.asarray(v, dtype=dtype), cp.asarray(g, dtype=dtype), ls, normalize)
    # the VJP (entry 2) is compared on the scale of its terms sum_i |g_i dY_i/dv|
    vjp_scale = np.max(np.sum(np.abs(g[:, :, None] * expected[3]), axis=1), axis=-1)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert is_cupy(a) and a.dtype == np.dtype(dtype)
        error = np.abs(cp.asnumpy(a).astype(np.float64) - b).reshape(len(v), -1)
        scale = vjp_scale if i == 2 else np.max(np.abs(b.reshape(len(v), -1)), axis=-1)
        assert np.all(np.max(error, axis=-1) <= rtol * scale)


def test_wigner_d_on_cupy_matches_numpy(rng):
    rotations = np.stack([haar_rotation(rng) for _ in range(8)])
    for l in range(5):
        got = wigner_D(l, cp.asarray(rotations))
        assert is_cupy(got)
        np.testing.assert_allclose(cp.asnumpy(got), wigner_D(l, rotations), atol=1e-13)
    matrices = np.concatenate([rotations, -rotations])
    irreps = Irreps.spherical_harmonics(4)
    got = irreps.D_from_matrix(cp.asarray(matrices))
    np.testing.assert_allclose(cp.asnumpy(got), irreps.D_from_matrix(matrices), atol=1e-13)
