"""Allegro's tensor product (EnvironmentTensorProduct): the official Contracter reproduced from
fixtures, the fast path against the per-path reference (and the reference against an
independent einsum), finite differences for every input and weight, O(3) equivariance of the
outputs and of the VJPs, every grouping of edges, backends, float32, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from allegro_ref.nn import EnvironmentTensorProduct, allowed_paths, coupling_tensor, group_edges
from allegro_ref.o3 import Irrep, Irreps, wigner_3j
from tests.nn import assert_directional_derivatives, edge_sets
from tests.strategies import orthogonal_matrices, seeds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tp_fixtures.npz"
CONTRACTER_CASES = [
    "contracter_lmax2",
    "contracter_lmax2_shared",
    "contracter_scalar_out",
    "contracter_parity",
    "contracter_parity_in",
    "contracter_lmax3",
    "contracter_one_path",
]
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


def fixture(case: str):
    data = np.load(FIXTURES)
    return lambda name: data[f"{case}/{name}"]


def assert_close(actual, expected, rtol=1e-12):
    """Max-norm relative agreement: |actual - expected|_max <= rtol |expected|_max."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.max(np.abs(actual - expected), initial=0.0) <= rtol * np.max(
        np.abs(expected), initial=1e-300
    )


def channel_major(a):
    """``[E, U, d]`` <-> ``[U, E, d]``, C-ordered."""
    return np.ascontiguousarray(np.transpose(a, (1, 0, 2)))


# ---- an independent reference (NumPy einsum on the 3j symbols; tests only) -------------------


def einsum_reference(tp, x, env, centers, theta):
    """out[u,e,γ] = Σ_p θ[u,p] Σ_αβ √(2l_c+1) 3j[α,β,γ] x[u,e,α] A[c_e,u,β], written without
    the library's couplings or path bookkeeping."""
    irreps1, irreps2, irreps_out = tp.irreps_in1, tp.irreps_env, tp.irreps_out
    theta = np.broadcast_to(theta, (x.shape[0], tp.n_paths))
    out = np.zeros((*x.shape[:2], irreps_out.dim))
    s1, s2, s_out = irreps1.slices(), irreps2.slices(), irreps_out.slices()
    p = 0
    for i_out, (_, c) in enumerate(irreps_out):
        for i1, (_, a) in enumerate(irreps1):
            for i2, (_, b) in enumerate(irreps2):
                if not (abs(a.l - b.l) <= c.l <= a.l + b.l and c.p == a.p * b.p):
                    continue
                coupling = np.sqrt(2 * c.l + 1) * wigner_3j(a.l, b.l, c.l)
                a_on_edges = env[centers][..., s2[i2]]  # [E, U, 2l_b+1]
                path = np.einsum("uea,eub,abc->uec", x[..., s1[i1]], a_on_edges, coupling)
                out[..., s_out[i_out]] += theta[:, p, None, None] * path
                p += 1
    assert p == tp.n_paths
    return out


# ---- strategies ------------------------------------------------------------------------------

IRREPS_L3 = [Irrep(l, p) for l in range(4) for p in (1, -1)]


@st.composite
def single_copy_irreps(draw, max_entries: int = 4):
    """Irreps with multiplicity 1 per entry, distinct irreps of l <= 3, in a random order."""
    irreps = draw(
        st.lists(st.sampled_from(IRREPS_L3), min_size=1, max_size=max_entries, unique=True)
    )
    return Irreps([(1, ir) for ir in irreps])


@st.composite
def problems(draw, layers=None):
    """(tp, x [U, E, d1], env [N, U, d2], centers [E], weights, rng): hypothesis-drawn irreps
    (l <= 3; or one of ``layers``), channels, weight mode and edges (any grouping)."""
    if layers is None:
        irreps1, irreps_env, irreps_out = (draw(single_copy_irreps()) for _ in range(3))
        assume(allowed_paths(irreps1, irreps_env, irreps_out))
    else:
        irreps1, irreps_env, irreps_out = draw(st.sampled_from(layers))
    n_channels = draw(st.integers(1, 3))
    tp = EnvironmentTensorProduct(
        irreps1, irreps_env, irreps_out, n_channels, path_channel_coupling=draw(st.booleans())
    )
    centers, n_atoms = draw(edge_sets())
    rng = np.random.default_rng(draw(seeds))
    x = rng.standard_normal((n_channels, centers.shape[0], tp.irreps_in1.dim))
    env = rng.standard_normal((n_atoms, n_channels, tp.irreps_env.dim))
    return tp, x, env, centers, tp.init_weights(rng), rng


# ---- paths and couplings ---------------------------------------------------------------------


def test_path_order_of_the_first_allegro_layer():
    """Output entry outer, then input 1, then input 2 (the official order)."""
    expected = [
        (0, 0, 0), (1, 1, 0), (2, 2, 0),  # -> 0e
        (0, 1, 1), (1, 0, 1), (1, 2, 1), (2, 1, 1),  # -> 1o
        (0, 2, 2), (1, 1, 2), (2, 0, 2), (2, 2, 2),  # -> 2e
    ]  # fmt: skip
    assert EnvironmentTensorProduct(SH2, SH2, SH2, 2).paths == expected
    assert allowed_paths(SH2, SH2, SH2) == expected


@pytest.mark.parametrize(
    "irreps1, irreps2, irreps_out, n_paths",
    [
        (SH2, SH2, SH2, 11),
        (SH2, SH2, "0e", 3),
        (SH3, SH3, SH3, 23),
        (SH3, SH3, "0e", 4),
        (SH2, SH2, PARITY2, 15),
        (PARITY2, SH2, SH2, 15),
        (PARITY2, SH2, PARITY2, 25),
        ("0e+1o", "0e+1o", "0e+1o", 4),
        ("0e+1o", "0e+1o", "0e", 2),
    ],
)
def test_path_counts_match_the_official_model(irreps1, irreps2, irreps_out, n_paths):
    tp = EnvironmentTensorProduct(irreps1, irreps2, irreps_out, 3)
    assert tp.n_paths == len(tp.paths) == n_paths
    assert tp.weight_shape == (3, n_paths)
    assert EnvironmentTensorProduct(
        irreps1, irreps2, irreps_out, 3, path_channel_coupling=False
    ).weight_shape == (n_paths,)
    assert coupling_tensor(irreps1, irreps2, irreps_out).shape == (
        n_paths,
        Irreps(irreps1).dim,
        Irreps(irreps2).dim,
        Irreps(irreps_out).dim,
    )


def test_coupling_tensor_is_the_scaled_3j_of_each_path():
    coupling = coupling_tensor(PARITY2, SH2, SH2)
    irreps1, irreps2, irreps_out = Irreps(PARITY2), Irreps(SH2), Irreps(SH2)
    s1, s2, s_out = irreps1.slices(), irreps2.slices(), irreps_out.slices()
    mask = np.zeros(coupling.shape, dtype=bool)
    for p, (i1, i2, i_out) in enumerate(allowed_paths(irreps1, irreps2, irreps_out)):
        (a, b, c) = irreps1[i1].ir, irreps2[i2].ir, irreps_out[i_out].ir
        block = coupling[p, s1[i1], s2[i2], s_out[i_out]]
        np.testing.assert_array_equal(block, np.sqrt(2 * c.l + 1) * wigner_3j(a.l, b.l, c.l))
        mask[p, s1[i1], s2[i2], s_out[i_out]] = True
    assert not np.any(coupling[~mask])
    assert not coupling.flags.writeable  # cached, shared by every caller


# ---- the official Contracter -----------------------------------------------------------------


@pytest.mark.parametrize("case", CONTRACTER_CASES)
def test_contracter_fixture(case):
    """Output, VJPs and the w3j buffer (which also fixes the path order) of the official
    allegro Contracter, to 1e-12 in float64. The Contracter multiplies per-edge x1 and x2:
    here every edge has its own center atom, whose environment is that edge's x2."""
    f = fixture(case)
    x1, x2 = f("x1"), f("x2")  # [E, U, d]
    n_edges = x1.shape[0]
    tp = EnvironmentTensorProduct(
        str(f("irreps_in1")),
        str(f("irreps_in2")),
        str(f("irreps_out")),
        x1.shape[1],
        path_channel_coupling=bool(f("path_channel_coupling")),
    )
    coupling = coupling_tensor(tp.irreps_in1, tp.irreps_env, tp.irreps_out)
    if f("w3j_is_ij_diagonal"):  # the official code stores only C[p, i, i, k]
        diagonal = np.arange(coupling.shape[1])
        assert_close(coupling[:, diagonal, diagonal, :], f("w3j"))
    else:
        assert_close(coupling, f("w3j"))
    centers = np.arange(n_edges)
    out, cache = tp.forward(channel_major(x1), x2, group_edges(centers), f("weights"))
    assert_close(out, channel_major(f("out")))
    reference = tp.reference(channel_major(x1), x2, centers, f("weights"))
    assert_close(reference, channel_major(f("out")))
    grad_x, grad_env, grad_w = tp.backward(cache, channel_major(f("grad_out")))
    assert_close(grad_x, channel_major(f("grad_x1")))
    assert_close(grad_env, f("grad_x2"))
    assert_close(grad_w, f("grad_weights"))


# ---- fast path against the reference ---------------------------------------------------------


@given(problem=problems())
def test_reference_is_the_formula(problem):
    """The per-path reference against an einsum on the 3j symbols (any irreps, l <= 3)."""
    tp, x, env, centers, weights, _ = problem
    expected = einsum_reference(tp, x, env, centers, weights)
    assert_close(tp.reference(x, env, centers, weights), expected, rtol=1e-13)


@given(problem=problems())
def test_forward_matches_reference(problem):
    """The fused, per-atom-folded forward equals the per-path reference to float64 rounding,
    for random irreps (l <= 3), both weight modes and every grouping of edges."""
    tp, x, env, centers, weights, _ = problem
    out, _ = tp.forward(x, env, group_edges(centers), weights)
    assert_close(out, tp.reference(x, env, centers, weights), rtol=1e-13)


@given(problem=problems(layers=LAYERS))
def test_forward_matches_reference_on_allegro_layers(problem):
    tp, x, env, centers, weights, _ = problem
    out, _ = tp.forward(x, env, group_edges(centers), weights)
    assert_close(out, tp.reference(x, env, centers, weights), rtol=1e-13)


# ---- backward --------------------------------------------------------------------------------


@given(problem=problems())
def test_backward_matches_finite_differences(problem):
    """A non-linear loss L = Σ c·out + ½ Σ out² (so the difference quotient is not trivially
    exact), along random directions for x, the environment and the weights."""
    tp, x, env, centers, weights, rng = problem
    groups = group_edges(centers)
    c = rng.standard_normal((tp.num_channels, x.shape[1], tp.irreps_out.dim))

    def loss(inputs):
        out, _ = tp.forward(inputs[0], inputs[1], groups, inputs[2])
        return float(np.sum(c * out) + 0.5 * np.sum(out**2))

    out, cache = tp.forward(x, env, groups, weights)
    grads = tp.backward(cache, c + out)
    assert_directional_derivatives(loss, [x, env, weights], grads, rng, step=1e-4)


@given(problem=problems(), rotation=orthogonal_matrices())
def test_equivariance_of_output_and_vjps(problem, rotation):
    """out(D1 x, D2 A) = D_out out(x, A); the VJPs at the rotated inputs (cotangent D_out g)
    are the rotated VJPs, and ∂L/∂θ is invariant (for proper and improper R)."""
    tp, x, env, centers, weights, rng = problem
    d1, d2, d_out = (
        irreps.D_from_matrix(rotation) for irreps in (tp.irreps_in1, tp.irreps_env, tp.irreps_out)
    )
    groups = group_edges(centers)
    out, cache = tp.forward(x, env, groups, weights)
    g = rng.standard_normal(out.shape)
    grads = tp.backward(cache, g)
    out_r, cache_r = tp.forward(x @ d1.T, env @ d2.T, groups, weights)
    grads_r = tp.backward(cache_r, g @ d_out.T)
    assert_close(out_r, out @ d_out.T, rtol=1e-12)
    assert_close(grads_r[0], grads[0] @ d1.T, rtol=1e-12)
    assert_close(grads_r[1], grads[1] @ d2.T, rtol=1e-12)
    assert_close(grads_r[2], grads[2], rtol=1e-12)


def test_shared_weights_equal_coupled_weights_repeated_over_channels(rng):
    coupled = EnvironmentTensorProduct(SH2, SH2, SH2, 3)
    shared = EnvironmentTensorProduct(SH2, SH2, SH2, 3, path_channel_coupling=False)
    centers = rng.integers(0, 3, 8)
    groups = group_edges(centers)
    x, g = rng.standard_normal((2, 3, 8, 9))
    env = rng.standard_normal((4, 3, 9))
    theta = rng.standard_normal(shared.weight_shape)
    out_shared, cache_shared = shared.forward(x, env, groups, theta)
    out_coupled, cache_coupled = coupled.forward(x, env, groups, np.tile(theta, (3, 1)))
    assert_close(out_shared, out_coupled, rtol=1e-14)
    grads_shared = shared.backward(cache_shared, g)
    grads_coupled = coupled.backward(cache_coupled, g)
    assert_close(grads_shared[0], grads_coupled[0], rtol=1e-14)
    assert_close(grads_shared[1], grads_coupled[1], rtol=1e-14)
    assert_close(grads_shared[2], grads_coupled[2].sum(axis=0), rtol=1e-13)


def test_zero_edges(rng):
    tp = EnvironmentTensorProduct(SH2, SH2, SH2, 2)
    x, env = np.zeros((2, 0, 9)), rng.standard_normal((3, 2, 9))
    centers = np.zeros(0, dtype=np.int64)
    out, cache = tp.forward(x, env, group_edges(centers), tp.init_weights(rng))
    grad_x, grad_env, grad_w = tp.backward(cache, out)
    assert out.shape == grad_x.shape == (2, 0, 9)
    assert tp.reference(x, env, centers, tp.init_weights(rng)).shape == (2, 0, 9)
    np.testing.assert_array_equal(grad_env, np.zeros((3, 2, 9)))
    np.testing.assert_array_equal(grad_w, np.zeros(tp.weight_shape))


def test_init_weights_are_uniform_with_unit_variance():
    tp = EnvironmentTensorProduct(SH2, SH2, SH2, 64)
    w = tp.init_weights(np.random.default_rng(0))
    assert w.shape == (64, 11) and w.dtype == np.float64
    assert np.abs(w).max() <= np.sqrt(3) and abs(w.var() - 1) < 0.1


# ---- backends and dtypes ---------------------------------------------------------------------


@pytest.mark.parametrize("sorted_uniform", [True, False])
@pytest.mark.parametrize("irreps_out", [SH3, "0e"])
def test_backends_agree(backend, sorted_uniform, irreps_out, rng):
    """NumPy and array-api-strict (simulated device: no hidden NumPy conversion) agree, on the
    reshape path and on the gathered one, for the fast path and the reference."""
    tp = EnvironmentTensorProduct(SH3, SH3, irreps_out, 3)
    centers = np.repeat(np.arange(4), 3) if sorted_uniform else rng.integers(0, 4, 11)
    x = rng.standard_normal((3, centers.shape[0], 16))
    env = rng.standard_normal((5, 3, 16))
    g = rng.standard_normal((3, centers.shape[0], tp.irreps_out.dim))
    weights = tp.init_weights(rng)
    out, cache = tp.forward(x, env, group_edges(centers), weights)
    expected = (out, *tp.backward(cache, g), tp.reference(x, env, centers, weights))
    groups = group_edges(backend.asarray(centers))
    assert (groups.edge_slots is None) == sorted_uniform
    xb, envb, wb = (backend.asarray(a) for a in (x, env, weights))
    out_b, cache_b = tp.forward(xb, envb, groups, wb)
    got = (out_b, *tp.backward(cache_b, backend.asarray(g)))
    got = (*got, tp.reference(xb, envb, backend.asarray(centers), wb))
    for b, n in zip(got, expected, strict=True):
        assert_close(backend.to_numpy(b), n, rtol=1e-13)


@pytest.mark.parametrize("coupled", [True, False])
def test_float32_matches_float64(coupled, rng):
    tp = EnvironmentTensorProduct(SH2, SH2, PARITY2, 4, coupled)
    centers = rng.integers(0, 5, 30)
    groups = group_edges(centers)
    x, env = rng.standard_normal((4, 30, 9)), rng.standard_normal((6, 4, 9))
    g = rng.standard_normal((4, 30, 17))
    weights = tp.init_weights(rng)
    out, cache = tp.forward(x, env, groups, weights)
    grads = tp.backward(cache, g)
    low = [a.astype(np.float32) for a in (x, env, weights)]
    out32, cache32 = tp.forward(low[0], low[1], groups, low[2])
    grads32 = tp.backward(cache32, g.astype(np.float32))
    for lo, hi in zip((out32, *grads32), (out, *grads), strict=True):
        assert lo.dtype == np.float32
        assert_close(lo, hi, rtol=1e-5)


# ---- errors ----------------------------------------------------------------------------------


def test_errors(rng):
    with pytest.raises(ValueError, match="multiplicity 1"):
        EnvironmentTensorProduct("2x0e+1o", SH2, SH2, 4)
    with pytest.raises(ValueError, match="no path"):
        EnvironmentTensorProduct("0e", "0e", "1o", 4)
    with pytest.raises(ValueError, match="num_channels"):
        EnvironmentTensorProduct(SH2, SH2, SH2, 0)
    tp = EnvironmentTensorProduct(SH2, SH2, SH2, 2)
    groups = group_edges(np.array([0, 0, 1]))
    x, env = rng.standard_normal((2, 3, 9)), rng.standard_normal((2, 2, 9))  # x: [U, E, d]
    weights = tp.init_weights(rng)
    with pytest.raises(ValueError, match=r"x has shape \(2, 3, 4\).*\[2 channels, E, 9\]"):
        tp.forward(x[:, :, :4], env, groups, weights)
    with pytest.raises(ValueError, match="x has shape"):
        tp.forward(np.transpose(x, (1, 0, 2)), env, groups, weights)  # edge-major
    with pytest.raises(ValueError, match=r"env has shape \(2, 2, 4\)"):
        tp.forward(x, env[..., :4], groups, weights)
    with pytest.raises(ValueError, match="built for 4"):
        tp.forward(x, env, group_edges(np.array([0, 0, 1, 1, 0])[:4][::-1].copy()), weights)
    with pytest.raises(ValueError, match="groups hold 2 centers x 1 edges"):
        tp.forward(x, env, group_edges(np.array([0, 1])), weights)
    with pytest.raises(ValueError, match="env has 1 atoms"):
        tp.forward(x, env[:1], groups, weights)
    with pytest.raises(ValueError, match=r"weights have shape \(2, 3\).*\(2, 11\)"):
        tp.forward(x, env, groups, weights[:, :3])
    with pytest.raises(ValueError, match="dtypes differ"):
        tp.forward(x.astype(np.float32), env, groups, weights)
    out, cache = tp.forward(x, env, groups, weights)
    with pytest.raises(ValueError, match=r"grad_out has shape \(2, 2, 9\).*\(2, 3, 9\)"):
        tp.backward(cache, out[:, :2])
