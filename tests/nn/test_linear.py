"""Equivariant linear map: e3nn's o3.Linear reproduced from fixtures, an explicit formula,
finite differences, O(3) equivariance of the output and the VJPs, backends, float32, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.nn import EquivariantLinear
from allegro_ref.o3 import Irrep, Irreps
from tests.nn import assert_directional_derivatives
from tests.strategies import orthogonal_matrices, seeds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tp_fixtures.npz"
IRREPS_L3 = [Irrep(l, p) for l in range(4) for p in (1, -1)]


def assert_close(actual, expected, rtol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.max(np.abs(actual - expected), initial=0.0) <= rtol * np.max(
        np.abs(expected), initial=1e-300
    )


@pytest.mark.parametrize("case", ["e3nn_linear", "e3nn_linear_repeated", "e3nn_linear_path"])
def test_e3nn_linear_fixture(case):
    """o3.Linear with unmatched irreps on both sides, repeated input irreps (fan-in summed over
    both 0e entries) and path normalization, to 1e-12."""
    data = np.load(FIXTURES)
    f = lambda name: data[f"{case}/{name}"]  # noqa: E731
    lin = EquivariantLinear(str(f("irreps_in")), str(f("irreps_out")), str(f("path_normalization")))
    assert lin.weight_numel == f("weights").size
    out, cache = lin.forward(f("x"), f("weights"))
    assert_close(out, f("out"))
    grad_x, grad_w = lin.backward(cache, f("grad_out"))
    assert_close(grad_x, f("grad_x"))
    assert_close(grad_w, f("grad_weights"))


def test_explicit_formula(rng):
    """3x0e + 2x1o -> 2x0e + 1x1o + 1x2e: scalars mix with W/√3, vectors with V/√2 per
    component, and the 2e output (no 2e input) is zero."""
    lin = EquivariantLinear("3x0e+2x1o", "2x0e+1x1o+1x2e")
    weights = lin.init_weights(rng)
    w, v = weights[:6].reshape(3, 2), weights[6:].reshape(2, 1)
    x = rng.standard_normal((4, 9))
    out, _ = lin.forward(x, weights)
    assert_close(out[:, :2], x[:, :3] @ w / np.sqrt(3), rtol=1e-14)
    vectors = x[:, 3:].reshape(4, 2, 3)
    assert_close(out[:, 2:5], np.einsum("nuk,uw->nwk", vectors, v)[:, 0] / np.sqrt(2), rtol=1e-14)
    np.testing.assert_array_equal(out[:, 5:], 0.0)


@st.composite
def linear_problems(draw):
    """(lin, x, weights, rng): irreps with multiplicities 1-3 (l <= 3, repeated irreps allowed),
    either normalization, batch (n,) or (a, b)."""

    def irreps():
        entries = draw(
            st.lists(
                st.tuples(st.integers(1, 3), st.sampled_from(IRREPS_L3)), min_size=1, max_size=4
            )
        )
        return Irreps(entries)

    irreps_in = irreps()
    # make sure some irrep is shared, so the map is not identically zero
    irreps_out = irreps() + Irreps([(draw(st.integers(1, 3)), irreps_in[0].ir)])
    lin = EquivariantLinear(irreps_in, irreps_out, draw(st.sampled_from(["element", "path"])))
    rng = np.random.default_rng(draw(seeds))
    batch = draw(st.sampled_from([(3,), (2, 2)]))
    return lin, rng.standard_normal((*batch, irreps_in.dim)), lin.init_weights(rng), rng


@given(problem=linear_problems())
def test_backward_matches_finite_differences(problem):
    lin, x, weights, rng = problem
    out, cache = lin.forward(x, weights)
    c = rng.standard_normal(out.shape)

    def loss(inputs):
        y, _ = lin.forward(*inputs)
        return float(np.sum(c * y) + 0.5 * np.sum(y**2))

    grads = lin.backward(cache, c + out)
    assert_directional_derivatives(loss, [x, weights], grads, rng, step=1e-4)


@given(problem=linear_problems(), rotation=orthogonal_matrices())
def test_equivariance_of_output_and_vjps(problem, rotation):
    lin, x, weights, rng = problem
    d_in, d_out = lin.irreps_in.D_from_matrix(rotation), lin.irreps_out.D_from_matrix(rotation)
    out, cache = lin.forward(x, weights)
    g = rng.standard_normal(out.shape)
    grad_x, grad_w = lin.backward(cache, g)
    out_r, cache_r = lin.forward(x @ d_in.T, weights)
    grad_x_r, grad_w_r = lin.backward(cache_r, g @ d_out.T)
    assert_close(out_r, out @ d_out.T, rtol=1e-12)
    assert_close(grad_x_r, grad_x @ d_in.T, rtol=1e-12)
    assert_close(grad_w_r, grad_w, rtol=1e-12)


def test_backends_agree(backend, rng):
    lin = EquivariantLinear("2x0e+3x1o+1x2e+2x0e", "3x0e+2x1o+1x3o")
    x = rng.standard_normal((5, lin.irreps_in.dim))
    weights = lin.init_weights(rng)
    out, cache = lin.forward(x, weights)
    g = rng.standard_normal(out.shape)
    grads = lin.backward(cache, g)
    out_b, cache_b = lin.forward(backend.asarray(x), backend.asarray(weights))
    grads_b = lin.backward(cache_b, backend.asarray(g))
    for ours, theirs in zip((out_b, *grads_b), (out, *grads), strict=True):
        assert_close(backend.to_numpy(ours), theirs, rtol=1e-13)


def test_float32(rng):
    lin = EquivariantLinear("4x0e+2x1o", "2x0e+3x1o")
    x, weights = rng.standard_normal((6, 10)), lin.init_weights(rng)
    out, cache = lin.forward(x, weights)
    g = rng.standard_normal(out.shape)
    grads = lin.backward(cache, g)
    out32, cache32 = lin.forward(x.astype(np.float32), weights.astype(np.float32))
    grads32 = lin.backward(cache32, g.astype(np.float32))
    for low, high in zip((out32, *grads32), (out, *grads), strict=True):
        assert low.dtype == np.float32
        assert_close(low, high, rtol=1e-5)


def test_no_shared_irrep_gives_zero_map(rng):
    lin = EquivariantLinear("2x1o", "3x1e")
    assert lin.weight_numel == 0
    out, cache = lin.forward(rng.standard_normal((2, 6)), np.zeros(0))
    np.testing.assert_array_equal(out, np.zeros((2, 9)))
    grad_x, grad_w = lin.backward(cache, rng.standard_normal((2, 9)))
    np.testing.assert_array_equal(grad_x, np.zeros((2, 6)))
    assert grad_w.shape == (0,)


def test_errors(rng):
    with pytest.raises(ValueError, match="path_normalization 'none'"):
        EquivariantLinear("0e", "0e", "none")
    lin = EquivariantLinear("2x0e+1o", "3x0e")
    x, w = rng.standard_normal((4, 5)), lin.init_weights(rng)
    with pytest.raises(ValueError, match=r"x has shape \(4, 4\) but its last axis must be 5"):
        lin.forward(x[:, :4], w)
    with pytest.raises(ValueError, match=r"weights have shape \(5,\) .* expects \(6,\)"):
        lin.forward(x, w[:5])
    with pytest.raises(ValueError, match="dtypes differ"):
        lin.forward(x.astype(np.float32), w)
    _, cache = lin.forward(x, w)
    with pytest.raises(ValueError, match=r"grad_out has shape \(4, 2\) .* \(4, 3\)"):
        lin.backward(cache, np.zeros((4, 2)))
