# ruff: noqa: E741  (l is the degree of a representation)
"""Wigner 3j symbols and D matrices: exact references (sympy, scipy.linalg.expm, e3nn fixtures,
closed forms) and the representation-theory identities they must satisfy."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
import scipy.linalg
import sympy
from hypothesis import given
from hypothesis import strategies as st
from sympy.physics.wigner import clebsch_gordan

from allegro_ref.o3 import Irrep, wigner_3j, wigner_D
from allegro_ref.o3._wigner import change_of_basis_real_to_complex, so3_generators
from tests.strategies import haar_rotation, orthogonal_matrices, seeds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "e3nn_wigner.npz"
LEVI_CIVITA = np.array(
    [
        [[float((i - j) * (j - k) * (k - i) / 2) for k in range(3)] for j in range(3)]
        for i in range(3)
    ]
)


def triples(l_max: int):
    """All (l1, l2, l3) with every l <= l_max allowed by the triangle rule."""
    return [
        (l1, l2, l3)
        for l1, l2 in itertools.product(range(l_max + 1), repeat=2)
        for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1)
    ]


@st.composite
def triangle_triples(draw, l_max: int):
    l1 = draw(st.integers(0, l_max))
    l2 = draw(st.integers(0, l_max))
    l3 = draw(st.integers(abs(l1 - l2), min(l1 + l2, l_max)))
    return l1, l2, l3


def rotate_3j(c: np.ndarray, d1: np.ndarray, d2: np.ndarray, d3: np.ndarray) -> np.ndarray:
    """sum_{i'j'k'} C[i', j', k'] D1[i', i] D2[j', j] D3[k', k]."""
    return np.einsum("abc,ai,bj,ck->ijk", c, d1, d2, d3)


def cartesian_generator(axis: int) -> np.ndarray:
    """A_axis, (A_k)_ij = -eps_kij: A_k v = e_k x v, the generator of rotations about e_k."""
    return -LEVI_CIVITA[axis]


def axis_rotation(axis: int, angle: float) -> np.ndarray:
    """The 3x3 rotation exp(angle A_axis) by ``angle`` about a Cartesian axis (right-handed)."""
    return scipy.linalg.expm(angle * cartesian_generator(axis))


# --------------------------------------------------------------------------------------------
# Wigner 3j
# --------------------------------------------------------------------------------------------


def sympy_real_3j(l1: int, l2: int, l3: int) -> tuple[np.ndarray, np.ndarray]:
    """(real part, imaginary part) of sympy's exact Clebsch-Gordan / sqrt(2 l3 + 1) carried to
    the real basis by the documented change of basis Q (float64 after the exact CG)."""
    cg = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1, m2 in itertools.product(range(-l1, l1 + 1), range(-l2, l2 + 1)):
        if abs(m1 + m2) <= l3:
            exact = clebsch_gordan(l1, l2, l3, m1, m2, m1 + m2) / sympy.sqrt(2 * l3 + 1)
            cg[l1 + m1, l2 + m2, l3 + m1 + m2] = float(exact)
    q1, q2, q3 = (change_of_basis_real_to_complex(l) for l in (l1, l2, l3))
    real = np.einsum("xyz,xa,yb,zc->abc", cg, q1, q2, np.conj(q3))
    return real.real, real.imag


@pytest.mark.parametrize(
    "l1, l2, l3", triples(4) + [(6, 6, 6), (5, 6, 8), (8, 3, 6), (7, 8, 2), (8, 8, 8)]
)
def test_3j_equals_sympy_clebsch_gordan_in_real_basis(l1, l2, l3):
    real, imag = sympy_real_3j(l1, l2, l3)
    np.testing.assert_allclose(imag, 0.0, atol=1e-15)
    np.testing.assert_allclose(wigner_3j(l1, l2, l3), real, rtol=0, atol=1e-15)


@pytest.mark.parametrize("l1, l2, l3", triples(4))
def test_3j_equals_e3nn_fixture(l1, l2, l3):
    expected = np.load(FIXTURES)[f"w3j/{l1}_{l2}_{l3}"]
    np.testing.assert_allclose(wigner_3j(l1, l2, l3), expected, rtol=0, atol=1e-13)


@given(triple=triangle_triples(8))
def test_3j_has_unit_frobenius_norm(triple):
    assert np.linalg.norm(wigner_3j(*triple)) == pytest.approx(1.0, abs=1e-14)


@given(triple=triangle_triples(5), seed=seeds)
def test_3j_is_invariant_under_rotations(triple, seed):
    rotation = haar_rotation(np.random.default_rng(seed))
    c = wigner_3j(*triple)
    d1, d2, d3 = (wigner_D(l, rotation) for l in triple)
    np.testing.assert_allclose(rotate_3j(c, d1, d2, d3), c, rtol=0, atol=1e-13)


@given(
    triple=triangle_triples(4),
    matrix=orthogonal_matrices(),
    p1=st.sampled_from([1, -1]),
    p2=st.sampled_from([1, -1]),
)
def test_3j_is_invariant_under_o3_when_parities_match(triple, matrix, p1, p2):
    """With p3 = p1 p2 (the tensor-product rule) C is invariant under improper elements too."""
    l1, l2, l3 = triple
    d1, d2, d3 = (
        Irrep(l, p).D_from_matrix(matrix) for l, p in zip(triple, (p1, p2, p1 * p2), strict=True)
    )
    c = wigner_3j(l1, l2, l3)
    np.testing.assert_allclose(rotate_3j(c, d1, d2, d3), c, rtol=0, atol=1e-13)


@pytest.mark.parametrize("l1, l2, l3", triples(4))
def test_3j_is_annihilated_by_the_generators(l1, l2, l3):
    """Infinitesimal invariance, exact (no sampling): for each axis k,
    sum_i' C[i'jk'] L1[i', i] + ... over the three slots vanishes."""
    c = wigner_3j(l1, l2, l3)
    for g1, g2, g3 in zip(*(so3_generators(l) for l in (l1, l2, l3)), strict=True):
        total = (
            np.einsum("ajk,ai->ijk", c, g1)
            + np.einsum("iak,aj->ijk", c, g2)
            + np.einsum("ija,ak->ijk", c, g3)
        )
        np.testing.assert_allclose(total, 0.0, atol=1e-13)


@given(triple=triangle_triples(6), permutation=st.permutations([0, 1, 2]))
def test_3j_permutation_symmetry(triple, permutation):
    """C(l_s(1), l_s(2), l_s(3)) = sign(s)^(l1+l2+l3) C(l1, l2, l3) with axes permuted by s."""
    permuted = wigner_3j(*(triple[i] for i in permutation))
    inversions = sum(1 for a, b in itertools.combinations(permutation, 2) if a > b)  # parity of s
    sign = (-1) ** (sum(triple) * inversions)
    np.testing.assert_allclose(
        permuted, sign * np.transpose(wigner_3j(*triple), permutation), rtol=0, atol=1e-15
    )


@given(l1=st.integers(0, 5), l2=st.integers(0, 5))
def test_3j_orthogonality(l1, l2):
    """sum_{ij} C(l1,l2,l3)[i,j,k] C(l1,l2,l3')[i,j,k'] = delta_{l3 l3'} delta_{kk'} / (2l3+1)."""
    ls = range(abs(l1 - l2), l1 + l2 + 1)
    stacked = np.concatenate(
        [wigner_3j(l1, l2, l3).reshape(-1, 2 * l3 + 1) * math.sqrt(2 * l3 + 1) for l3 in ls],
        axis=1,
    )
    # completeness too: the stacked matrix is square ((2l1+1)(2l2+1)) and orthogonal
    np.testing.assert_allclose(stacked.T @ stacked, np.eye(stacked.shape[1]), atol=1e-14)
    np.testing.assert_allclose(stacked @ stacked.T, np.eye(stacked.shape[0]), atol=1e-14)


def test_3j_closed_forms():
    np.testing.assert_allclose(wigner_3j(1, 1, 0)[:, :, 0], np.eye(3) / math.sqrt(3), atol=1e-16)
    np.testing.assert_allclose(wigner_3j(1, 1, 1), LEVI_CIVITA / math.sqrt(6), atol=1e-16)
    for l in range(9):
        identity = np.eye(2 * l + 1) / math.sqrt(2 * l + 1)
        np.testing.assert_allclose(wigner_3j(0, l, l)[0], identity, atol=1e-16)
        np.testing.assert_allclose(wigner_3j(l, 0, l)[:, 0], identity, atol=1e-16)
        np.testing.assert_allclose(wigner_3j(l, l, 0)[:, :, 0], identity, atol=1e-16)


def test_3j_is_cached_read_only_float64():
    c = wigner_3j(2, 3, 4)
    assert c is wigner_3j(2, 3, 4)
    assert c.dtype == np.float64 and c.shape == (5, 7, 9)
    with pytest.raises(ValueError):
        c[0, 0, 0] = 1.0


@pytest.mark.parametrize("bad", [(1, 1, 3), (0, 2, 1), (4, 1, 2), (-1, 1, 1), (1.0, 1, 1)])
def test_3j_rejects_invalid_triples(bad):
    with pytest.raises(ValueError, match=r"triangle|non-negative integer"):
        wigner_3j(*bad)


def test_3j_error_names_the_triple():
    with pytest.raises(ValueError, match=r"wigner_3j\(1, 1, 3\)"):
        wigner_3j(1, 1, 3)


# --------------------------------------------------------------------------------------------
# Real basis and generators
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("l", range(9))
def test_change_of_basis_is_unitary(l):
    q = change_of_basis_real_to_complex(l)
    np.testing.assert_allclose(np.conj(q.T) @ q, np.eye(2 * l + 1), atol=1e-15)


@pytest.mark.parametrize("l", range(9))
def test_generators_are_a_real_representation_of_so3(l):
    lx, ly, lz = so3_generators(l)
    for g in (lx, ly, lz):
        np.testing.assert_allclose(g, -g.T, atol=1e-15)
    np.testing.assert_allclose(lx @ ly - ly @ lx, lz, atol=1e-13)
    np.testing.assert_allclose(ly @ lz - lz @ ly, lx, atol=1e-13)
    np.testing.assert_allclose(lz @ lx - lx @ lz, ly, atol=1e-13)
    casimir = lx @ lx + ly @ ly + lz @ lz
    np.testing.assert_allclose(casimir, -l * (l + 1) * np.eye(2 * l + 1), atol=1e-12)


def test_generators_of_degree_one_are_the_cartesian_ones():
    expected = np.stack([cartesian_generator(k) for k in range(3)])
    np.testing.assert_allclose(so3_generators(1), expected, atol=1e-15)
    np.testing.assert_allclose(axis_rotation(2, math.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-15)


# --------------------------------------------------------------------------------------------
# Wigner D
# --------------------------------------------------------------------------------------------


def random_rotations(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([haar_rotation(rng) for _ in range(n)])


def exact_exponential(matrix: np.ndarray) -> np.ndarray:
    """expm in 30-digit arithmetic (mpmath), rounded to float64: scipy.linalg.expm loses up to
    ~1e-13 on these generators of norm ~l * pi, more than the error of wigner_D itself."""
    with mpmath.workdps(30):
        return np.array(mpmath.expm(mpmath.matrix(matrix)).tolist(), dtype=np.float64)


@pytest.mark.parametrize("l", [0, 1, 2, 3, 5, 8])
@pytest.mark.parametrize("axis", range(3))
def test_D_of_an_axis_rotation_is_the_exponential_of_the_generator(l, axis):
    angles = [-2.9, 0.0, 1.7, math.pi]
    rotations = np.stack([axis_rotation(axis, t) for t in angles])
    expected = np.stack([exact_exponential(t * so3_generators(l)[axis]) for t in angles])
    np.testing.assert_allclose(wigner_D(l, rotations), expected, rtol=0, atol=1e-14)


@given(seed=seeds)
def test_D_of_degree_one_is_the_rotation(seed):
    rotations = random_rotations(seed, 4)
    np.testing.assert_allclose(wigner_D(1, rotations), rotations, rtol=0, atol=4e-15)
    np.testing.assert_array_equal(wigner_D(0, rotations), np.ones((4, 1, 1)))


@given(seed=seeds, l=st.integers(0, 8))
def test_D_is_an_orthogonal_representation(seed, l):
    r1, r2 = random_rotations(seed, 2)
    d1, d2, d12 = wigner_D(l, r1), wigner_D(l, r2), wigner_D(l, r1 @ r2)
    identity = np.eye(2 * l + 1)
    np.testing.assert_allclose(d1 @ d1.T, identity, rtol=0, atol=1e-13)
    np.testing.assert_allclose(d12, d1 @ d2, rtol=0, atol=1e-13)
    np.testing.assert_allclose(wigner_D(l, r1.T), d1.T, rtol=0, atol=1e-13)
    np.testing.assert_allclose(wigner_D(l, np.eye(3)), identity, rtol=0, atol=1e-14)


def test_D_of_degree_two_rotates_the_e3nn_harmonics(rng):
    """Y_2(R x) = D_2(R) Y_2(x) with e3nn's 'component' harmonics of degree 2 written out."""

    def y2(v):
        x, y, z = v
        s15, s5 = math.sqrt(15), math.sqrt(5)
        return np.array(
            [s15 * x * z, s15 * x * y, s5 * (y * y - (x * x + z * z) / 2), s15 * y * z,
             s15 / 2 * (z * z - x * x)]
        )  # fmt: skip

    for rotation in random_rotations(7, 5):
        v = rng.standard_normal(3)
        v /= np.linalg.norm(v)
        np.testing.assert_allclose(y2(rotation @ v), wigner_D(2, rotation) @ y2(v), atol=1e-13)


@pytest.mark.parametrize("beta", [0.0, 1e-12, 1e-7, math.pi - 1e-7, math.pi - 1e-12, math.pi])
@pytest.mark.parametrize("l", [1, 3, 6])
def test_D_is_accurate_near_gimbal_lock(beta, l):
    """At and near b = 0, pi of R = R_y(a) R_x(b) R_y(c), the Euler angles a and c are
    ill-conditioned; D must not be. Checked against the product of two generic rotations."""
    target = axis_rotation(1, 0.9) @ axis_rotation(0, beta) @ axis_rotation(1, -2.2)
    np.testing.assert_allclose(wigner_D(1, target), target, rtol=0, atol=4e-15)
    r1 = haar_rotation(np.random.default_rng(3))
    expected = wigner_D(l, r1) @ wigner_D(l, r1.T @ target)
    np.testing.assert_allclose(wigner_D(l, target), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("ir", [f"{l}{p}" for l in range(5) for p in "eo"])
def test_D_from_matrix_equals_e3nn_fixture(ir):
    fixtures = np.load(FIXTURES)
    np.testing.assert_allclose(
        Irrep(ir).D_from_matrix(fixtures["rotations"]), fixtures[f"D/{ir}"], rtol=0, atol=1e-13
    )


@given(matrix=orthogonal_matrices(), l=st.integers(0, 5), p=st.sampled_from([1, -1]))
def test_irrep_D_handles_parity(matrix, l, p):
    d = Irrep(l, p).D_from_matrix(matrix)
    proper = matrix * np.sign(np.linalg.det(matrix))
    factor = p if np.linalg.det(matrix) < 0 else 1
    np.testing.assert_allclose(d, factor * wigner_D(l, proper), rtol=0, atol=1e-15)
    inversion = Irrep(l, p).D_from_matrix(-np.eye(3))
    np.testing.assert_allclose(inversion, p * np.eye(2 * l + 1), rtol=0, atol=1e-14)


def test_D_rejects_improper_and_misshapen_matrices():
    with pytest.raises(ValueError, match="det < 0"):
        wigner_D(2, np.stack([np.eye(3), -np.eye(3)]))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        wigner_D(2, np.eye(4))
    with pytest.raises(ValueError, match="non-negative integer"):
        wigner_D(-1, np.eye(3))


@pytest.mark.parametrize("l", [0, 1, 2, 5])
def test_D_on_every_backend(backend, l):
    rotations = random_rotations(11, 6).reshape(2, 3, 3, 3)
    expected = wigner_D(l, rotations)
    out = wigner_D(l, backend.asarray(rotations))
    assert out.shape == (2, 3, 2 * l + 1, 2 * l + 1)
    assert out.dtype == backend.xp.float64
    np.testing.assert_allclose(backend.to_numpy(out), expected, rtol=0, atol=1e-13)
    improper = backend.asarray(-rotations)
    np.testing.assert_allclose(
        backend.to_numpy(Irrep(l, -1).D_from_matrix(improper)), -expected, rtol=0, atol=1e-13
    )


@pytest.mark.parametrize("l", [1, 4, 8])
def test_D_in_float32(backend, l):
    rotations = random_rotations(5, 8)
    out = wigner_D(l, backend.asarray(rotations, dtype="float32"))
    assert out.dtype == backend.xp.float32
    error = np.abs(backend.to_numpy(out).astype(np.float64) - wigner_D(l, rotations)).max()
    assert error < 1e-5
