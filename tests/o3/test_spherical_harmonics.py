# ruff: noqa: E741  (l is the degree of a representation)
"""Real spherical harmonics: e3nn fixtures, an independent scipy reference, the group-theory and
normalization identities, exact quadrature, finite-difference gradients, edge cases, backends."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import sph_harm_y

from allegro_ref.o3 import (
    Irrep,
    Irreps,
    spherical_harmonics,
    spherical_harmonics_backward,
    spherical_harmonics_forward,
    spherical_harmonics_with_grad,
)
from tests.strategies import orthogonal_matrices, seeds, vectors

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "e3nn_spherical_harmonics.npz"
L_MAX = 8
NORMALIZATIONS = ("component", "norm", "integral")


def degree_slices(lmax: int) -> list[slice]:
    return [slice(l * l, (l + 1) ** 2) for l in range(lmax + 1)]


def assert_rows_close(actual, expected, rtol: float) -> None:
    """|actual - expected| <= rtol * (largest |expected| of the row), row by row."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.max(np.abs(expected), axis=-1, keepdims=True)
    error = np.abs(actual - expected)
    worst = np.max(error - rtol * scale)
    assert worst <= 0, f"max row error {np.max(error / np.maximum(scale, 1e-300)):.3e} > {rtol}"


def vjp(ls, v, grad, normalize=True, normalization="component"):
    _, cache = spherical_harmonics_forward(ls, v, normalize=normalize, normalization=normalization)
    return spherical_harmonics_backward(cache, grad)


@st.composite
def moderate_vectors(draw, n_max: int = 8):
    """[n, 3] vectors with norms in [0.5, 2] (finite differences with a fixed relative step)."""
    v = draw(vectors(1, n_max))
    radius = np.random.default_rng(draw(seeds)).uniform(0.5, 2.0, (len(v), 1))
    return v / np.linalg.norm(v, axis=-1, keepdims=True) * radius


# --------------------------------------------------------------------------------------------
# e3nn 0.6.0 fixtures (scripts/make_e3nn_fixtures_sh.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def e3nn():
    return dict(np.load(FIXTURES))


@pytest.mark.parametrize("lmax", range(L_MAX + 1))
def test_matches_e3nn_values_and_vjps(e3nn, lmax):
    dim = (lmax + 1) ** 2
    g = e3nn["cotangent"] / 4.0
    main, raw = e3nn["vectors"], e3nn["raw_vectors"]
    k = len(raw)
    cases = [(main, True, "component", e3nn["component"], e3nn["vjp_component"])]
    for normalization in ("norm", "integral"):
        ref = e3nn[normalization], e3nn[f"vjp_{normalization}"]
        cases.append((main[:k], True, normalization, *ref))
    cases.append((raw, False, "component", e3nn["raw"], e3nn["vjp_raw"]))
    for v, normalize, normalization, values, vjps in cases:
        n = len(v)
        y = spherical_harmonics(lmax, v, normalize=normalize, normalization=normalization)
        assert_rows_close(y, values[:, :dim], 1e-13)
        grad = vjp(lmax, v, g[:n, :dim], normalize, normalization)
        # e3nn clamps |v| at 1e-12, so its gradient at the zero vector (row 0) is 1e12 times the
        # l = 1 term; ours is 0 (tested in test_zero_vector).
        rows = slice(1, None) if normalize else slice(None)
        assert_rows_close(grad[rows], vjps[lmax][rows], 1e-12)


def test_subsets_and_multiplicities_are_blocks_of_the_full_harmonics(e3nn):
    v = e3nn["vectors"][:20]
    full = spherical_harmonics(4, v)
    s = degree_slices(4)
    cases = {
        "1o+3o": [1, 3],
        "0e+2e": [0, 2],
        "2x1o+0e": [1, 1, 0],
        "0e+1e+2e": [0, 1, 2],  # harmonics of a pseudovector: same functions, even parity
        "3o": [3],
    }
    for irreps, degrees in cases.items():
        expected = np.concatenate([full[:, s[l]] for l in degrees], axis=-1)
        np.testing.assert_array_equal(spherical_harmonics(irreps, v), expected)
        np.testing.assert_array_equal(spherical_harmonics(degrees, v), expected)
    np.testing.assert_array_equal(spherical_harmonics(Irrep("2e"), v), full[:, s[2]])
    np.testing.assert_array_equal(
        spherical_harmonics(Irreps("0e+2e"), v), full[:, [0, 4, 5, 6, 7, 8]]
    )


def test_vjp_of_a_subset_sums_repeated_blocks(rng):
    v = rng.standard_normal((6, 3))
    g = rng.standard_normal((6, 3 + 3 + 7))
    got = vjp("1o+1o+3o", v, g)
    full_grad = np.zeros((6, 16))
    full_grad[:, 1:4] = g[:, 0:3] + g[:, 3:6]
    full_grad[:, 9:16] = g[:, 6:13]
    np.testing.assert_allclose(got, vjp(3, v, full_grad), rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------------------------
# Independent reference: scipy's complex harmonics
# --------------------------------------------------------------------------------------------


def scipy_real_harmonics(l: int, v: np.ndarray) -> np.ndarray:
    """e3nn's degree-l block ("integral") from scipy's complex Y_l^m (Condon-Shortley phase).

    Mapping: e3nn(x, y, z) = Wikipedia-real(X, Y, Z) with (X, Y, Z) = (z, x, y), i.e. polar angle
    theta = atan2(sqrt(x^2 + z^2), y) (well conditioned at the poles, unlike arccos(y/|v|)) and
    azimuth phi = atan2(x, z); Wikipedia's real form is
    sqrt(2) (-1)^m Im Y_l^|m| (m < 0), Y_l^0 (m = 0), sqrt(2) (-1)^m Re Y_l^m (m > 0).
    """
    x, y, z = v.T
    theta = np.arctan2(np.hypot(x, z), y)
    phi = np.arctan2(x, z)
    columns = []
    for m in range(-l, l + 1):
        c = sph_harm_y(l, abs(m), theta, phi)
        if m < 0:
            columns.append(math.sqrt(2) * (-1) ** m * c.imag)
        elif m == 0:
            columns.append(c.real)
        else:
            columns.append(math.sqrt(2) * (-1) ** m * c.real)
    return np.stack(columns, axis=-1)


@given(vectors(1, 20))
def test_matches_scipy_complex_harmonics(v):
    y = spherical_harmonics(6, v, normalization="integral")
    for l, s in enumerate(degree_slices(6)):
        assert_rows_close(y[:, s], scipy_real_harmonics(l, v), 1e-12)


# --------------------------------------------------------------------------------------------
# Group theory and normalization
# --------------------------------------------------------------------------------------------


@given(vectors(1, 10), orthogonal_matrices(proper=True), orthogonal_matrices(proper=False))
def test_equivariance_under_proper_and_improper_rotations(v, proper, improper):
    from allegro_ref.o3 import Irreps

    irreps = Irreps.spherical_harmonics(L_MAX)
    for matrix in (proper, improper):
        d = np.asarray(irreps.D_from_matrix(matrix))
        rotated = spherical_harmonics(L_MAX, v @ matrix.T)
        assert_rows_close(rotated, spherical_harmonics(L_MAX, v) @ d.T, 1e-12)


@given(vectors(1, 10))
def test_parity(v):
    y, y_minus = spherical_harmonics(L_MAX, v), spherical_harmonics(L_MAX, -v)
    for l, s in enumerate(degree_slices(L_MAX)):
        np.testing.assert_array_equal(y_minus[:, s], (-1) ** l * y[:, s])


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@given(v=vectors(1, 10))
def test_normalization_on_the_sphere(normalization, v):
    y = spherical_harmonics(L_MAX, v, normalization=normalization)
    for l, s in enumerate(degree_slices(L_MAX)):
        expected = {"component": 2 * l + 1, "norm": 1.0, "integral": (2 * l + 1) / (4 * math.pi)}
        np.testing.assert_allclose(np.sum(y[:, s] ** 2, axis=-1), expected[normalization], 1e-13)


def test_orthonormality_by_exact_quadrature():
    """Gauss-Legendre in t = cos(theta) (y is the polar axis) times a uniform phi grid: with 9
    nodes in t (exact to degree 17) and 17 angles (exact for frequencies < 17) the rule is exact
    for products of two harmonics of degree <= 8."""
    t, w_t = np.polynomial.legendre.leggauss(9)
    phi = 2 * np.pi * np.arange(17) / 17
    t, phi = np.meshgrid(t, phi, indexing="ij")
    s = np.sqrt(1 - t**2)
    points = np.stack([s * np.sin(phi), t, s * np.cos(phi)], axis=-1).reshape(-1, 3)
    weights = (w_t[:, None] * np.full(17, 2 * np.pi / 17)).reshape(-1)
    y = spherical_harmonics(L_MAX, points, normalization="integral")
    gram = y.T @ (weights[:, None] * y)
    np.testing.assert_allclose(gram, np.eye((L_MAX + 1) ** 2), atol=1e-13)


@given(vectors(1, 10), st.floats(-150, 150))
def test_scale_invariance_when_normalized(v, log_scale):
    scale = 10.0**log_scale
    assert_rows_close(spherical_harmonics(L_MAX, scale * v), spherical_harmonics(L_MAX, v), 1e-13)


@given(vectors(1, 10), st.floats(-3, 3))
def test_homogeneity_when_not_normalized(v, log_scale):
    scale = 10.0**log_scale
    y, y_scaled = (spherical_harmonics(L_MAX, c * v, normalize=False) for c in (1.0, scale))
    for l, s in enumerate(degree_slices(L_MAX)):
        assert_rows_close(y_scaled[:, s], scale**l * y[:, s], 1e-13)


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


def directional_derivative(f, v: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Five-point central difference of f along the unit vectors d (truncation error
    h^4 f^(5) / 30), with a step h proportional to |v| (derivatives of degree l scale as |v|^-l)."""
    h = 2e-4 * np.linalg.norm(v, axis=-1, keepdims=True)
    return (8 * (f(v + h * d) - f(v - h * d)) - (f(v + 2 * h * d) - f(v - 2 * h * d))) / (12 * h)


@pytest.mark.parametrize("normalize", [True, False])
@given(v=moderate_vectors(), seed=seeds)
def test_gradients_match_finite_differences(normalize, v, seed):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(v.shape)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    g = rng.standard_normal((len(v), (L_MAX + 1) ** 2))

    def f(p):
        return spherical_harmonics(L_MAX, p, normalize=normalize)

    y, jac = spherical_harmonics_with_grad(L_MAX, v, normalize=normalize)
    np.testing.assert_array_equal(y, f(v))
    fd = directional_derivative(f, v, d)
    assert_rows_close(np.sum(jac * d[:, None, :], axis=-1), fd, 1e-7)
    # g . dY/dv . d, relative to the sum of the magnitudes of its terms (it may cancel)
    along_d = np.sum(vjp(L_MAX, v, g, normalize) * d, axis=-1)
    assert np.all(np.abs(along_d - np.sum(g * fd, -1)) <= 1e-7 * np.sum(np.abs(g * fd), -1))


@pytest.mark.parametrize("normalize", [True, False])
@given(v=vectors(1, 10), seed=seeds)
def test_vjp_is_the_contraction_of_the_jacobian(normalize, v, seed):
    g = np.random.default_rng(seed).standard_normal((len(v), (L_MAX + 1) ** 2))
    _, jac = spherical_harmonics_with_grad(L_MAX, v, normalize=normalize)
    assert_rows_close(vjp(L_MAX, v, g, normalize), np.sum(g[:, :, None] * jac, axis=1), 1e-13)


@given(vectors(1, 10))
def test_gradient_is_tangential_when_normalized(v):
    """x . grad Y(x/|x|) = 0 (scale invariance); Euler's l Y_l for the solid harmonics."""
    _, jac = spherical_harmonics_with_grad(L_MAX, v)
    radial = np.sum(jac * v[:, None, :], axis=-1)
    scale = np.max(np.abs(jac), axis=(1, 2)) * np.linalg.norm(v, axis=-1)
    assert np.all(np.abs(radial) <= 1e-13 * scale[:, None])
    y, jac = spherical_harmonics_with_grad(L_MAX, v, normalize=False)
    degree = np.concatenate([np.full(2 * l + 1, l) for l in range(L_MAX + 1)])
    assert_rows_close(np.sum(jac * v[:, None, :], axis=-1), degree * y, 1e-13)


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_zero_vector(normalization):
    zero = np.zeros((1, 3))
    g = np.ones((1, (L_MAX + 1) ** 2))
    y0 = spherical_harmonics(0, np.ones((1, 3)), normalization=normalization)
    for normalize in (True, False):
        y, jac = spherical_harmonics_with_grad(
            L_MAX, zero, normalize=normalize, normalization=normalization
        )
        np.testing.assert_array_equal(y[:, :1], y0)
        np.testing.assert_array_equal(y[:, 1:], 0.0)
        if normalize:
            np.testing.assert_array_equal(jac, 0.0)
            np.testing.assert_array_equal(vjp(L_MAX, zero, g, True, normalization), 0.0)
        else:  # the gradient of the l = 1 polynomial is a constant
            np.testing.assert_array_equal(jac[:, 4:], 0.0)
            assert np.all(np.isfinite(jac))


def test_poles_tiny_and_huge_vectors():
    """Near the polar axis and at norms 1e-150 / 1e150: the values of the unit vector and a
    gradient scaled by 1/|v|, all finite."""
    directions = np.array([[0, 1, 0], [0, -1, 0], [1e-17, 1, 0], [0, -1, 3e-12], [0.3, -0.5, 0.8]])
    directions = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
    y, jac = spherical_harmonics_with_grad(L_MAX, directions)
    assert np.all(np.isfinite(jac))
    for scale in (1e-150, 1e150):
        y_s, jac_s = spherical_harmonics_with_grad(L_MAX, scale * directions)
        assert_rows_close(y_s, y, 1e-14)
        assert_rows_close((scale * jac_s).reshape(len(y), -1), jac.reshape(len(y), -1), 1e-14)


def test_non_finite_vectors_give_nan():
    v = np.array([[np.nan, 0.0, 1.0], [np.inf, 0.0, 0.0], [0.0, 1.0, 0.0]])
    with np.errstate(invalid="ignore"):
        y, jac = spherical_harmonics_with_grad(3, v)
        grad = vjp(3, v, np.ones((3, 16)))
    assert np.all(y[:2, 0] == 1.0) and np.all(np.isnan(y[:2, 1:]))
    assert np.all(np.isnan(jac[:2, 1:])) and np.all(np.isnan(grad[:2]))
    assert np.all(np.isfinite(y[2])) and np.all(np.isfinite(grad[2]))


def test_high_degree_is_normalized():
    v = np.random.default_rng(0).standard_normal((50, 3))
    y = spherical_harmonics(20, v, normalization="norm")
    for s in degree_slices(20):
        np.testing.assert_allclose(np.sum(y[:, s] ** 2, axis=-1), 1.0, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Shapes, blocks and errors
# --------------------------------------------------------------------------------------------


def test_batch_shapes(rng):
    v = rng.standard_normal((2, 4, 3))
    y, jac = spherical_harmonics_with_grad(2, v)
    assert y.shape == (2, 4, 9) and jac.shape == (2, 4, 9, 3)
    np.testing.assert_array_equal(y.reshape(8, 9), spherical_harmonics(2, v.reshape(8, 3)))
    assert vjp(2, v, np.ones((2, 4, 9))).shape == (2, 4, 3)
    assert spherical_harmonics(2, v[0, 0]).shape == (9,)
    assert spherical_harmonics(2, np.zeros((0, 3))).shape == (0, 9)


def test_host_blocks_do_not_change_the_result(rng):
    """On NumPy the vectors are processed in blocks (8192 vectors for l_max = 2): each row of the
    result must not depend on how the batch is cut."""
    v = rng.standard_normal((2 * 8192 + 37, 3))
    g = rng.standard_normal((len(v), 9))
    y, jac = spherical_harmonics_with_grad(2, v)
    grad = vjp(2, v, g)
    for piece in (slice(0, 5000), slice(5000, 13000), slice(13000, None)):
        y_p, jac_p = spherical_harmonics_with_grad(2, v[piece])
        np.testing.assert_array_equal(y[piece], y_p)
        np.testing.assert_allclose(jac[piece], jac_p, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(grad[piece], vjp(2, v[piece], g[piece]), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "ls, message",
    [
        ("1e+2o", "not spherical harmonics"),
        ("0o", "not spherical harmonics"),
        (-1, "l_max must be >= 0"),
        ([2, -1], "degrees must be >= 0"),
        ([], "selects no spherical harmonics"),
        ("", "selects no spherical harmonics"),
    ],
)
def test_bad_degrees_are_refused(ls, message):
    with pytest.raises(ValueError, match=message):
        spherical_harmonics(ls, np.ones((2, 3)))


def test_bad_arguments_are_refused():
    v = np.ones((2, 3))
    with pytest.raises(TypeError):
        spherical_harmonics([1.5], v)
    with pytest.raises(ValueError, match="normalization 'unit'"):
        spherical_harmonics(2, v, normalization="unit")
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 3\]"):
        spherical_harmonics(2, np.ones((2, 4)))
    with pytest.raises(ValueError, match="not supported"):
        spherical_harmonics(2, np.ones((2, 3), dtype=np.int64))
    _, cache = spherical_harmonics_forward(2, v)
    with pytest.raises(ValueError, match=r"grad_Y has shape \(2, 4\)"):
        spherical_harmonics_backward(cache, np.ones((2, 4)))


# --------------------------------------------------------------------------------------------
# Backends and dtypes
# --------------------------------------------------------------------------------------------


def all_public_results(v, g, ls=L_MAX, normalize=True):
    y, cache = spherical_harmonics_forward(ls, v, normalize=normalize)
    _, jac = spherical_harmonics_with_grad(ls, v, normalize=normalize)
    return [
        spherical_harmonics(ls, v, normalize=normalize),
        y,
        spherical_harmonics_backward(cache, g),
        jac,
    ]


@pytest.mark.parametrize("normalize", [True, False])
def test_backends_agree_with_numpy(backend, rng, normalize):
    v = rng.standard_normal((9, 3))
    v[0] = 0.0
    g = rng.standard_normal((9, 11))
    expected = all_public_results(v, g, "0e+2e+2e", normalize)
    got = all_public_results(backend.asarray(v), backend.asarray(g), "0e+2e+2e", normalize)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(backend.to_numpy(a), b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("normalize", [True, False])
def test_float32_agrees_with_float64(backend, rng, normalize):
    """Within 1e-5 of the row's scale; for the VJP, of the scale of its terms sum_i |g_i J_i|
    (the sum may cancel)."""
    v = rng.standard_normal((64, 3))
    g = rng.standard_normal((64, (L_MAX + 1) ** 2))
    expected = all_public_results(v, g, L_MAX, normalize)
    got = all_public_results(
        backend.asarray(v, "float32"), backend.asarray(g, "float32"), L_MAX, normalize
    )
    vjp_scale = np.max(np.sum(np.abs(g[:, :, None] * expected[3]), axis=1), axis=-1)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.dtype == backend.xp.float32
        error = np.abs(backend.to_numpy(a).astype(np.float64) - b).reshape(len(v), -1)
        scale = vjp_scale if i == 2 else np.max(np.abs(b.reshape(len(v), -1)), axis=-1)
        assert np.all(np.max(error, axis=-1) <= 1e-5 * scale)
