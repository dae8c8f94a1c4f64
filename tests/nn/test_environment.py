"""The environment blocks against their plain counterparts, for every grouping of edges (sorted
and uniform, unsorted, variable counts, atoms without edges, no edges at all): the density
against irrep_weighted_forward + scatter_sum, EnvironmentTensorProduct (the per-atom fold)
against ChannelwiseTensorProduct on the gathered environment (both weight modes); float32, both
backends, finite differences, group_edges, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.backend import segment_sum
from allegro_ref.nn import ChannelwiseTensorProduct
from allegro_ref.nn.environment import (
    EnvironmentTensorProduct,
    environment_density_backward,
    environment_density_forward,
    group_edges,
)
from allegro_ref.nn.irrep_weights import irrep_weighted_backward, irrep_weighted_forward
from allegro_ref.o3 import Irreps
from tests.nn import assert_directional_derivatives
from tests.strategies import seeds

SH2, SH3 = "0e+1o+2e", "0e+1o+2e+3o"
PARITY2 = "0e+1e+1o+2e+2o"
# (irreps of x, irreps of the environment, irreps of the output): Allegro's layers
LAYERS = [
    (SH2, SH2, SH2),
    (SH2, SH2, "0e"),
    (PARITY2, SH2, SH2),
    (SH3, SH3, SH3),
    ("0e+1o", "0e+1o", "0e+1o"),
]


def assert_close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected), initial=1e-300)
    assert np.max(np.abs(actual - expected), initial=0.0) <= rtol * scale


@st.composite
def edge_sets(draw):
    """(centers [E], n_atoms): sorted with equal counts (the reshape path), or random centres
    (unsorted, variable counts, some atoms without edges, the last atoms never a centre)."""
    rng = np.random.default_rng(draw(seeds))
    if draw(st.booleans()):
        n_atoms, k = draw(st.integers(1, 6)), draw(st.integers(1, 5))
        return np.repeat(np.arange(n_atoms), k), n_atoms
    n_atoms = draw(st.integers(1, 8))
    n_edges = draw(st.integers(0, 25))
    n_centres = draw(st.integers(1, n_atoms))
    return rng.integers(0, n_centres, n_edges), n_atoms


def densities(irreps, centers, n_atoms, rng, dtype=np.float64, u=3):
    """Forward and backward of the plain density (per-edge products, scatter) and of the
    grouped one on the same random data."""
    irreps = Irreps(irreps)
    n_edges = centers.shape[0]
    w = rng.standard_normal((n_edges, u, len(irreps))).astype(dtype)
    y = rng.standard_normal((n_edges, irreps.dim)).astype(dtype)
    g = rng.standard_normal((n_atoms, u, irreps.dim)).astype(dtype)
    products, cache = irrep_weighted_forward(w, y[:, None, :], irreps)  # [E, U, dim]
    grad_w, grad_y = irrep_weighted_backward(cache, g[centers])
    expected = (segment_sum(products, centers, n_atoms), grad_w, grad_y[:, 0, :])
    density, cache = environment_density_forward(w, y, irreps, group_edges(centers), n_atoms)
    return expected, (density, *environment_density_backward(cache, g)), (w, y, g)


@given(edges=edge_sets(), irreps=st.sampled_from([SH2, SH3, "0e+1o"]), seed=seeds)
def test_density_matches_plain_sum(edges, irreps, seed):
    """A[i] = Σ_{e: c_e = i} w[e] ⊙ Y[e], and ∂L/∂w, ∂L/∂Y."""
    centers, n_atoms = edges
    expected, got, _ = densities(irreps, centers, n_atoms, np.random.default_rng(seed))
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, rtol=1e-13)


@given(edges=edge_sets(), seed=seeds)
def test_density_backward_matches_finite_differences(edges, seed):
    centers, n_atoms = edges
    rng = np.random.default_rng(seed)
    _, (_, *grads), (w, y, g) = densities(SH2, centers, n_atoms, rng)
    groups = group_edges(centers)

    def loss(inputs):
        density, _ = environment_density_forward(inputs[0], inputs[1], SH2, groups, n_atoms)
        return float(np.sum(g * density))

    assert_directional_derivatives(loss, [w, y], grads, rng)


@pytest.mark.parametrize("sorted_uniform", [True, False])
def test_density_backends_and_float32(backend, sorted_uniform, rng):
    centers = np.repeat(np.arange(4), 3) if sorted_uniform else rng.integers(0, 4, 11)
    _, got, (w, y, g) = densities(SH2, centers, 5, rng)
    groups = group_edges(backend.asarray(centers))
    for dtype, rtol in ((np.float64, 1e-13), (np.float32, 1e-5)):
        density, cache = environment_density_forward(
            backend.asarray(w, dtype), backend.asarray(y, dtype), SH2, groups, 5
        )
        got_b = (density, *environment_density_backward(cache, backend.asarray(g, dtype)))
        for b, n in zip(got_b, got, strict=True):
            assert backend.to_numpy(b).dtype == dtype
            assert_close(backend.to_numpy(b), n, rtol=rtol)
    with pytest.raises(ValueError, match="do not match irreps"):
        environment_density_forward(backend.asarray(w), backend.asarray(y), SH3, groups, 5)


def both(layer, coupled, centers, n_atoms, rng, dtype=np.float64, u=3):
    """Forward and backward of the plain product (edge-major, [E, U, d]) and of the fold
    (channel-major, [U, E, d]) on the same random data, all in the fold's layout; the inputs
    (x, env, weights, g, fold) in the fold's layout."""
    irreps1, irreps_env, irreps_out = layer
    plain = ChannelwiseTensorProduct(irreps1, irreps_env, irreps_out, u, coupled)
    fast = EnvironmentTensorProduct(irreps1, irreps_env, irreps_out, u, coupled)
    n_edges = centers.shape[0]
    x = rng.standard_normal((n_edges, u, Irreps(irreps1).dim)).astype(dtype)
    env = rng.standard_normal((n_atoms, u, Irreps(irreps_env).dim)).astype(dtype)
    weights = plain.init_weights(rng).astype(dtype)
    g = rng.standard_normal((n_edges, u, Irreps(irreps_out).dim)).astype(dtype)
    out, cache = plain.forward(x, env[centers], weights)
    grad_x, grad_env_edges, grad_w = plain.backward(cache, g)
    channel_major = (1, 0, 2)
    expected = (
        np.transpose(out, channel_major),
        np.transpose(grad_x, channel_major),
        segment_sum(grad_env_edges, centers, n_atoms),
        grad_w,
    )
    x, g = (np.ascontiguousarray(np.transpose(a, channel_major)) for a in (x, g))
    out_f, cache_f = fast.forward(x, env, group_edges(centers), weights)
    return expected, (out_f, *fast.backward(cache_f, g)), (x, env, weights, g, fast)


@given(edges=edge_sets(), layer=st.sampled_from(LAYERS), coupled=st.booleans(), seed=seeds)
def test_matches_plain_product(edges, layer, coupled, seed):
    """Output, ∂L/∂x, ∂L/∂A (the plain product's ∂L/∂x2 summed onto the centres) and ∂L/∂θ."""
    centers, n_atoms = edges
    expected, got, _ = both(layer, coupled, centers, n_atoms, np.random.default_rng(seed))
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e, rtol=1e-13)


@pytest.mark.parametrize("coupled", [True, False])
def test_float32_matches_float64(coupled, rng):
    centers = rng.integers(0, 5, 30)
    expected, _, _ = both((SH2, SH2, SH2), coupled, centers, 6, np.random.default_rng(1))
    _, got, _ = both((SH2, SH2, SH2), coupled, centers, 6, np.random.default_rng(1), np.float32)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == np.float32
        assert_close(g, e, rtol=1e-5)


@given(edges=edge_sets(), seed=seeds)
def test_backward_matches_finite_differences(edges, seed):
    """Directional central differences of L = Σ g · out in x, A and θ."""
    centers, n_atoms = edges
    rng = np.random.default_rng(seed)
    _, (_, *grads), (x, env, weights, g, fast) = both((SH2, SH2, SH2), True, centers, n_atoms, rng)
    groups = group_edges(centers)

    def loss(inputs):
        return float(np.sum(g * fast.forward(inputs[0], inputs[1], groups, inputs[2])[0]))

    assert_directional_derivatives(loss, [x, env, weights], grads, rng)


@pytest.mark.parametrize("sorted_uniform", [True, False])
def test_backends_agree(backend, sorted_uniform, rng):
    """NumPy and array-api-strict (simulated device: no hidden NumPy conversion) agree, on the
    reshape path and on the gathered one."""
    centers = np.repeat(np.arange(4), 3) if sorted_uniform else rng.integers(0, 4, 11)
    _, got, (x, env, weights, g, fast) = both((SH3, SH3, "0e"), True, centers, 5, rng)
    groups = group_edges(backend.asarray(centers))
    assert (groups.edge_slots is None) == sorted_uniform
    out, cache = fast.forward(
        *(backend.asarray(a) for a in (x, env)), groups, backend.asarray(weights)
    )
    got_b = (out, *fast.backward(cache, backend.asarray(g)))
    for b, n in zip(got_b, got, strict=True):
        assert_close(backend.to_numpy(b), n, rtol=1e-13)


def test_group_edges():
    """Slots: centre-major, edges of a centre in their original order, padding masked."""
    centers = np.array([2, 0, 2, 2, 0])
    groups = group_edges(centers)
    assert (groups.n_centres, groups.k_max) == (3, 3)
    # centre 0: edges 1, 4; centre 1: none; centre 2: edges 0, 2, 3
    np.testing.assert_array_equal(groups.slot_mask.reshape(-1), [1, 1, 0, 0, 0, 0, 1, 1, 1])
    used = groups.slot_mask.reshape(-1)
    np.testing.assert_array_equal(groups.slot_edges[used], [1, 4, 0, 2, 3])
    np.testing.assert_array_equal(groups.edge_slots, [6, 0, 7, 8, 1])
    assert group_edges(np.repeat(np.arange(3), 2)) == (3, 2, None, None, None)
    assert group_edges(np.zeros(0, dtype=np.int64)) == (0, 0, None, None, None)


def test_errors(rng):
    fast = EnvironmentTensorProduct(SH2, SH2, SH2, 2)
    groups = group_edges(np.array([0, 0, 1]))
    x, env = rng.standard_normal((2, 3, 9)), rng.standard_normal((2, 2, 9))  # x: [U, E, d]
    weights = fast.init_weights(rng)
    with pytest.raises(ValueError, match="x has shape"):
        fast.forward(x[:, :, :4], env, groups, weights)
    with pytest.raises(ValueError, match="x has shape"):
        fast.forward(np.transpose(x, (1, 0, 2)), env, groups, weights)  # edge-major
    with pytest.raises(ValueError, match="built for 4"):
        fast.forward(x, env, group_edges(np.array([0, 0, 1, 1, 0])[:4][::-1].copy()), weights)
    with pytest.raises(ValueError, match="env has 1 atoms"):
        fast.forward(x, env[:1], groups, weights)
    with pytest.raises(ValueError, match="weights have shape"):
        fast.forward(x, env, groups, weights[:, :3])
    with pytest.raises(ValueError, match="dtypes differ"):
        fast.forward(x.astype(np.float32), env, groups, weights)
    out, cache = fast.forward(x, env, groups, weights)
    with pytest.raises(ValueError, match="grad_out has shape"):
        fast.backward(cache, out[:, :2])
