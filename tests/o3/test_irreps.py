# ruff: noqa: E741  (l is the degree of a representation)
"""Irrep / MulIrrep / Irreps: e3nn's grammar and semantics, and the O(3) representation matrices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.o3 import Irrep, Irreps, MulIrrep
from tests.strategies import orthogonal_matrices

irreps_st = st.builds(Irrep, st.integers(0, 6), st.sampled_from([1, -1]))  # any irrep with l <= 6
entries_st = st.lists(st.tuples(st.integers(0, 5), irreps_st), max_size=6)


# --------------------------------------------------------------------------------------------
# Irrep
# --------------------------------------------------------------------------------------------


def test_irrep_construction_and_properties():
    ir = Irrep("2o")
    assert (ir.l, ir.p, ir.dim) == (2, -1, 5)
    assert ir == Irrep(2, -1) == Irrep((2, -1)) == Irrep(ir)
    assert ir == (2, -1) and ir == "2o" and "2o" == ir
    assert ir != "2e" and ir != Irrep(2, 1) and ir != "not an irrep"
    assert Irrep(" 3e ") == Irrep(3, 1)
    assert Irrep("1y") == "1o" and Irrep("2y") == "2e"
    assert str(ir) == "2o" and repr(ir) == "Irrep('2o')"
    assert eval(repr(ir)) == ir
    assert len({Irrep("1o"), Irrep(1, -1), Irrep("1e")}) == 2
    with pytest.raises(AttributeError):
        ir.l = 3  # frozen


@pytest.mark.parametrize(
    "args", [("1x",), ("o",), ("1",), ("-1e",), ("1.5e",), (-1, 1), (1, 0), (1.0, 1), (None,)]
)
def test_irrep_rejects_bad_input(args):
    with pytest.raises(ValueError):
        Irrep(*args)


def test_irrep_error_names_the_bad_string():
    with pytest.raises(ValueError, match="'3z'"):
        Irrep("3z")


def test_irrep_order_is_e3nn_tuple_order():
    """e3nn compares irreps as (l, p) tuples: odd before even at equal l."""
    shuffled = [Irrep(s) for s in ["2e", "0e", "1e", "1o", "0o", "2o"]]
    assert sorted(shuffled) == [Irrep(s) for s in ["0o", "0e", "1o", "1e", "2o", "2e"]]
    assert Irrep("0o") < Irrep("0e") < Irrep("1o")


@given(a=irreps_st, b=irreps_st)
def test_irrep_product_follows_clebsch_gordan_rule(a, b):
    product = list(a * b)
    assert [ir.l for ir in product] == list(range(abs(a.l - b.l), a.l + b.l + 1))
    assert all(ir.p == a.p * b.p for ir in product)
    assert sum(ir.dim for ir in product) == a.dim * b.dim


def test_irrep_arithmetic_builds_irreps():
    assert 3 * Irrep("1o") == Irreps("3x1o")
    assert Irrep("0e") + Irrep("1o") == Irreps("0e + 1o")
    assert Irrep("0e") + "2x1o" == Irreps("0e + 2x1o")


# --------------------------------------------------------------------------------------------
# Irreps: construction and string grammar
# --------------------------------------------------------------------------------------------


def test_irreps_parse_e3nn_grammar():
    irreps = Irreps(" 8x0e+ 8x1o +4x2e ")
    assert list(irreps) == [
        MulIrrep(8, Irrep("0e")),
        MulIrrep(8, Irrep("1o")),
        MulIrrep(4, Irrep("2e")),
    ]
    assert Irreps("1o") == Irreps("1x1o") == Irreps([(1, "1o")])
    assert Irreps("0x1e + 2x2y") == ((0, (1, 1)), (2, (2, 1)))
    assert Irreps("") == Irreps() == Irreps([]) == ""
    assert len(Irreps("")) == 0


def test_irreps_from_lists_of_every_form():
    expected = Irreps("2x0e+1x1o+3x2e+1x0o+1x1e+2x3o")
    mixed = [
        (2, Irrep("0e")),
        Irrep("1o"),
        (3, "2e"),
        "0o",
        MulIrrep(1, Irrep("1e")),
        Irreps("2x3o"),
    ]
    assert Irreps(mixed) == expected
    assert Irreps([(2, (0, 1)), (1, (1, -1))]) == "2x0e+1x1o"
    assert Irreps(Irrep("2e")) == "1x2e"
    assert Irreps(expected) is expected


@pytest.mark.parametrize(
    "text, token",
    [
        ("8x0e + 8x1q", "8x1q"),
        ("8x0e + ", ""),
        ("ax1o", "ax1o"),
        ("2x", "2x"),
        ("x1o", "x1o"),
        ("1o 2e", "1o 2e"),
        ("2.5x1o", "2.5x1o"),
    ],
)
def test_irreps_error_names_the_bad_token(text, token):
    with pytest.raises(ValueError, match=f"cannot parse '{token}'"):
        Irreps(text)


@pytest.mark.parametrize(
    "bad", ["-1x1o", [(-1, "1o")], [(1.0, "1o")], [(1, 2, 3)], [3], 5, [("1o", 2)]]
)
def test_irreps_reject_bad_input(bad):
    with pytest.raises(ValueError):
        Irreps(bad)


@given(entries=entries_st)
def test_irreps_str_and_repr_round_trip(entries):
    irreps = Irreps(entries)
    assert Irreps(str(irreps)) == irreps
    assert irreps == str(irreps)
    assert eval(repr(irreps)) == irreps
    assert [(entry.mul, entry.ir) for entry in irreps] == entries
    assert str(irreps) == "+".join(f"{mul}x{ir}" for mul, ir in entries)


@given(entries=entries_st)
def test_irreps_lmax_is_the_largest_l_present(entries):
    irreps = Irreps(entries)
    if irreps.ls:
        assert irreps.lmax == max(irreps.ls) == irreps.simplify().lmax
    else:
        with pytest.raises(ValueError, match="empty"):
            _ = irreps.lmax


@pytest.mark.parametrize("text", ["1x0e+2x1o", "", "0x1o", "1x0e+0x2e+3x1e", "0e + 2x1o"])
def test_irreps_repr_parses_back(text):
    """repr is eval-able and holds the e3nn string, which parses back: empty Irreps and
    multiplicity-0 entries included; entries and single irreps too."""
    irreps = Irreps(text)
    assert eval(repr(irreps)) == irreps
    assert repr(irreps) == f"Irreps('{irreps}')" and Irreps(str(irreps)) == irreps
    for entry in irreps:
        assert eval(repr(entry)) == entry and Irreps(str(entry)) == Irreps([entry])
        assert eval(repr(entry.ir)) == entry.ir and Irrep(str(entry.ir)) == entry.ir


def test_irreps_equality_and_hash():
    a = Irreps("2x0e+1x1o")
    assert a == "2x0e + 1x1o" and a != "1x1o+2x0e" and a != "2x0e+1o+0x2e"
    assert a != "not irreps" and a != 3
    assert hash(a) == hash(Irreps("2x0e + 1o"))
    assert {a: 1}[Irreps("2x0e+1x1o")] == 1


# --------------------------------------------------------------------------------------------
# Irreps: sizes and rearrangements
# --------------------------------------------------------------------------------------------


def test_irreps_sizes():
    irreps = Irreps("8x0e + 8x1o + 4x2e + 0x3o")
    assert irreps.dim == 8 + 24 + 20
    assert irreps.num_irreps == 20
    assert irreps.lmax == 2  # the 0x3o entry holds no irrep (e3nn: the largest l present)
    assert irreps.ls == [0] * 8 + [1] * 8 + [2] * 4
    assert irreps.slices() == [slice(0, 8), slice(8, 32), slice(32, 52), slice(52, 52)]
    assert irreps.count("1o") == 8 and irreps.count("1e") == 0
    assert "2e" in irreps and Irrep("3o") in irreps and "3e" not in irreps
    assert MulIrrep(4, Irrep("2e")).dim == 20 and str(MulIrrep(4, Irrep("2e"))) == "4x2e"
    with pytest.raises(ValueError, match="empty"):
        _ = Irreps("").lmax
    with pytest.raises(ValueError, match="empty"):
        _ = Irreps("0x1o+0x2e").lmax
    assert Irreps("0x4e+1x1o+0x2o").lmax == 1


@given(entries=entries_st)
def test_irreps_slices_tile_the_feature_vector(entries):
    irreps = Irreps(entries)
    slices = irreps.slices()
    assert len(slices) == len(irreps)
    assert [s.start for s in slices] == [0, *(s.stop for s in slices)][: len(slices)]
    assert [s.stop - s.start for s in slices] == [mul * ir.dim for mul, ir in irreps]
    assert (slices[-1].stop if slices else 0) == irreps.dim


def test_irreps_simplify_examples():
    assert Irreps("1e + 1e + 0e").simplify() == "2x1e+1x0e"
    assert Irreps("1e + 1e + 0e + 1e").simplify() == "2x1e+1x0e+1x1e"  # no reordering
    assert Irreps("0x1o + 2x0e + 0x2e + 3x0e").simplify() == "5x0e"
    assert Irreps("").simplify() == ""


@given(entries=entries_st)
def test_irreps_simplify_properties(entries):
    irreps = Irreps(entries)
    simple = irreps.simplify()
    assert simple.dim == irreps.dim and simple.ls == irreps.ls
    assert all(entry.mul > 0 for entry in simple)
    assert all(a.ir != b.ir for a, b in zip(simple, simple[1:], strict=False))
    assert simple.simplify() == simple


def test_irreps_sort_examples_from_e3nn():
    assert Irreps("1e + 0e + 1e").sort().irreps == "1x0e+1x1e+1x1e"
    assert Irreps("2o + 1e + 0e + 1e").sort().p == (3, 1, 0, 2)
    assert Irreps("2o + 1e + 0e + 1e").sort().inv == (2, 1, 3, 0)
    assert Irreps("1e + 0e + 1e + 0x2e").regroup() == "1x0e+2x1e"


@given(entries=entries_st)
def test_irreps_sort_properties(entries):
    irreps = Irreps(entries)
    out, p, inv = irreps.sort()
    assert sorted(p) == list(range(len(irreps)))
    assert all(out[p[i]] == irreps[i] for i in range(len(irreps)))
    assert all(out[j] == irreps[inv[j]] for j in range(len(irreps)))
    assert [entry.ir for entry in out] == sorted(entry.ir for entry in irreps)
    regrouped = irreps.regroup()
    assert [entry.ir for entry in regrouped] == sorted({entry.ir for entry in irreps if entry.mul})


def test_irreps_tuple_protocol():
    irreps = Irreps("2x0e + 1o + 3x2e")
    assert len(irreps) == 3
    assert irreps[1] == MulIrrep(1, Irrep("1o")) and irreps[1].ir.l == 1
    assert isinstance(irreps[1:], Irreps) and irreps[1:] == "1x1o+3x2e"
    assert irreps[::-1] == "3x2e+1x1o+2x0e"
    assert irreps + "0o" == "2x0e+1x1o+3x2e+1x0o"
    assert "0o" + irreps == "1x0o+2x0e+1x1o+3x2e"
    assert Irreps("0e+1o") * 2 == 2 * Irreps("0e+1o") == "0e+1o+0e+1o"
    assert (Irreps("2x1e") * 3).simplify() == "6x1e"
    with pytest.raises(TypeError):
        Irreps("0e") * Irreps("0e")
    for (mul, (l, p)), expected in zip(irreps, [(2, 0, 1), (1, 1, -1), (3, 2, 1)], strict=True):
        assert (mul, l, p) == expected


def test_spherical_harmonics_irreps():
    assert Irreps.spherical_harmonics(3) == "1x0e+1x1o+1x2e+1x3o"
    assert Irreps.spherical_harmonics(4, p=1) == "0e+1e+2e+3e+4e"
    assert Irreps.spherical_harmonics(0) == "0e"
    with pytest.raises(ValueError, match="parity"):
        Irreps.spherical_harmonics(2, p=0)


# --------------------------------------------------------------------------------------------
# Representation matrices
# --------------------------------------------------------------------------------------------


def test_irreps_D_is_block_diagonal(rng):
    irreps = Irreps("2x0e + 1o + 0x3e + 2x2o + 1x1e")
    matrices = np.stack([-np.eye(3), np.eye(3)])
    d = irreps.D_from_matrix(matrices)
    assert d.shape == (2, irreps.dim, irreps.dim)
    # inversion: D(-I) = diag(p of each copy); identity: D(I) = I
    parities = np.concatenate([[entry.ir.p] * entry.ir.dim * entry.mul for entry in irreps])
    np.testing.assert_allclose(d[0], np.diag(parities), rtol=0, atol=1e-14)
    np.testing.assert_allclose(d[1], np.eye(irreps.dim), rtol=0, atol=1e-14)


@given(matrix=orthogonal_matrices())
def test_irreps_D_blocks_are_the_irrep_matrices(matrix):
    irreps = Irreps("2x0o + 1x1o + 2x2e + 1x1e")
    d = irreps.D_from_matrix(matrix)
    offset = 0
    for mul, ir in irreps:
        expected = ir.D_from_matrix(matrix)
        for _ in range(mul):
            block = slice(offset, offset + ir.dim)
            np.testing.assert_array_equal(d[block, block], expected)
            d[block, block] = 0.0
            offset += ir.dim
    np.testing.assert_array_equal(d, 0.0)  # nothing outside the diagonal blocks


@given(r1=orthogonal_matrices(), r2=orthogonal_matrices())
def test_irreps_D_is_a_representation_of_o3(r1, r2):
    irreps = Irreps("0o + 1o + 1e + 2o + 3e")
    d1, d2 = irreps.D_from_matrix(r1), irreps.D_from_matrix(r2)
    np.testing.assert_allclose(irreps.D_from_matrix(r1 @ r2), d1 @ d2, rtol=0, atol=1e-13)
    np.testing.assert_allclose(d1 @ d1.T, np.eye(irreps.dim), rtol=0, atol=1e-13)


def test_irreps_D_of_empty_irreps():
    assert Irreps("").D_from_matrix(np.eye(3)[None].repeat(4, 0)).shape == (4, 0, 0)


def test_irreps_D_on_every_backend(backend, rng):
    irreps = Irreps("2x0e + 1o + 2e + 0o")
    rotations = np.linalg.qr(rng.standard_normal((5, 3, 3)))[0]
    rotations = rotations * np.sign(np.linalg.det(rotations))[:, None, None]  # proper
    matrices = np.concatenate([rotations, -rotations])
    for dtype, atol in (("float64", 1e-13), ("float32", 1e-5)):
        out = irreps.D_from_matrix(backend.asarray(matrices, dtype=dtype))
        assert out.dtype == getattr(backend.xp, dtype)
        expected = irreps.D_from_matrix(matrices)
        np.testing.assert_allclose(backend.to_numpy(out), expected, rtol=0, atol=atol)
