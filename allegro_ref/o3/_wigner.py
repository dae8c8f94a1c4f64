r"""Wigner 3j symbols and Wigner D matrices in e3nn's real basis.

Both objects describe how SO(3) acts on the space $V_l$ of degree-$l$ real spherical harmonics
(dimension $2l+1$, components ordered $m = -l, \dots, l$ with the polar axis along **y**, see
[Conventions](../conventions.md)):

- `wigner_3j(l1, l2, l3)`: the unique (up to sign) invariant tensor $C_{ijk}$ of
  $V_{l_1} \otimes V_{l_2} \otimes V_{l_3}$, with unit Frobenius norm and e3nn's sign.
- `wigner_D(l, R)`: the matrix with $Y_l(R x) = D_l(R)\, Y_l(x)$ (column vectors).

Both are built from the complex (Condon-Shortley) representation theory by one change of basis,
`change_of_basis_real_to_complex(l)`, so that the real basis, the 3j signs and the rotation
matrices agree with each other and with e3nn 0.6.0 (`e3nn.o3.wigner_3j`, `Irrep.D_from_matrix`).
"""

# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any

import numpy as np

from ..backend import Array, as_constant, namespace

__all__ = ["wigner_3j", "wigner_D", "change_of_basis_real_to_complex", "so3_generators"]


# --------------------------------------------------------------------------------------------
# The real basis
# --------------------------------------------------------------------------------------------


@functools.cache
def change_of_basis_real_to_complex(l: int) -> np.ndarray:
    r"""The unitary $Q_l$ `[2l+1, 2l+1]` (complex128, read-only) taking real coordinates to
    complex ones: rows are the complex (Condon-Shortley) basis $|l, \mu\rangle$,
    $\mu = -l, \dots, l$, columns the real basis $r = -l, \dots, l$, and real basis vector $r$ is
    $e_r = \sum_\mu Q_{\mu r} |\mu\rangle$.

    With $s = 1/\sqrt 2$ and an overall factor $(-i)^l$ (which makes every real 3j symbol real;
    it cancels in real-basis D matrices):

    $$\begin{aligned}
    e_r &= (-i)^l\, s \left( |{-r}\rangle + (-1)^r |r\rangle \right) && r > 0
      \text{ (cosine-like)}, \\
    e_0 &= (-i)^l\, |0\rangle, \\
    e_r &= (-i)^l\, s\, i \left( (-1)^{|r|} |{+|r|}\rangle - |{-|r|}\rangle \right) && r < 0
      \text{ (sine-like)}.
    \end{aligned}$$

    A complex-basis operator $A$ reads $Q^H A Q$ in the real basis.
    """
    _check_degree(l)
    q = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    s = 1 / math.sqrt(2)
    q[l, l] = 1
    for r in range(1, l + 1):
        sign = (-1) ** r
        q[l - r, l + r] = s  # cosine-like column r > 0
        q[l + r, l + r] = sign * s
        q[l - r, l - r] = -1j * s  # sine-like column -r
        q[l + r, l - r] = 1j * sign * s
    q *= (-1j) ** l
    q.flags.writeable = False
    return q


# --------------------------------------------------------------------------------------------
# Wigner 3j
# --------------------------------------------------------------------------------------------


@functools.cache
def _factorial(n: int) -> int:
    return math.factorial(n)


def _su2_clebsch_gordan(l1: int, l2: int, l3: int) -> np.ndarray:
    r"""Complex Clebsch-Gordan coefficients ``<l1 m1 l2 m2 | l3 m3> / sqrt(2 l3 + 1)`` as a
    float64 array [2l1+1, 2l2+1, 2l3+1] indexed ``[l1+m1, l2+m2, l3+m3]`` (zero unless
    ``m3 = m1 + m2``).

    Racah's formula, evaluated in exact rational arithmetic (no cancellation error):

        <l1 m1 l2 m2 | l3 m3> = sqrt((2 l3 + 1) Delta prod_{a=1,2,3} (l_a + m_a)! (l_a - m_a)!)
                                * sum_k (-1)^k / [k! (l1+l2-l3-k)! (l1-m1-k)! (l2+m2-k)!
                                                  (l3-l2+m1+k)! (l3-l1-m2+k)!]

    with ``Delta = (l1+l2-l3)! (l1-l2+l3)! (-l1+l2+l3)! / (l1+l2+l3+1)!`` and k over all values
    that keep every factorial argument >= 0. The sum S is a Fraction; the coefficient is
    ``sign(S) sqrt(P S^2)`` with ``P S^2`` exact, so the float64 result is correctly rounded up to
    one rounding of the square root. Dividing by ``sqrt(2 l3 + 1)`` (i.e. dropping that factor
    from P) gives each block Frobenius norm 1, since ``sum_{m1 m2 m3} <..|l3 m3>^2 = 2 l3 + 1``.
    """
    f = _factorial
    delta = Fraction(f(l1 + l2 - l3) * f(l1 - l2 + l3) * f(-l1 + l2 + l3), f(l1 + l2 + l3 + 1))
    out = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(max(-l2, -l3 - m1), min(l2, l3 - m1) + 1):
            m3 = m1 + m2
            k_min = max(0, l2 - l3 - m1, l1 - l3 + m2)
            k_max = min(l1 + l2 - l3, l1 - m1, l2 + m2)
            racah_sum = sum(
                Fraction(
                    (-1) ** k,
                    f(k)
                    * f(l1 + l2 - l3 - k)
                    * f(l1 - m1 - k)
                    * f(l2 + m2 - k)
                    * f(l3 - l2 + m1 + k)
                    * f(l3 - l1 - m2 + k),
                )
                for k in range(k_min, k_max + 1)
            )
            prefactor = delta * (
                f(l1 + m1) * f(l1 - m1) * f(l2 + m2) * f(l2 - m2) * f(l3 + m3) * f(l3 - m3)
            )
            value = math.sqrt(prefactor * racah_sum * racah_sum)
            out[l1 + m1, l2 + m2, l3 + m3] = math.copysign(value, racah_sum)
    return out


def _check_degree(l: Any) -> None:
    if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or l < 0:
        raise ValueError(f"a degree l must be a non-negative integer, got {l!r}")


def wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    r"""The real Wigner 3j symbol $C$ `[2l1+1, 2l2+1, 2l3+1]` (float64 NumPy, read-only,
    cached).

    $C$ is the invariant tensor of $V_{l_1} \otimes V_{l_2} \otimes V_{l_3}$ in e3nn's real basis:

    $$C_{ijk} = \sum_{i' j' k'} C_{i'j'k'}\, D_{l_1}(R)_{i'i}\, D_{l_2}(R)_{j'j}\,
      D_{l_3}(R)_{k'k} \quad \text{for every rotation } R,$$

    normalized to $\sum_{ijk} C_{ijk}^2 = 1$, with e3nn's sign. It is the complex Clebsch-Gordan
    block (Condon-Shortley phase) carried to the real basis with
    $Q$ = `change_of_basis_real_to_complex`:

    $$C_{abc} = \sum_{m_1 m_2 m_3} Q_{l_1, m_1 a}\, Q_{l_2, m_2 b}\, \overline{Q_{l_3, m_3 c}}\;
      \frac{\langle l_1 m_1\, l_2 m_2 | l_3 m_3 \rangle}{\sqrt{2 l_3 + 1}},$$

    which is real thanks to the $(-i)^l$ factor of $Q$. The coupling of two features $x$
    (degree $l_1$) and $y$ (degree $l_2$) into degree $l_3$ is $z_k = \sum_{ij} C_{ijk} x_i y_j$.

    Args:
        l1: degree of the first factor.
        l2: degree of the second factor.
        l3: degree of the output.

    Returns:
        `[2l1+1, 2l2+1, 2l3+1]` float64 NumPy array (read-only, cached).

    Raises:
        ValueError: if a degree is negative or not an integer, or the triple violates the
            triangle rule $|l_1 - l_2| \le l_3 \le l_1 + l_2$ ($C$ would be identically zero).

    Examples:
        Two vectors ($l = 1$) couple to a scalar by their dot product and to a vector by their
        cross product:

        ```python
        import numpy as np
        from allegro_ref.o3 import wigner_3j

        x, y = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
        dot = np.einsum("ijk,i,j->k", wigner_3j(1, 1, 0), x, y)
        cross = np.einsum("ijk,i,j->k", wigner_3j(1, 1, 1), x, y)
        assert np.allclose(dot * np.sqrt(3), x @ y)
        assert np.allclose(cross * np.sqrt(6), np.cross(x, y))
        ```
    """
    for l in (l1, l2, l3):
        _check_degree(l)
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(
            f"wigner_3j({l1}, {l2}, {l3}): the degrees violate the triangle rule "
            f"|l1 - l2| <= l3 <= l1 + l2, so no invariant tensor exists"
        )
    return _wigner_3j(int(l1), int(l2), int(l3))


@functools.cache
def _wigner_3j(l1: int, l2: int, l3: int) -> np.ndarray:
    """``wigner_3j`` for a valid triple of Python ints (the cache is keyed on them)."""
    cg = _su2_clebsch_gordan(l1, l2, l3).astype(np.complex128)
    q1 = change_of_basis_real_to_complex(l1)
    q2 = change_of_basis_real_to_complex(l2)
    q3 = change_of_basis_real_to_complex(l3)
    c = np.tensordot(cg, np.conj(q3), axes=([2], [0]))  # [m1, m2, c]
    c = np.tensordot(q2, c, axes=([0], [1]))  # [b, m1, c]
    c = np.tensordot(q1, c, axes=([0], [1]))  # [a, b, c]
    out = np.ascontiguousarray(c.real)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------------------------
# Wigner D
# --------------------------------------------------------------------------------------------


@functools.cache
def so3_generators(l: int) -> np.ndarray:
    r"""The real so(3) generators $(L_x, L_y, L_z)$ of degree `l`: float64 `[3, 2l+1, 2l+1]`,
    real antisymmetric, read-only, with $D_l(e^{t A_k}) = e^{t L_k}$ where $A_k$ is the
    $3 \times 3$ generator of rotations about Cartesian axis $k$ ($(A_k)_{ij} =
    -\varepsilon_{kij}$). They satisfy $[L_x, L_y] = L_z$ (cyclic), and for $l = 1$ they are the
    $A_k$ themselves.

    From the complex angular momentum $J$ ($J_z |\mu\rangle = \mu |\mu\rangle$,
    $J_\pm |\mu\rangle = \sqrt{l(l+1) - \mu(\mu \pm 1)}\, |\mu \pm 1\rangle$) in the real basis,
    $G(J) = Q^H (-i J) Q$; e3nn's real basis has its polar axis along y, and matching $l = 1$ to
    $A_k$ gives

    $$L_x = G(J_y), \qquad L_y = -G(J_z), \qquad L_z = -G(J_x).$$
    """

    _check_degree(l)
    mu = np.arange(-l, l + 1, dtype=np.float64)
    j_plus = np.diag(np.sqrt(l * (l + 1) - mu[:-1] * (mu[:-1] + 1)), k=-1).astype(np.complex128)
    j_x = (j_plus + j_plus.T) / 2
    j_y = (j_plus - j_plus.T) / 2j
    j_z = np.diag(mu).astype(np.complex128)
    q = change_of_basis_real_to_complex(l)

    def real_generator(j: np.ndarray) -> np.ndarray:
        return (np.conj(q.T) @ (-1j * j) @ q).real

    out = np.stack([real_generator(j_y), -real_generator(j_z), -real_generator(j_x)])
    out.flags.writeable = False
    return out


@functools.cache
def _exponential_coefficients(l: int, axis: int) -> np.ndarray:
    r"""Constant ``W`` [2(l+1), (2l+1)^2] with ``exp(t L) = reshape([cos(m t), sin(m t)]_m @ W)``
    for ``L = so3_generators(l)[axis]`` and ``m = 0..l``.

    L is real antisymmetric with eigenvalues ``i m``, ``m = -l..l`` (all distinct), so
    ``exp(t L) = sum_m e^{i m t} P_m`` with spectral projectors ``P_m`` (from one Hermitian
    eigendecomposition of ``i L``, whose eigenvalues are ``-m``). Pairing ``m`` with ``-m``
    (``P_-m = conj(P_m)``): ``exp(t L) = P_0 + sum_{m>0} 2 cos(m t) Re P_m - 2 sin(m t) Im P_m``.
    """
    generator = so3_generators(l)[axis]
    eigenvalues, vectors = np.linalg.eigh(1j * generator)
    ms = np.rint(-eigenvalues).astype(int)
    dim = 2 * l + 1
    weights = np.zeros((2 * (l + 1), dim * dim))
    for m, v in zip(ms, vectors.T, strict=True):
        if m < 0:
            continue
        projector = np.outer(v, np.conj(v))
        scale = 1.0 if m == 0 else 2.0
        weights[m] = scale * projector.real.reshape(-1)
        weights[l + 1 + m] = -scale * projector.imag.reshape(-1)
    weights.flags.writeable = False
    return weights


@functools.cache
def _frequencies(l: int) -> np.ndarray:
    out = np.arange(l + 1, dtype=np.float64)
    out.flags.writeable = False
    return out


def _exponential(l: int, axis: int, angle: Any) -> Any:
    """``exp(angle L_axis)`` [..., 2l+1, 2l+1] for angles [...], a trig polynomial in the angle."""
    xp = namespace(angle)
    phases = angle[..., None] * as_constant(_frequencies(l), like=angle)  # [..., l+1]
    trig = xp.concat([xp.cos(phases), xp.sin(phases)], axis=-1)  # [..., 2(l+1)]
    flat = trig @ as_constant(_exponential_coefficients(l, axis), like=angle)
    return xp.reshape(flat, (*angle.shape, 2 * l + 1, 2 * l + 1))


def _yxy_euler_angles(rotation: Any) -> tuple[Any, Any, Any]:
    r"""Angles (a, b, c) [...] with ``R = R_y(a) R_x(b) R_y(c)`` for proper rotations [..., 3, 3].

    The image of ``e_y`` is ``R e_y = (sin a sin b, cos b, cos a sin b)``, which gives a and b.
    Then ``R_y(c) = R_x(-b) R_y(-a) R`` and its first row, ``(cos c, 0, sin c)``, is the first row
    of ``R_y(-a) R`` = ``cos a R[0, :] - sin a R[2, :]``. Computing c from a (instead of from
    ``e_y^T R`` independently) keeps the product exact near gimbal lock (b -> 0 or pi), where a
    alone is ill-conditioned: any error in a is compensated by c.
    """
    xp = namespace(rotation)
    y_image = rotation[..., :, 1]
    x, y, z = y_image[..., 0], y_image[..., 1], y_image[..., 2]
    a = xp.atan2(x, z)
    b = xp.atan2(xp.sqrt(x * x + z * z), y)
    cos_a, sin_a = xp.cos(a), xp.sin(a)
    first_row = cos_a[..., None] * rotation[..., 0, :] - sin_a[..., None] * rotation[..., 2, :]
    c = xp.atan2(first_row[..., 2], first_row[..., 0])
    return a, b, c


def _determinant(matrix: Any) -> Any:
    """det of [..., 3, 3] matrices by the triple product of the rows (no linalg extension)."""
    r0, r1, r2 = matrix[..., 0, :], matrix[..., 1, :], matrix[..., 2, :]
    return (
        r0[..., 0] * (r1[..., 1] * r2[..., 2] - r1[..., 2] * r2[..., 1])
        - r0[..., 1] * (r1[..., 0] * r2[..., 2] - r1[..., 2] * r2[..., 0])
        + r0[..., 2] * (r1[..., 0] * r2[..., 1] - r1[..., 1] * r2[..., 0])
    )


def _check_rotations(rotation: Any) -> None:
    if rotation.ndim < 2 or tuple(rotation.shape[-2:]) != (3, 3):
        raise ValueError(f"rotations must have shape [..., 3, 3], got {tuple(rotation.shape)}")


def wigner_D(l: int, rotation: Array) -> Array:
    r"""The Wigner D matrix of degree `l` in e3nn's real basis, for proper rotations.

    Args:
        l: degree (>= 0).
        rotation: `[..., 3, 3]` proper rotation matrices (det +1), any Array-API backend,
            float32 or float64.

    Returns:
        `[..., 2l+1, 2l+1]` array of the same namespace, device and dtype, such that
            $Y_l(R x) = D_l(R)\, Y_l(x)$ for e3nn's real spherical harmonics (column vectors),
            and $D_1(R) = R$. It is a representation: $D(R_1 R_2) = D(R_1) D(R_2)$,
            $D(R^T) = D(R)^T$.

    Raises:
        ValueError: `l` is not a non-negative integer, `rotation` is not `[..., 3, 3]`, or a
            matrix is improper (det < 0: use `Irrep.D_from_matrix`, which applies the parity).

    Method: Y-X-Y Euler angles $R = R_y(a) R_x(b) R_y(c)$, then
    $D = \exp(a L_y) \exp(b L_x) \exp(c L_y)$ with the real generators of `so3_generators`; each
    exponential is a constant-coefficient polynomial in $\cos(m t), \sin(m t)$, $m = 0, \dots,
    l$, so only atan2, cos, sin and matmul touch the data. Orthogonality of the input is not
    checked.
    """
    _check_degree(l)
    _check_rotations(rotation)
    xp = namespace(rotation)
    if bool(xp.any(_determinant(rotation) < 0)):
        raise ValueError(
            "wigner_D: some matrices have det < 0 (improper); wigner_D takes proper rotations "
            "only, use Irrep.D_from_matrix for elements of O(3)"
        )
    a, b, c = _yxy_euler_angles(rotation)
    return _exponential(l, 1, a) @ _exponential(l, 0, b) @ _exponential(l, 1, c)
