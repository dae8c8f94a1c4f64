"""gather / scatter_sum: values against an explicit loop reference, the adjoint identity
⟨scatter_sum(v), g⟩ = ⟨v, gather(g)⟩ through the backward functions, on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.nn import gather, gather_backward, scatter_sum, scatter_sum_backward
from tests.strategies import seeds


@st.composite
def graphs(draw):
    """(index [E], n_atoms, trailing shape, seed): E in 0..30 edges onto 1..8 atoms (some empty)."""
    n_atoms = draw(st.integers(1, 8))
    index = np.array(draw(st.lists(st.integers(0, n_atoms - 1), max_size=30)), dtype=np.int64)
    trailing = draw(st.sampled_from([(), (3,), (2, 4)]))
    return index, n_atoms, trailing, draw(seeds)


def loop_scatter_sum(values, index, n_atoms):
    out = np.zeros((n_atoms, *values.shape[1:]))
    for e, i in enumerate(index):
        out[i] += values[e]
    return out


@given(graph=graphs())
def test_values_and_adjoint_identity(graph):
    index, n_atoms, trailing, seed = graph
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((index.size, *trailing))
    g = rng.standard_normal((n_atoms, *trailing))
    scattered = scatter_sum(v, index, n_atoms)
    gathered = gather(g, index)
    np.testing.assert_allclose(scattered, loop_scatter_sum(v, index, n_atoms), rtol=1e-14, atol=0)
    np.testing.assert_array_equal(gathered, g[index])
    # ⟨scatter(v), g⟩ = ⟨v, gather(g)⟩, read through each backward.
    lhs = np.sum(scattered * g)
    np.testing.assert_allclose(
        lhs, np.sum(v * scatter_sum_backward(g, index)), rtol=1e-12, atol=1e-12
    )
    grad_g = gather_backward(v, index, n_atoms)
    assert grad_g.shape == g.shape
    np.testing.assert_allclose(np.sum(gathered * v), np.sum(g * grad_g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backends_agree_and_keep_dtype(backend, dtype):
    rng = np.random.default_rng(8)
    index = np.array([0, 3, 3, 1, 0, 3, 4], dtype=np.int64)  # atom 2 has no edge
    v = rng.standard_normal((index.size, 2, 3)).astype(dtype)
    g = rng.standard_normal((5, 2, 3)).astype(dtype)
    idx_b = backend.asarray(index)
    results = {
        "scatter_sum": (scatter_sum(backend.asarray(v), idx_b, 5), loop_scatter_sum(v, index, 5)),
        "gather": (gather(backend.asarray(g), idx_b), g[index]),
        "scatter_sum_backward": (scatter_sum_backward(backend.asarray(g), idx_b), g[index]),
        "gather_backward": (
            gather_backward(backend.asarray(v), idx_b, 5),
            loop_scatter_sum(v, index, 5),
        ),
    }
    for name, (got, expected) in results.items():
        assert got.dtype == backend.asarray(v).dtype, name
        rtol = 1e-6 if dtype == "float32" else 1e-14
        np.testing.assert_allclose(
            backend.to_numpy(got), expected, rtol=rtol, atol=rtol, err_msg=name
        )
    np.testing.assert_array_equal(backend.to_numpy(scatter_sum(backend.asarray(v), idx_b, 5))[2], 0)


def test_gather_rejects_non_vector_index():
    with pytest.raises(ValueError, match=r"gather index must be 1-D \[E\]; got shape \(2, 1\)"):
        gather(np.zeros((3, 2)), np.zeros((2, 1), dtype=np.int64))
