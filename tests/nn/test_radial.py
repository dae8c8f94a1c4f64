"""Bessel basis and polynomial cutoff: exact and independent references, gradients, smoothness,
backends, and agreement with the official nequip blocks (tests/fixtures/nequip_blocks.npz)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mpmath
import numpy as np
import pytest
import scipy.special
import sympy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from allegro_ref.nn import (
    bessel_basis_backward,
    bessel_basis_forward,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
)
from tests.nn import assert_directional_derivatives
from tests.strategies import seeds

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nequip_blocks.npz"


def lengths(min_value: float = 0.0, max_value: float = 1.3, max_size: int = 12):
    return hnp.arrays(
        np.float64,
        st.integers(1, max_size),
        elements=st.floats(min_value, max_value, allow_subnormal=False),
    )


# --------------------------------------------------------------------------------------------
# Bessel basis
# --------------------------------------------------------------------------------------------


@given(x=lengths(), n_basis=st.integers(1, 10))
def test_bessel_matches_spherical_bessel_reference(x, n_basis):
    """b_n(x) = ω_n j0(π ω_n x) and ∂b/∂x = π ω_n² j0'(π ω_n x), with scipy's j0 as reference."""
    omega = np.arange(1.0, n_basis + 1.0)
    b, cache = bessel_basis_forward(x, omega)
    t = np.pi * omega[None, :] * x[:, None]
    np.testing.assert_allclose(b, omega * scipy.special.spherical_jn(0, t), rtol=1e-14, atol=1e-14)
    # Backward with a one-hot cotangent per basis function recovers each column's derivative.
    for n in range(n_basis):
        grad_b = np.zeros_like(b)
        grad_b[:, n] = 1.0
        grad_x, _ = bessel_basis_backward(cache, grad_b)
        expected = np.pi * omega[n] ** 2 * scipy.special.spherical_jn(0, t[:, n], derivative=True)
        np.testing.assert_allclose(grad_x, expected, rtol=1e-13, atol=1e-13)


def test_bessel_is_finite_at_zero_and_equals_frequency():
    omega = np.array([1.0, 2.0, 3.5, -0.7])
    x = np.array([0.0, 1e-300, 1e-12])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b, cache = bessel_basis_forward(x, omega)
        grad_x, grad_omega = bessel_basis_backward(cache, np.ones_like(b))
    np.testing.assert_array_equal(b[0], omega)
    np.testing.assert_allclose(b[1:], np.broadcast_to(omega, (2, 4)), rtol=1e-20 + 1e-15)
    assert grad_x[0] == 0.0  # b is even in x
    np.testing.assert_allclose(grad_omega, [3.0] * 4, rtol=1e-15)  # ∂b/∂ω = cos(0) = 1


@given(
    x=lengths(),
    frequencies=hnp.arrays(np.float64, st.integers(1, 9), elements=st.floats(0.3, 8)),
    seed=seeds,
)
def test_bessel_backward_matches_finite_differences(x, frequencies, seed):
    rng = np.random.default_rng(seed)
    b, cache = bessel_basis_forward(x, frequencies)
    grad_b = rng.standard_normal(b.shape)
    grad_x, grad_frequencies = bessel_basis_backward(cache, grad_b)

    def loss(inputs):  # the terms: their signs vary, so the sum can cancel (rounding scale)
        return bessel_basis_forward(*inputs)[0] * grad_b

    assert_directional_derivatives(loss, [x, frequencies], [grad_x, grad_frequencies], rng)


def test_bessel_small_x_gradient_is_accurate():
    """Near x = 0 the closed form of ∂b/∂x cancels; compare with high-precision sympy values."""
    omega = np.array([1.0, 3.0, 8.0])
    x = np.array([1e-9, 1e-6, 1e-3, 0.01, 0.019, 0.021, 0.1])  # straddles π ω x = 0.5
    _, cache = bessel_basis_forward(x, omega)
    s_x, s_w = sympy.symbols("x w", positive=True)
    derivative = sympy.diff(sympy.sin(sympy.pi * s_w * s_x) / (sympy.pi * s_x), s_x)
    for n, w in enumerate(omega):
        grad_b = np.zeros((x.size, omega.size))
        grad_b[:, n] = 1.0
        grad_x, _ = bessel_basis_backward(cache, grad_b)
        exact = [
            float(derivative.subs({s_w: sympy.Rational(w), s_x: sympy.Rational(xi)}).evalf(50))
            for xi in x
        ]
        np.testing.assert_allclose(grad_x, exact, rtol=1e-14)


def test_bessel_float32_close_to_float64():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1.2, 50)
    omega = np.arange(1.0, 9.0)
    b64, c64 = bessel_basis_forward(x, omega)
    b32, c32 = bessel_basis_forward(x.astype(np.float32), omega.astype(np.float32))
    assert b32.dtype == np.float32
    np.testing.assert_allclose(b32, b64, rtol=0, atol=2e-6 * np.abs(b64).max())
    grad_b = rng.standard_normal(b64.shape)
    gx64, gw64 = bessel_basis_backward(c64, grad_b)
    gx32, gw32 = bessel_basis_backward(c32, grad_b.astype(np.float32))
    assert gx32.dtype == gw32.dtype == np.float32
    np.testing.assert_allclose(gx32, gx64, rtol=0, atol=1e-5 * np.abs(gx64).max())
    np.testing.assert_allclose(gw32, gw64, rtol=0, atol=1e-5 * np.abs(gw64).max())


def test_bessel_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"x \[E\] and frequencies \[B\]"):
        bessel_basis_forward(np.zeros((3, 1)), np.arange(1.0, 4.0))


# --------------------------------------------------------------------------------------------
# Polynomial cutoff
# --------------------------------------------------------------------------------------------


def sympy_envelope(p):
    s_x = sympy.symbols("x", positive=True)
    u = (
        1
        - (p + 1) * (p + 2) / 2 * s_x**p
        + p * (p + 2) * s_x ** (p + 1)
        - p * (p + 1) / 2 * s_x ** (p + 2)
    )
    return s_x, u


@given(x=lengths(), p=st.fractions(1, 12, max_denominator=4))
def test_cutoff_matches_sympy(x, p):
    """u and u' against exact sympy evaluation for rational p >= 1 (0 for x >= 1)."""
    p_sym = sympy.Rational(p.numerator, p.denominator)
    s_x, u_sym = sympy_envelope(p_sym)
    du_sym = sympy.diff(u_sym, s_x)
    u, cache = polynomial_cutoff_forward(x, float(p))
    du = polynomial_cutoff_backward(cache, np.ones_like(x))
    inside = x < 1
    exact_u = [float(u_sym.subs(s_x, sympy.Rational(xi)).evalf(30)) for xi in x[inside]]
    exact_du = [float(du_sym.subs(s_x, sympy.Rational(xi)).evalf(30)) for xi in x[inside]]
    # Absolute tolerance: near x = 1 the official polynomial form cancels (terms ~ p², u ~ 0).
    np.testing.assert_allclose(u[inside], exact_u, rtol=1e-13, atol=1e-13 * float(p + 1) ** 2)
    np.testing.assert_allclose(du[inside], exact_du, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(u[~inside], 0.0)
    np.testing.assert_array_equal(du[~inside], 0.0)


def test_envelope_is_C2_at_the_cutoff_symbolically():
    """For every p: u(1) = u'(1) = u''(1) = 0 and u'(x) = −p(p+1)(p+2)/2 x^(p−1) (1−x)²."""
    p = sympy.symbols("p", positive=True)
    s_x, u = sympy_envelope(p)
    for order in range(3):
        assert sympy.simplify(sympy.diff(u, s_x, order).subs(s_x, 1)) == 0
    factored = -p * (p + 1) * (p + 2) / 2 * s_x ** (p - 1) * (1 - s_x) ** 2
    assert sympy.simplify(sympy.diff(u, s_x) - factored) == 0


@pytest.mark.parametrize("p", [2.0, 3.5, 6.0, 9.0])
def test_cutoff_is_zero_from_one_and_C2_smooth_numerically(p):
    x = np.array([1.0, 1.0 + 1e-12, 1.5, 3.0, 1e10, 1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u, cache = polynomial_cutoff_forward(x, p)
        du = polynomial_cutoff_backward(cache, np.ones_like(x))
    np.testing.assert_array_equal(u, 0.0)
    np.testing.assert_array_equal(du, 0.0)
    # Approaching from below: u = O(h³), u' = O(h²), so the one-sided u'' = (u'(1) − u'(1−h))/h
    # is O(h) -> 0 (k = p(p+1)(p+2)/2 bounds the constants).
    k = p * (p + 1) * (p + 2) / 2
    h = np.array([1e-1, 1e-2, 1e-3])
    u, cache = polynomial_cutoff_forward(1 - h, p)
    du = polynomial_cutoff_backward(cache, np.ones_like(h))
    assert np.all(np.abs(u) <= k * h**3 + 1e-13 * k)
    assert np.all(np.abs(du) <= k * h**2)
    second = (0.0 - du) / h
    assert np.all(np.abs(second) <= k * h)


# Away from x = 1: there u ~ (1−x)³ is a cancellation of O(p³) terms (the official form), so the
# difference quotient's rounding, ~eps·p³/step, swamps u' ~ p³(1−x)² (the exact derivative near
# 1 is checked against sympy above); and u''' jumps at 1, where the difference errs by O(step²).
_off_cutoff = st.one_of(st.floats(0.01, 0.9), st.floats(1.01, 1.3))


@given(
    x=hnp.arrays(np.float64, st.integers(1, 12), elements=_off_cutoff),
    p=st.floats(1.0, 10.0),
    seed=seeds,
)
def test_cutoff_backward_matches_finite_differences(x, p, seed):
    rng = np.random.default_rng(seed)
    u, cache = polynomial_cutoff_forward(x, p)
    grad_u = rng.standard_normal(u.shape)
    grad_x = polynomial_cutoff_backward(cache, grad_u)

    def loss(inputs):
        return float(np.sum(polynomial_cutoff_forward(inputs[0], p)[0] * grad_u))

    assert_directional_derivatives(loss, [x], [grad_x], rng)


def test_cutoff_float32_close_to_float64():
    x = np.linspace(0, 1.2, 61)
    u64, c64 = polynomial_cutoff_forward(x)
    u32, c32 = polynomial_cutoff_forward(x.astype(np.float32))
    assert u32.dtype == np.float32
    np.testing.assert_allclose(u32, u64, rtol=0, atol=2e-6)
    g64 = polynomial_cutoff_backward(c64, np.ones_like(x))
    g32 = polynomial_cutoff_backward(c32, np.ones(x.shape, np.float32))
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-5)


@pytest.mark.parametrize("p", [0.0, -1.0, float("nan")])
def test_cutoff_rejects_nonpositive_degree(p):
    with pytest.raises(ValueError, match="must be > 0"):
        polynomial_cutoff_forward(np.array([0.5]), p)


# --------------------------------------------------------------------------------------------
# Backends and the official implementation
# --------------------------------------------------------------------------------------------


def radial_features(x, frequencies, p, grad_embedding, grad_cutoff):
    """The model's chain: embedding = b(x)·u(x), its backward plus a cotangent on u itself."""
    b, b_cache = bessel_basis_forward(x, frequencies)
    u, u_cache = polynomial_cutoff_forward(x, p)
    embedding = b * u[:, None]
    grad_x_b, grad_frequencies = bessel_basis_backward(b_cache, grad_embedding * u[:, None])
    grad_u = grad_cutoff + (grad_embedding * b).sum(axis=-1)
    grad_x = grad_x_b + polynomial_cutoff_backward(u_cache, grad_u)
    return embedding, u, grad_x, grad_frequencies


def test_radial_backends_agree(backend):
    rng = np.random.default_rng(3)
    x = np.concatenate([[0.0, 1.0, 1.2], rng.uniform(0, 1.1, 20)])
    frequencies = rng.uniform(0.5, 8, 6)
    grad_embedding = rng.standard_normal((x.size, 6))
    grad_cutoff = rng.standard_normal(x.size)
    expected = radial_features(x, frequencies, 6.0, grad_embedding, grad_cutoff)
    xp = backend.xp
    moved = [backend.asarray(a) for a in (x, frequencies, grad_embedding, grad_cutoff)]
    x_b, f_b, ge_b, gc_b = moved
    b, b_cache = bessel_basis_forward(x_b, f_b)
    u, u_cache = polynomial_cutoff_forward(x_b, 6.0)
    grad_x_b, grad_f = bessel_basis_backward(b_cache, ge_b * u[:, None])
    grad_u = gc_b + xp.sum(ge_b * b, axis=-1)
    grad_x = grad_x_b + polynomial_cutoff_backward(u_cache, grad_u)
    got = (b * u[:, None], u, grad_x, grad_f)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(backend.to_numpy(g), e, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("case", ["default", "p3.5_random_freq"])
def test_radial_matches_official(case):
    f = np.load(FIXTURE)
    prefix = f"radial.{case}."
    d = {k.removeprefix(prefix): f[k] for k in f.files if k.startswith(prefix)}
    x, frequencies, p = d["x"], d["frequencies"], float(d["p"])
    embedding, u, grad_x, grad_frequencies = radial_features(
        x, frequencies, p, d["grad_embedding"], d["grad_cutoff"]
    )
    np.testing.assert_allclose(embedding, d["embedding"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(u, d["cutoff"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_frequencies, d["grad_frequencies"], rtol=1e-12, atol=1e-12)
    # torch's sinc gradient, (πy cos πy − sin πy)/(πy²), cancels for small y: at x = 1e-4 the
    # official value is off by ~5e-11 relative. There, compare with a 50-digit mpmath derivative.
    small = (x > 0) & (x < 1e-3)
    assert small.any()
    np.testing.assert_allclose(grad_x[~small], d["grad_x"][~small], rtol=1e-12, atol=1e-12)
    for e in np.flatnonzero(small):
        g_b, g_u = d["grad_embedding"][e], d["grad_cutoff"][e]
        exact = _radial_loss_derivative(x[e], frequencies, p, g_b, g_u)
        np.testing.assert_allclose(grad_x[e], exact, rtol=1e-14)


def _radial_loss_derivative(x, frequencies, p, grad_embedding, grad_cutoff):
    """d/dx of (Σ_n g_n b_n(x) + g_u) u(x) for one edge, by mpmath to 50 digits."""
    with mpmath.workdps(50):
        p = mpmath.mpf(p)

        def loss(x):
            u = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1)
            u -= p * (p + 1) / 2 * x ** (p + 2)
            b = [mpmath.sin(mpmath.pi * w * x) / (mpmath.pi * x) for w in frequencies]
            return u * (grad_cutoff + sum(g * bn for g, bn in zip(grad_embedding, b, strict=True)))

        return float(mpmath.diff(loss, mpmath.mpf(x)))
