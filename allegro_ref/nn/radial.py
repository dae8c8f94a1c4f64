r"""Radial features of an edge: the Bessel basis and the polynomial cutoff envelope.

Both act on the normalized edge length $x = r / r_{cut}$ (unitless, $x \ge 0$; $r$ in Å).
Allegro's radial input to the network is $R(x) = b(x)\, u(x)$: Bessel functions $b$ `[E, B]`
times a smooth envelope $u$ `[E]` that takes the edge smoothly to zero at the cutoff (nequip
0.19.1's `BesselEdgeLengthEncoding` and `PolynomialCutoff`; paper: arXiv:2204.05249, Methods).

**Bessel basis** (official normalization: no $2/r_{max}$ prefactor, no $1/r$ in Å):

$$b_n(x) = \frac{\sin(\pi \omega_n x)}{\pi x} = \omega_n\, j_0(\pi \omega_n x), \qquad
  j_0(t) = \frac{\sin t}{t},$$

with frequencies $\omega = (1, 2, \dots, B)$ by default (trainable in the official code when
`bessel_trainable`). $b_n(0) = \omega_n$ is finite.

**Polynomial envelope** of degree $p$ (DimeNet's, any real $p > 0$; the official default is
$p = 6$):

$$u(x) = \begin{cases} 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2)\, x^{p+1} - \frac{p(p+1)}{2}
  x^{p+2} & x < 1, \\ 0 & x \ge 1. \end{cases}$$

Its derivative factors as $u'(x) = -\frac{p(p+1)(p+2)}{2}\, x^{p-1} (1 - x)^2$, a double root
at $x = 1$: $u$, $u'$ and $u''$ all vanish at the cutoff, so energies are $C^2$ (forces $C^1$)
as atoms cross it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..backend import Array, namespace

__all__ = [
    "BesselCache",
    "bessel_basis_forward",
    "bessel_basis_backward",
    "bessel_basis_jvp",
    "bessel_basis_backward_jvp",
    "polynomial_cutoff_forward",
    "polynomial_cutoff_backward",
    "polynomial_cutoff_jvp",
]

# Below this |t|, j1(t) = (sin t − t cos t) / t² is summed as a Taylor series: the closed form
# loses ~6·eps/t² relative accuracy to cancellation, the 7-term series below errs by < 1e-17 there.
_J1_SERIES_BELOW = 0.5
# c_k with j1(t) = t · Σ_k c_k t^(2k):  c_k = (−1)^k (2k+2) / (2k+3)!,  k = 0..6.
_J1_SERIES = tuple((-1) ** k * (2 * k + 2) / math.factorial(2 * k + 3) for k in range(7))


class BesselCache(NamedTuple):
    r"""What the Bessel basis's backward and tangents need: the inputs, $t = \pi \omega x$
    `[E, B]` and its sine and cosine (computed once, in the forward)."""

    x: Array  # [E]
    frequencies: Array  # [B]
    t: Array  # [E, B]
    sin_t: Array  # [E, B]
    cos_t: Array  # [E, B]


def _j0(xp, c: BesselCache):
    """Spherical Bessel j0(t) = sin(t) / t, with j0(0) = 1 (sin(t)/t is exact to rounding for
    every t != 0, so only t = 0 needs care)."""
    is_zero = c.t == 0
    safe_t = xp.where(is_zero, xp.ones_like(c.t), c.t)
    return xp.where(is_zero, xp.ones_like(c.t), c.sin_t / safe_t)


def _j1(xp, c: BesselCache):
    """Spherical Bessel j1(t) = (sin t − t cos t) / t² = −j0'(t), stable at small |t|."""
    t = c.t
    small = xp.abs(t) < _J1_SERIES_BELOW
    safe_t = xp.where(small, xp.ones_like(t), t)
    closed_form = (c.sin_t - safe_t * c.cos_t) / (safe_t * safe_t)
    t2 = t * t
    series = xp.zeros_like(t)
    for coefficient in reversed(_J1_SERIES):  # Horner in t²
        series = series * t2 + coefficient
    return xp.where(small, t * series, closed_form)


def bessel_basis_forward(x: Array, frequencies: Array) -> tuple[Array, BesselCache]:
    r"""Bessel radial basis $b_n(x) = \sin(\pi \omega_n x) / (\pi x)$, finite ($= \omega_n$) at
    $x = 0$.

    Args:
        x: `[E]` normalized edge lengths $r / r_{cut}$ (unitless).
        frequencies: `[B]` frequencies $\omega_n$ (official default `[1., 2., ..., B]`); cast to
            the dtype of `x` for the computation.

    Returns:
        `(b, cache)`: `b` `[E, B]` basis values in the dtype of `x`; the `BesselCache` for
            `bessel_basis_backward` (it keeps $\cos t$ too, which the backward needs).

    Raises:
        ValueError: `x` or `frequencies` is not one-dimensional.
    """
    xp = namespace(x, frequencies)
    if x.ndim != 1 or frequencies.ndim != 1:
        raise ValueError(
            f"bessel_basis_forward expects x [E] and frequencies [B]; got shapes "
            f"{tuple(x.shape)} and {tuple(frequencies.shape)}"
        )
    omega = xp.astype(frequencies, x.dtype)[None, :]
    t = math.pi * omega * x[:, None]
    cache = BesselCache(x, frequencies, t, xp.sin(t), xp.cos(t))
    return omega * _j0(xp, cache), cache


def bessel_basis_backward(cache: BesselCache, grad_b: Array) -> tuple[Array, Array]:
    r"""Vector-Jacobian product of `bessel_basis_forward`.

    With $t = \pi \omega x$ and $b = \omega\, j_0(t)$:
    $\partial b/\partial x = \pi \omega^2 j_0'(t) = -\pi \omega^2 j_1(t)$; and from
    $b = \sin(\pi \omega x) / (\pi x)$: $\partial b/\partial \omega = \pi x \cos(t) / (\pi x) =
    \cos t$ (also 1 at $x = 0$).

    Args:
        cache: from the forward.
        grad_b: `[E, B]` gradient of a scalar with respect to `b`.

    Returns:
        `(grad_x, grad_frequencies)`: `[E]` (dtype of `x`) and `[B]` (dtype of `frequencies`).
    """
    xp = namespace(cache.x, grad_b)
    omega = xp.astype(cache.frequencies, cache.x.dtype)[None, :]
    grad_x = xp.sum(grad_b * ((-math.pi) * omega * omega * _j1(xp, cache)), axis=1)
    grad_frequencies = xp.sum(grad_b * cache.cos_t, axis=0)
    return grad_x, xp.astype(grad_frequencies, cache.frequencies.dtype)


def bessel_basis_jvp(cache: BesselCache, x_dot: Array) -> Array:
    r"""Jacobian-vector product of `bessel_basis_forward` (the frequencies fixed):
    $\dot b_n = -\pi \omega_n^2 j_1(t_n)\, \dot x$, `[E, B]` from `x_dot` `[E]`."""
    xp = namespace(cache.x, x_dot)
    omega = xp.astype(cache.frequencies, cache.x.dtype)[None, :]
    return ((-math.pi) * omega * omega * _j1(xp, cache)) * x_dot[:, None]


def bessel_basis_backward_jvp(
    cache: BesselCache, x_dot: Array, grad_b: Array, grad_b_dot: Array
) -> Array:
    r"""Tangent of the frequency gradient of `bessel_basis_backward` as $x$ moves along `x_dot`
    `[E]` and the cotangent along `grad_b_dot` `[E, B]`: from
    $\partial L/\partial \omega_n = \sum_e \bar b_{en} \cos t_{en}$,

    $$\dot{\overline{\omega}}_n = \sum_e \big(\dot{\bar b}_{en} \cos t_{en}
      - \bar b_{en}\, \sin t_{en}\, \pi \omega_n \dot x_e\big)$$

    (`[B]`, dtype of `frequencies`; the tangent of $\partial L/\partial x$ is not formed:
    nothing trainable lies below $x$)."""
    xp = namespace(cache.x, grad_b)
    omega = xp.astype(cache.frequencies, cache.x.dtype)[None, :]
    moved = grad_b * cache.sin_t * (math.pi * omega) * x_dot[:, None]
    return xp.astype(xp.sum(grad_b_dot * cache.cos_t - moved, axis=0), cache.frequencies.dtype)


def _cutoff_coefficients(p: float) -> tuple[float, float, float, float]:
    """(a, b, c, k): u = 1 − a x^p + b x^(p+1) − c x^(p+2) and u' = −k x^(p−1) (1 − x)²."""
    return (p + 1) * (p + 2) / 2, p * (p + 2), p * (p + 1) / 2, p * (p + 1) * (p + 2) / 2


def polynomial_cutoff_forward(x: Array, p: float = 6.0) -> tuple[Array, tuple]:
    r"""Polynomial envelope $u(x)$ (module docstring), 1 at $x = 0$ and exactly 0 for $x \ge 1$.

    Args:
        x: `[E]` normalized edge lengths $r / r_{cut}$ (unitless, $\ge 0$).
        p: degree, any real $p > 0$ (official default 6, official code requires $p \ge 2$; for
            $p < 1$ the derivative is unbounded at $x = 0$).

    Returns:
        `(u, cache)`: `u` `[E]` in the dtype of `x`; `cache` for `polynomial_cutoff_backward`.

    Raises:
        ValueError: $p \le 0$.
    """
    p = float(p)
    if not p > 0:
        raise ValueError(f"polynomial cutoff degree p must be > 0; got p = {p}")
    xp = namespace(x)
    a, b, c, _ = _cutoff_coefficients(p)
    inside = xp.real(x) < 1.0  # real part: x may be complex (complex-step differentiation)
    # Evaluate the polynomial at min(x, 1) only: for x >= 1 it would be discarded, and for huge x
    # its powers could overflow.
    xc = xp.where(inside, x, xp.ones_like(x))
    xc_p = xc**p
    u = 1.0 - a * xc_p + b * (xc_p * xc) - c * (xc_p * xc * xc)
    return xp.where(inside, u, xp.zeros_like(u)), (x, p)


def polynomial_cutoff_backward(cache: tuple, grad_u: Array) -> Array:
    r"""Vector-Jacobian product of `polynomial_cutoff_forward`:
    $\partial L/\partial x = \partial L/\partial u \cdot u'(x)$, with
    $u'(x) = -\frac{p(p+1)(p+2)}{2}\, x^{p-1} (1 - x)^2$ for $x < 1$, else 0.

    Args:
        cache: from the forward.
        grad_u: `[E]` gradient of a scalar with respect to `u`.

    Returns:
        `[E]`, $\partial L/\partial x$.
    """
    x, p = cache
    xp = namespace(x, grad_u)
    _, _, _, k = _cutoff_coefficients(p)
    inside = xp.real(x) < 1.0
    xc = xp.where(inside, x, xp.ones_like(x))  # (1 − xc)² = 0 outside: u' = 0 there
    one_minus = 1.0 - xc
    du_dx = (-k) * xc ** (p - 1.0) * (one_minus * one_minus)
    return grad_u * du_dx


def polynomial_cutoff_jvp(cache: tuple, x_dot: Array) -> Array:
    r"""Jacobian-vector product of `polynomial_cutoff_forward`: $\dot u = u'(x)\, \dot x$ `[E]`
    (elementwise, so the same product as the backward's)."""
    return polynomial_cutoff_backward(cache, x_dot)
