# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
r"""Real spherical harmonics in e3nn's basis, with analytic gradients.

Conventions ([Conventions](../conventions.md), "Real spherical harmonics"): the polar axis is
**y**, the degree-$l$ block has $2l+1$ components ordered $m = -l, \dots, l$, and for $l = 1$ the
block is $\sqrt 3\,(x, y, z)$ in the default `"component"` normalization. In formulas, with the
Wikipedia-frame coordinates $(X, Y, Z) = (z, x, y)$ of a vector $v = (x, y, z)$,

$$Y_l^{+m} = c_{lm}\, Q_l^m(Z, r^2)\, \operatorname{Re} (X + iY)^m, \qquad
  Y_l^{-m} = c_{lm}\, Q_l^m(Z, r^2)\, \operatorname{Im} (X + iY)^m,$$

where $Q_l^m(Z, r^2) = r^{l-m} \frac{d^m}{dt^m} P_l(t)$ at $t = Z / r$ ($P_l$ the Legendre
polynomial), so that $r^l\, Y_l(v / r)$ is a homogeneous harmonic polynomial of degree $l$ (a
solid harmonic), and

$$c_{lm} = N_l \sqrt{(2 - \delta_{m0}) \frac{2l+1}{4\pi} \frac{(l-m)!}{(l+m)!}}, \qquad
  N_l = \begin{cases} \sqrt{4\pi} & \text{"component"} \\ \sqrt{4\pi/(2l+1)} & \text{"norm"} \\
  1 & \text{"integral"}. \end{cases}$$

**Algorithm (values).** Every $Q_l^m$ is a polynomial whose leading coefficient in $Z$ is
$(2l-1)!!/(l-m)!$; its monic version $q_l^m$ obeys the three-term recurrence of the associated
Legendre functions,

$$q_m^m = 1, \quad q_{m+1}^m = Z, \quad q_l^m = Z\, q_{l-1}^m - \beta_{lm}\, r^2\, q_{l-2}^m,
  \qquad \beta_{lm} = \frac{(l+m-1)(l-m-1)}{(2l-1)(2l-3)},$$

and $(X + iY)^m = C_m + i S_m$ by $C_{m+1} = X C_m - Y S_m$, $S_{m+1} = X S_m + Y C_m$. Then
$Y_l^{\pm m} = w_{lm}\, q_l^m\, \{C_m, S_m\}$ with $w_{lm} = c_{lm} (2l-1)!!/(l-m)!$. Every
$q_l^m$, $C_m$, $S_m$ is a contiguous length-$n$ vector, so that each step is one vectorized
operation over the vectors.

**Layout.** Results are stored component-major (`[D, n]`: one contiguous row per component,
which is what makes the recurrence fast in NumPy) and returned as the transposed view `[n, D]`
(no copy on NumPy or CuPy). Copy the result (e.g. `numpy.ascontiguousarray`) if a row-major
buffer is needed. On NumPy the vectors are processed in cache-sized blocks.

**Algorithm (gradients).** The gradient of a solid harmonic of degree $l$ is a solid harmonic of
degree $l-1$ (ladder relations; $F_l^m = Q_l^m (X + iY)^m$, $\partial_\pm = \partial_X \pm i
\partial_Y$):

$$\partial_Z F_l^m = (l+m)\, F_{l-1}^m, \qquad \partial_+ F_l^m = -F_{l-1}^{m+1}, \qquad
  \partial_- F_l^m = (l+m)(l+m-1)\, F_{l-1}^{m-1},$$

so $\partial Y_l / \partial v = J_l \cdot Y_{l-1}$ with a constant sparse tensor $J_l$
`[2l+1, 3, 2l-1]` built once per $(l, \text{normalization})$. With `normalize=True` the
harmonics are evaluated at $u = v/|v|$ and the chain rule through $u$ gives the tangential
projection $\partial Y / \partial v = (1 - u u^T)\, \nabla Y(u) / |v|$.

**Edge cases** (`normalize=True`): the zero vector gives $Y_0 = c_{00}$ and $Y_{l \ge 1} = 0$ with
a zero gradient (like e3nn); a vector with a NaN or infinite entry gives NaN in every $l \ge 1$
component and in its gradient ($Y_0$ is the constant). Norms from ~1e-154 to ~1e154 (float64;
~1e-19 to ~1e19 in float32) are exact to rounding: the vector is normalized before any
polynomial is formed.
"""

from __future__ import annotations

import math
import operator
from fractions import Fraction
from functools import cache
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, as_constant, block_rows, device, float_dtype, namespace
from ._irreps import Irrep, Irreps

__all__ = [
    "NORMALIZATIONS",
    "spherical_harmonics",
    "spherical_harmonics_with_grad",
    "spherical_harmonics_forward",
    "spherical_harmonics_backward",
    "spherical_harmonics_jvp",
]

NORMALIZATIONS = ("component", "norm", "integral")

# On the host, vectors are processed in blocks of about this many bytes of output (2^17 values in
# float64), 1024 to 8192 vectors (``backend.block_rows``: a block's temporaries stay in the CPU
# cache). Other backends (CuPy, ...) run the whole batch as one block.
_HOST_BLOCK_BYTES = 1 << 20


# --------------------------------------------------------------------------------------------
# Constants (float64 NumPy, built once per degree and normalization)
# --------------------------------------------------------------------------------------------


def _c_squared(l: int, m: int, normalization: str) -> Fraction:
    """c_lm^2 without the 1/(4 pi) of "integral" (which cancels in every ratio of c's)."""
    ratio = Fraction(math.factorial(l - m), math.factorial(l + m))
    c2 = (2 if m else 1) * (2 * l + 1) * ratio
    return c2 / (2 * l + 1) if normalization == "norm" else c2


def _integral_factor(normalization: str) -> float:
    return 1.0 / math.sqrt(4.0 * math.pi) if normalization == "integral" else 1.0


def _double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2))


def _beta(l: int, m: int) -> float:
    """beta_lm = (l+m-1)(l-m-1) / ((2l-1)(2l-3)) of the monic recurrence (l >= 2, m <= l-2)."""
    return (l + m - 1) * (l - m - 1) / ((2 * l - 1) * (2 * l - 3))


@cache
def _weights(l: int, normalization: str) -> tuple[float, ...]:
    """w_lm = c_lm (2l-1)!!/(l-m)! for m = 0..l (Y_l^{+-m} = w_lm q_l^m {C_m, S_m})."""
    scale = _integral_factor(normalization)
    w2 = [
        _c_squared(l, m, normalization)
        * Fraction(_double_factorial(2 * l - 1), math.factorial(l - m)) ** 2
        for m in range(l + 1)
    ]
    return tuple(scale * math.sqrt(x) for x in w2)


def _ladder_terms(l: int, m: int) -> list[tuple[int, int, complex]]:
    """d_k F_l^m = sum of coef * F_{l-1}^{m'} for m >= 1, as (axis k, m', coef) with the axis in
    e3nn order (0: x = Y_wiki, 1: y = Z_wiki, 2: z = X_wiki); from d_X = (d_+ + d_-)/2 and
    d_Y = (d_+ - d_-)/(2i)."""
    down = (l + m) * (l + m - 1)
    return [
        (2, m - 1, down / 2),
        (2, m + 1, -1 / 2),
        (0, m - 1, 0.5j * down),
        (0, m + 1, 0.5j),
        (1, m, complex(l + m)),
    ]


@cache
def _ladder(l: int, normalization: str) -> np.ndarray:
    """J_l [2l+1, 3, 2l-1] with dY_l[i]/dv_k = sum_j J_l[i, k, j] Y_{l-1}[j] (l >= 1), for the
    solid harmonics (exact for ``normalize=False``; the gradient before projection otherwise).

    Real parts: with F = A + iB (A_l^m = Y_l^{+m}/c_lm, B_l^m = Y_l^{-m}/c_lm, B_l^0 = 0) and
    d_k F_l^m = sum coef F_{l-1}^{m'}: d_k A = sum Re(coef) A' - Im(coef) B',
    d_k B = sum Im(coef) A' + Re(coef) B'. For m = 0: d_X A = -A_{l-1}^1, d_Y A = -B_{l-1}^1,
    d_Z A = l A_{l-1}^0.
    """
    jac = np.zeros((2 * l + 1, 3, 2 * l - 1), dtype=np.float64)

    def add(m: int, sign: int, k: int, m_prime: int, sign_prime: int, value: float) -> None:
        # d Y_l^{sign*m} / d v_k += value * Y_{l-1}^{sign'*m'} * c_lm / c_{l-1,m'}
        if value == 0 or m_prime > l - 1 or (m_prime == 0 and sign_prime < 0):
            return
        ratio = _c_squared(l, m, normalization) / _c_squared(l - 1, m_prime, normalization)
        jac[l + sign * m, k, l - 1 + sign_prime * m_prime] += value * math.sqrt(ratio)

    add(0, 1, 2, 1, 1, -1.0)
    add(0, 1, 0, 1, -1, -1.0)
    add(0, 1, 1, 0, 1, float(l))
    for m in range(1, l + 1):
        for k, m_prime, coef in _ladder_terms(l, m):
            add(m, 1, k, m_prime, 1, coef.real)
            add(m, 1, k, m_prime, -1, -coef.imag)
            add(m, -1, k, m_prime, 1, coef.imag)
            add(m, -1, k, m_prime, -1, coef.real)
    return jac


@cache
def _ladder_vjp_matrix(l: int, normalization: str) -> np.ndarray:
    """J_l as a [3 (2l-1), 2l+1] matrix: it @ grad_Y_l^T, viewed [3, 2l-1, n], dotted with
    Y_{l-1}^T over the middle axis, is the VJP of degree l (before the projection)."""
    return np.ascontiguousarray(
        _ladder(l, normalization).transpose(1, 2, 0).reshape(3 * (2 * l - 1), 2 * l + 1)
    )


@cache
def _ladder_jacobian_matrix(l: int, normalization: str) -> np.ndarray:
    """J_l as a [(2l+1) 3, 2l-1] matrix: it @ Y_{l-1}^T, viewed [2l+1, 3, n], is dY_l/dv."""
    return _ladder(l, normalization).reshape((2 * l + 1) * 3, 2 * l - 1)


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _degrees(ls: Any) -> tuple[int, ...]:
    """The degrees of the output blocks, in order: an int l_max means 0..l_max; a sequence of
    ints is taken as is; an Irreps (or Irrep, or their string) gives each l `mul` times, and its
    parities must be those of the harmonics of a vector, (-1)^l, or all even (pseudovector)."""
    if isinstance(ls, bool):
        raise TypeError(f"ls must be an int, a sequence of ints or Irreps, not {ls!r}")
    if isinstance(ls, int):
        if ls < 0:
            raise ValueError(f"l_max must be >= 0, got {ls}")
        return tuple(range(ls + 1))
    if isinstance(ls, (str, Irrep, Irreps)):
        irreps = Irreps(ls)
        vector = all(ir.p == (-1) ** ir.l for _, ir in irreps)
        pseudovector = all(ir.p == 1 for _, ir in irreps)
        if not (vector or pseudovector):
            raise ValueError(
                f"irreps '{irreps}' are not spherical harmonics: each l must have parity "
                f"(-1)^l (harmonics of a vector, e.g. '0e+1o+2e') or all must be even "
                f"(harmonics of a pseudovector, e.g. '0e+1e+2e')"
            )
        degrees = tuple(ir.l for mul, ir in irreps for _ in range(mul))
    else:
        degrees = tuple(operator.index(l) for l in ls)
        if any(l < 0 for l in degrees):
            raise ValueError(f"degrees must be >= 0, got {list(degrees)}")
    if not degrees:
        raise ValueError(f"ls {ls!r} selects no spherical harmonics")
    return degrees


def _check_vectors(vectors: Any, normalization: str):
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization {normalization!r} is not one of {list(NORMALIZATIONS)}")
    xp = namespace(vectors)
    float_dtype(xp, vectors.dtype)
    if vectors.ndim < 1 or vectors.shape[-1] != 3:
        raise ValueError(f"vectors must have shape [..., 3], got {tuple(vectors.shape)}")
    return xp


def _blocks(n: int, dim: int, like: Any) -> list[tuple[int, int]]:
    """(start, stop) of the blocks of vectors, for ``dim`` harmonics per vector, arrays like
    ``like``."""
    rows = block_rows(like, 8 * dim, host_bytes=_HOST_BLOCK_BYTES)
    step = max(n, 1) if rows is None else max(1024, min(8192, rows))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def _solid_harmonics_into(
    out_t, rows: slice, X, Y, Z, r2, unit: bool, lmax: int, normalization: str
):
    """Write Y_0..Y_lmax at the points (X, Y, Z) = (z, x, y) [n] (Wikipedia frame: Z is e3nn's
    polar axis y) with |p|^2 = ``r2`` [n] into ``out_t[:, rows]`` [(lmax+1)^2, n].

    Every quantity is a length-n vector (component-major): q[m] = q_l^m (q_l^l = 1 implicit),
    C[m], S[m]. With ``unit`` the points are on the unit sphere and r^2 = 1 is used in the
    recurrence, except for m = 0, where the true |p|^2 (0 for the zero vector) makes
    Y_{l>=1}(0) = 0 (for m >= 1 the factor C_m or S_m vanishes there).
    """
    out_t[0, rows] = _weights(0, normalization)[0]
    C, S = [None, X], [None, Y]
    for m in range(2, lmax + 1):
        C.append(X * C[m - 1] - Y * S[m - 1])
        S.append(X * S[m - 1] + Y * C[m - 1])
    q_prev = []  # q_{l-2}^m, m = 0..l-3
    q = []  # q_{l-1}^m, m = 0..l-2
    for l in range(1, lmax + 1):
        q_next = []
        for m in range(l - 1):
            with_r2 = m == 0 or not unit
            if m < l - 2:
                older = r2 * q_prev[m] if with_r2 else q_prev[m]
            else:  # q_{l-2}^{l-2} = 1
                older = r2 if with_r2 else 1.0
            q_next.append(Z * q[m] - _beta(l, m) * older)
        q_prev, q = q, q_next + [Z]  # q_l^{l-1} = Z q_{l-1}^{l-1} = Z
        w = _weights(l, normalization)
        center = l * l + l
        out_t[center, rows] = w[0] * q[0]
        for m in range(1, l):
            wq = w[m] * q[m]
            out_t[center + m, rows] = wq * C[m]
            out_t[center - m, rows] = wq * S[m]
        out_t[center + l, rows] = w[l] * C[l]
        out_t[center - l, rows] = w[l] * S[l]


def _inverse_norm(r2):
    """1/|v| from |v|^2: 0 for the zero vector (so that u = v/|v| = 0), NaN for a vector with a
    NaN or infinite entry (so that all of u is NaN). The test reads the real part, so complex
    vectors (complex-step differentiation, allegro_ref.train) pass through analytically."""
    xp = namespace(r2)
    r2 = xp.where(xp.real(r2) < xp.inf, r2, xp.nan)
    return 1.0 / xp.sqrt(xp.where(r2 == 0, xp.inf, r2))


def _unit_vectors_t(vectors, rows: slice, inv_norm):
    """u^T [3, b] of the rows ``rows`` of ``vectors`` [n, 3] (component-major)."""
    xp = namespace(vectors)
    inv = inv_norm[rows]
    return xp.stack([vectors[rows, 0] * inv, vectors[rows, 1] * inv, vectors[rows, 2] * inv])


class SphericalHarmonicsCache(NamedTuple):
    """What the backward needs: all degrees 0..l_max (also those not returned)."""

    harmonics_t: Any  # [(l_max+1)^2, n] Y at the (unit) vectors, component-major
    vectors: Any  # [n, 3] the input vectors, flattened (a view, not a copy)
    inv_norm: Any  # [n] 1/|v| (0 for the zero vector); None when normalize=False
    degrees: tuple[int, ...]
    normalization: str
    batch_shape: tuple[int, ...]


def _batch_view(xp, array_t, batch_shape: tuple[int, ...]):
    """A component-major array [..., n] seen as [*batch_shape, ...]: the vector axis moved first
    (a transposed view, no copy on NumPy and CuPy) and unflattened."""
    moved = xp.permute_dims(array_t, (array_t.ndim - 1, *range(array_t.ndim - 1)))
    return xp.reshape(moved, (*batch_shape, *moved.shape[1:]))


def spherical_harmonics_forward(
    ls: Any, vectors: Array, normalize: bool = True, normalization: str = "component"
) -> tuple[Array, SphericalHarmonicsCache]:
    r"""Spherical harmonics and the cache for
    [`spherical_harmonics_backward`][allegro_ref.o3.spherical_harmonics_backward].

    Args:
        ls: as [`spherical_harmonics`][allegro_ref.o3.spherical_harmonics].
        vectors: `[..., 3]` float32 or float64.
        normalize: as `spherical_harmonics`.
        normalization: as `spherical_harmonics`.

    Returns:
        `(Y, cache)`: `Y` as `spherical_harmonics` returns it; the cache holds the harmonics of
            every degree up to $\max(ls)$ `[(l_max+1)^2, n]`, the vectors and, for
            `normalize=True`, $1/|v|$ `[n]`.

    With `normalize=True`: $u = v/|v|$ with $1/|v| := 0$ for the zero vector (so $u = 0$ and every
    $Y_{l \ge 1} = 0$ there) and $:= \mathrm{NaN}$ for a vector with a NaN or infinite entry.
    """
    xp = _check_vectors(vectors, normalization)
    degrees = _degrees(ls)
    lmax = max(degrees)
    batch_shape = tuple(vectors.shape[:-1])
    flat = xp.reshape(vectors, (-1, 3))
    n = flat.shape[0]
    full_t = xp.empty(((lmax + 1) ** 2, n), dtype=vectors.dtype, device=device(vectors))
    inv_norm = xp.empty((n,), dtype=vectors.dtype, device=device(vectors)) if normalize else None
    for start, stop in _blocks(n, (lmax + 1) ** 2, vectors):
        rows = slice(start, stop)
        x, y, z = flat[rows, 0], flat[rows, 1], flat[rows, 2]
        squares = flat[rows, :] * flat[rows, :]
        r2 = squares[:, 0] + squares[:, 1] + squares[:, 2]
        if normalize:
            inv = _inverse_norm(r2)
            inv_norm[rows] = inv
            x, y, z, r2 = x * inv, y * inv, z * inv, r2 * inv * inv  # |u|^2 = 1 (0 for v = 0)
        _solid_harmonics_into(full_t, rows, z, x, y, r2, normalize, lmax, normalization)
    if degrees == tuple(range(lmax + 1)):
        values_t = full_t
    else:
        values_t = xp.concat([full_t[l * l : (l + 1) ** 2, :] for l in degrees], axis=0)
    cache = SphericalHarmonicsCache(full_t, flat, inv_norm, degrees, normalization, batch_shape)
    return _batch_view(xp, values_t, batch_shape), cache


def spherical_harmonics(
    ls: Any, vectors: Array, normalize: bool = True, normalization: str = "component"
) -> Array:
    r"""Real spherical harmonics $Y(v)$ of the vectors, in e3nn's basis.

    The formulas, the recurrences that evaluate them and their gradients are in
    [Spherical harmonics: the algorithm](#spherical-harmonics-the-algorithm).

    Args:
        ls: an int `l_max` (all degrees $0, \dots, l_{max}$, $D = (l_{max}+1)^2$; note that
            e3nn's function reads an int as the single degree $l$), a sequence of degrees, or an
            `Irreps` / irreps string of harmonics such as `"0e+2e"` or `"1o+3o"` (each block $l$
            has parity $(-1)^l$, or all are even for the harmonics of a pseudovector; a
            multiplicity repeats the block).
        vectors: `[..., 3]` float32 or float64 (any length unit, e.g. Å).
        normalize: evaluate at $v/|v|$ (harmonics on the unit sphere, scale invariant); with
            `False`, the solid harmonics $|v|^l\, Y_l(v/|v|)$, homogeneous polynomials of
            degree $l$.
        normalization: `"component"` ($\sum_m Y_{lm}^2 = 2l+1$ on the sphere), `"norm"`
            ($= 1$) or `"integral"` ($\int Y_{lm}^2\, d\Omega = 1$).

    Returns:
        `[..., D]` array of the input's namespace, dtype and device, the blocks in the order of
            `ls`, each ordered $m = -l, \dots, l$ (a transposed view of component-major
            `[D, n]` memory).

    Examples:
        ```python
        import numpy as np
        from allegro_ref.o3 import spherical_harmonics

        vectors = np.array([[0.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
        Y = spherical_harmonics(2, vectors, normalize=True, normalization="component")
        print(Y.shape)  # (2, 9): l = 0 (1), l = 1 (3), l = 2 (5)
        # "component": the l = 1 block is sqrt(3) (x, y, z) / |v|
        assert np.allclose(Y[0, 1:4], np.sqrt(3) * np.array([0.0, 0.0, 1.0]))
        # and every degree has sum_m Y_lm^2 = 2l + 1
        assert np.allclose((Y[:, 4:9] ** 2).sum(axis=1), 5.0)
        ```
    """
    return spherical_harmonics_forward(
        ls, vectors, normalize=normalize, normalization=normalization
    )[0]


def spherical_harmonics_backward(cache: SphericalHarmonicsCache, grad_Y: Array) -> Array:
    r"""Vector-Jacobian product: $\partial L / \partial v_k = \sum_i \partial L / \partial Y_i\;
    \partial Y_i / \partial v_k$.

    Args:
        cache: from [`spherical_harmonics_forward`][allegro_ref.o3.spherical_harmonics_forward].
        grad_Y: `[..., D]` cotangent of the harmonics (e.g. $\partial E / \partial Y$).

    Returns:
        `[..., 3]` gradient with respect to the vectors.

    Raises:
        ValueError: `grad_Y` does not have the shape of the harmonics.

    Per degree $l \ge 1$, $G_k = \sum_{ij} \bar Y_{l,i}\, J_{l,ikj}\, Y_{l-1,j}$ (the ladder
    relation, never forming the `[n, D, 3]` Jacobian; $\bar Y$ the cotangent); with
    `normalize=True` the chain rule through $u = v/|v|$ gives $(G - u (u \cdot G)) / |v|$.
    Computed component-major (`[3, n]` blocks).
    """
    full_t, flat, inv_norm, degrees, normalization, batch_shape = cache
    xp = namespace(grad_Y)
    dim = sum(2 * l + 1 for l in degrees)
    if tuple(grad_Y.shape) != (*batch_shape, dim):
        raise ValueError(
            f"grad_Y has shape {tuple(grad_Y.shape)} but the harmonics have shape "
            f"{(*batch_shape, dim)}"
        )
    n = full_t.shape[1]
    grad = xp.reshape(grad_Y, (n, dim))
    # the cotangent of each degree l >= 1 (blocks of a repeated degree add up)
    per_degree: dict[int, Any] = {}
    start = 0
    for l in degrees:
        block = grad[:, start : start + 2 * l + 1]
        if l > 0:
            per_degree[l] = block if l not in per_degree else per_degree[l] + block
        start += 2 * l + 1
    ladders = {
        l: as_constant(_ladder_vjp_matrix(l, normalization), like=full_t) for l in per_degree
    }

    out_t = xp.zeros((3, n), dtype=full_t.dtype, device=device(full_t))
    if not per_degree:  # only l = 0: Y does not depend on v
        return _batch_view(xp, out_t, batch_shape)
    for begin, stop in _blocks(n, full_t.shape[0], full_t):
        rows = slice(begin, stop)
        g = None  # [3, b]
        for l, grad_l in per_degree.items():
            h = ladders[l] @ xp.permute_dims(grad_l[rows, :], (1, 0))
            h = xp.reshape(h, (3, 2 * l - 1, stop - begin))
            term = xp.sum(h * full_t[None, (l - 1) ** 2 : l * l, rows], axis=1)
            g = term if g is None else g + term
        if inv_norm is not None:
            u = _unit_vectors_t(flat, rows, inv_norm)
            g = (g - u * xp.sum(u * g, axis=0)) * inv_norm[rows]
        out_t[:, rows] = g
    return _batch_view(xp, out_t, batch_shape)


def spherical_harmonics_jvp(cache: SphericalHarmonicsCache, vectors_dot: Array) -> Array:
    r"""Jacobian-vector product: $\dot Y_i = \sum_k \partial Y_i / \partial v_k\, \dot v_k$.

    Args:
        cache: from [`spherical_harmonics_forward`][allegro_ref.o3.spherical_harmonics_forward].
        vectors_dot: `[..., 3]` tangent of the vectors.

    Returns:
        `[..., D]`, the tangent of the harmonics.

    The same ladder relation as the backward, in the other direction: with `normalize=True`
    the tangent of the unit vector, $\dot u = (\dot v - u (u \cdot \dot v)) / |v|$, then per
    degree $l \ge 1$, $\dot Y_{l,i} = \sum_{kj} J_{l,ikj}\, \dot u_k\, Y_{l-1,j}$.
    """
    full_t, flat, inv_norm, degrees, normalization, batch_shape = cache
    xp = namespace(vectors_dot)
    n = full_t.shape[1]
    d = xp.permute_dims(xp.reshape(vectors_dot, (n, 3)), (1, 0))  # [3, n]
    if inv_norm is not None:
        u = _unit_vectors_t(flat, slice(0, n), inv_norm)
        d = (d - u * xp.sum(u * d, axis=0)) * inv_norm
    blocks = []
    for l in degrees:
        if l == 0:  # Y_0 is constant
            blocks.append(xp.zeros((1, n), dtype=full_t.dtype, device=device(full_t)))
            continue
        ladder = as_constant(_ladder_jacobian_matrix(l, normalization), like=full_t)
        jacobian = xp.reshape(ladder @ full_t[(l - 1) ** 2 : l * l, :], (2 * l + 1, 3, n))
        blocks.append(xp.sum(jacobian * d[None, :, :], axis=1))
    return _batch_view(xp, xp.concat(blocks, axis=0), batch_shape)


def spherical_harmonics_with_grad(
    ls: Any, vectors: Array, normalize: bool = True, normalization: str = "component"
) -> tuple[Array, Array]:
    r"""Spherical harmonics and their full Jacobian.

    Args:
        ls: as [`spherical_harmonics`][allegro_ref.o3.spherical_harmonics].
        vectors: `[..., 3]` float32 or float64.
        normalize: as `spherical_harmonics`.
        normalization: as `spherical_harmonics`.

    Returns:
        `(Y [..., D], dY/dv [..., D, 3])` with `dY/dv[..., i, k]` $= \partial Y_i / \partial
            v_k$: per degree $J_l \cdot Y_{l-1}$ (ladder relation), projected by
            $(1 - u u^T)/|v|$ when `normalize=True`.

    Prefer the forward/backward pair when only a vector-Jacobian product is needed (it never
    forms this `[..., D, 3]` array).
    """
    values, cache = spherical_harmonics_forward(
        ls, vectors, normalize=normalize, normalization=normalization
    )
    full_t, flat, inv_norm, degrees, normalization, batch_shape = cache
    xp = namespace(full_t)
    n, dim = full_t.shape[1], values.shape[-1]
    jacobian_t = xp.zeros((dim, 3, n), dtype=full_t.dtype, device=device(full_t))
    ladders = {
        l: as_constant(_ladder_jacobian_matrix(l, normalization), like=full_t) for l in degrees if l
    }
    for begin, stop in _blocks(n, full_t.shape[0], full_t):
        rows = slice(begin, stop)
        if inv_norm is not None:
            u = _unit_vectors_t(flat, rows, inv_norm)[None, :, :]
        col = 0
        for l in degrees:
            if l > 0:
                block = ladders[l] @ full_t[(l - 1) ** 2 : l * l, rows]
                block = xp.reshape(block, (2 * l + 1, 3, stop - begin))  # [i, k, b]
                if inv_norm is not None:
                    block = (block - u * xp.sum(block * u, axis=1, keepdims=True)) * inv_norm[rows]
                jacobian_t[col : col + 2 * l + 1, :, rows] = block
            col += 2 * l + 1
    return values, _batch_view(xp, jacobian_t, batch_shape)
