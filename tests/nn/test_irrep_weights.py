"""irrep_weighted_forward / _backward: values against a per-entry loop (channel-major, as the model
uses it, and edge-major), O(3) equivariance of the weighted harmonics (proper and improper
rotations), finite differences of the VJP in both layouts, backends and dtypes, and the shape
errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.nn.irrep_weights import irrep_weighted_backward, irrep_weighted_forward
from allegro_ref.o3 import Irreps, spherical_harmonics
from tests.nn import assert_directional_derivatives
from tests.strategies import orthogonal_matrices, seeds

IRREPS = ["0e+1o+2e", "0e+1o+2e+3o", "2x0e+1o", "1o+0x1e+2e"]


def loop_reference(weights, features, irreps):
    """out[u, e, c] = w[u, e, i] Y[e, c] for every component c of entry i, entry by entry."""
    irreps = Irreps(irreps)
    out = np.zeros((weights.shape[0], features.shape[0], irreps.dim))
    for i, sl in enumerate(irreps.slices()):
        for c in range(sl.start, sl.stop):
            out[:, :, c] = weights[:, :, i] * features[None, :, c]
    return out


@given(irreps=st.sampled_from(IRREPS), seed=seeds)
def test_values_match_the_per_entry_loop(irreps, seed):
    rng = np.random.default_rng(seed)
    n_irreps, dim = len(Irreps(irreps)), Irreps(irreps).dim
    weights = rng.standard_normal((3, 5, n_irreps))  # [U, E, n], channel-major
    features = rng.standard_normal((5, dim))
    out, _ = irrep_weighted_forward(weights, features, irreps)
    expected = loop_reference(weights, features, irreps)
    np.testing.assert_array_equal(out, expected)
    # edge-major: weights [E, U, n] and features broadcast along the channel axis explicitly
    out_edge_major, _ = irrep_weighted_forward(
        np.transpose(weights, (1, 0, 2)), features[:, None, :], irreps
    )
    np.testing.assert_array_equal(out_edge_major, np.transpose(expected, (1, 0, 2)))


@given(rotation=orthogonal_matrices(), seed=seeds)
def test_weighted_harmonics_rotate_like_the_harmonics(rotation, seed):
    """w Y(R r) = D(R) (w Y(r)) in every channel: one scalar per irrep commutes with D."""
    rng = np.random.default_rng(seed)
    irreps = Irreps.spherical_harmonics(3)
    vectors = rng.standard_normal((6, 3))
    weights = rng.standard_normal((4, 6, len(irreps)))
    out, _ = irrep_weighted_forward(weights, spherical_harmonics(irreps, vectors), irreps)
    rotated, _ = irrep_weighted_forward(
        weights, spherical_harmonics(irreps, vectors @ rotation.T), irreps
    )
    np.testing.assert_allclose(
        rotated, out @ irreps.D_from_matrix(rotation).T, rtol=0, atol=1e-12 * np.max(np.abs(out))
    )


@given(
    irreps=st.sampled_from(IRREPS),
    seed=seeds,
    layout=st.sampled_from(["channel-major", "edge-major", "per-channel features"]),
)
def test_backward_matches_finite_differences(irreps, seed, layout):
    """The VJP, including the sum over the axes ``features`` is broadcast along."""
    rng = np.random.default_rng(seed)
    n_irreps, dim = len(Irreps(irreps)), Irreps(irreps).dim
    weights_shape, features_shape = {
        "channel-major": ((2, 4, n_irreps), (4, dim)),
        "edge-major": ((4, 2, n_irreps), (4, 1, dim)),
        "per-channel features": ((2, 4, n_irreps), (2, 4, dim)),
    }[layout]
    weights = rng.standard_normal(weights_shape)
    features = rng.standard_normal(features_shape)
    c = rng.standard_normal(weights_shape[:-1] + (dim,))

    def loss(inputs):
        out, _ = irrep_weighted_forward(inputs[0], inputs[1], irreps)
        return float(np.sum(c * out) + 0.5 * np.sum(out**2))

    out, cache = irrep_weighted_forward(weights, features, irreps)
    grads = irrep_weighted_backward(cache, c + out)
    assert_directional_derivatives(loss, [weights, features], grads, rng, step=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends_agree_and_keep_dtype(backend, dtype):
    rng = np.random.default_rng(3)
    irreps = "0e+1o+2e"
    weights = rng.standard_normal((3, 5, 3)).astype(dtype)
    features = rng.standard_normal((5, 9)).astype(dtype)
    g = rng.standard_normal((3, 5, 9)).astype(dtype)
    out, cache = irrep_weighted_forward(weights, features, irreps)
    grads = irrep_weighted_backward(cache, g)
    out_b, cache_b = irrep_weighted_forward(
        backend.asarray(weights), backend.asarray(features), irreps
    )
    grads_b = irrep_weighted_backward(cache_b, backend.asarray(g))
    rtol = 1e-6 if dtype == "float32" else 1e-14
    for ours, theirs in zip((out_b, *grads_b), (out, *grads), strict=True):
        assert backend.to_numpy(ours).dtype == np.dtype(dtype)
        np.testing.assert_allclose(backend.to_numpy(ours), theirs, rtol=rtol, atol=0)


def test_mismatched_shapes_name_both_sides():
    with pytest.raises(ValueError, match=r"weights \[\.\.\., 2\] and features \[\.\.\., 9\]"):
        irrep_weighted_forward(np.ones((4, 3, 2)), np.ones((4, 9)), "0e+1o+2e")


def test_features_that_do_not_broadcast_are_refused():
    with pytest.raises(ValueError, match=r"features \(2, 3, 9\) do not broadcast"):
        irrep_weighted_forward(np.ones((3, 3)), np.ones((2, 3, 9)), "0e+1o+2e")
