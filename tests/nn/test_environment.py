"""The environment density against its plain counterpart (irrep_weighted_forward + scatter_sum),
for every grouping of edges (sorted and uniform, unsorted, variable counts, atoms without
edges, no edges at all); float32, both backends, finite differences, group_edges. The tensor
product on the same groups is tested in test_tensor_product.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.backend import scatter_sum
from allegro_ref.nn import (
    environment_density_backward,
    environment_density_forward,
    group_edges,
)
from allegro_ref.nn.irrep_weights import irrep_weighted_backward, irrep_weighted_forward
from allegro_ref.o3 import Irreps
from tests.nn import assert_directional_derivatives, edge_sets
from tests.strategies import seeds

SH2, SH3 = "0e+1o+2e", "0e+1o+2e+3o"
PARITY2 = "0e+1e+1o+2e+2o"


def assert_close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected), initial=1e-300)
    assert np.max(np.abs(actual - expected), initial=0.0) <= rtol * scale


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
    expected = (scatter_sum(products, centers, n_atoms), grad_w, grad_y[:, 0, :])
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


def test_group_edges():
    """Slots: center-major, edges of a center in their original order, padding masked."""
    centers = np.array([2, 0, 2, 2, 0])
    groups = group_edges(centers)
    assert (groups.n_centers, groups.k_max) == (3, 3)
    # center 0: edges 1, 4; center 1: none; center 2: edges 0, 2, 3
    np.testing.assert_array_equal(groups.slot_mask.reshape(-1), [1, 1, 0, 0, 0, 0, 1, 1, 1])
    used = groups.slot_mask.reshape(-1)
    np.testing.assert_array_equal(groups.slot_edges[used], [1, 4, 0, 2, 3])
    np.testing.assert_array_equal(groups.edge_slots, [6, 0, 7, 8, 1])
    assert group_edges(np.repeat(np.arange(3), 2)) == (3, 2, None, None, None)
    assert group_edges(np.zeros(0, dtype=np.int64)) == (0, 0, None, None, None)
