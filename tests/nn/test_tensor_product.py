"""Tensor products: the official Allegro Contracter and e3nn's TensorProduct reproduced from
fixtures, an independent per-path reference, finite differences for every input and weight,
O(3) equivariance of the outputs and of the VJPs, backends, float32, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from allegro_ref.nn import ChannelwiseTensorProduct, TensorProduct, allowed_paths
from allegro_ref.nn.tensor_product import _coupling_tensor
from allegro_ref.o3 import Irrep, Irreps, wigner_3j
from tests.nn import assert_directional_derivatives
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
E3NN_TP_CASES = [
    "e3nn_tp_uvw",
    "e3nn_tp_uvw_path_norm",
    "e3nn_tp_uvu",
    "e3nn_tp_uvu_batched",
    "e3nn_tp_uuu",
]
SH2, SH3 = "0e+1o+2e", "0e+1o+2e+3o"
PARITY2 = "0e+1e+1o+2e+2o"


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


def assert_rotates_with_inputs(tp, x1, x2, weights, rotation, rng):
    """out(D1 x1, D2 x2) = D_out out(x1, x2) for a random cotangent g, the VJPs at the rotated
    inputs (cotangent D_out g) are the rotated VJPs, and ∂L/∂θ is unchanged."""
    d1, d2, d_out = (
        irreps.D_from_matrix(rotation) for irreps in (tp.irreps_in1, tp.irreps_in2, tp.irreps_out)
    )
    out, cache = tp.forward(x1, x2, weights)
    g = rng.standard_normal(out.shape)
    grads = tp.backward(cache, g)
    out_r, cache_r = tp.forward(x1 @ d1.T, x2 @ d2.T, weights)
    grads_r = tp.backward(cache_r, g @ d_out.T)
    assert_close(out_r, out @ d_out.T, rtol=1e-12)
    assert_close(grads_r[0], grads[0] @ d1.T, rtol=1e-12)
    assert_close(grads_r[1], grads[1] @ d2.T, rtol=1e-12)
    assert_close(grads_r[2], grads[2], rtol=1e-12)


def assert_backend_agrees_with_numpy(backend, tp, x1, x2, weights, g):
    """The forward and the VJPs (cotangent g) on ``backend`` equal NumPy's to 1e-13."""
    out, cache = tp.forward(x1, x2, weights)
    grads = tp.backward(cache, g)
    out_b, cache_b = tp.forward(*(backend.asarray(a) for a in (x1, x2, weights)))
    grads_b = tp.backward(cache_b, backend.asarray(g))
    for ours, theirs in zip((out_b, *grads_b), (out, *grads), strict=True):
        assert_close(backend.to_numpy(ours), theirs, rtol=1e-13)


# ---- independent references (per path, NumPy einsum; tests only) --------------------------


def reference_channelwise(irreps1, irreps2, irreps_out, x1, x2, theta):
    """out[e,u,γ] = Σ_p θ[u,p] Σ_αβ √(2l_c+1) 3j[α,β,γ] x1[e,u,α] x2[e,u,β], path by path."""
    irreps1, irreps2, irreps_out = Irreps(irreps1), Irreps(irreps2), Irreps(irreps_out)
    theta = np.broadcast_to(theta, (x1.shape[1], theta.shape[-1]))
    out = np.zeros((*x1.shape[:2], irreps_out.dim))
    s1, s2, s_out = irreps1.slices(), irreps2.slices(), irreps_out.slices()
    for p, (i1, i2, i_out) in enumerate(allowed_paths(irreps1, irreps2, irreps_out)):
        c = np.sqrt(2 * irreps_out[i_out].ir.l + 1) * wigner_3j(
            irreps1[i1].ir.l, irreps2[i2].ir.l, irreps_out[i_out].ir.l
        )
        path = np.einsum("eui,euj,ijk->euk", x1[..., s1[i1]], x2[..., s2[i2]], c)
        out[..., s_out[i_out]] += theta[:, p, None] * path
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
def channelwise_problems(draw):
    """(tp, x1, x2, weights, rng) with hypothesis-drawn irreps (l <= 3), channels, edges, weight
    mode and a small chunk size (so several chunks are exercised)."""
    irreps1, irreps2, irreps_out = (draw(single_copy_irreps()) for _ in range(3))
    assume(allowed_paths(irreps1, irreps2, irreps_out))
    n_channels = draw(st.integers(1, 3))
    n_edges = draw(st.integers(1, 6))
    coupling = draw(st.booleans())
    chunk_bytes = draw(st.sampled_from([1, 2000, None]))
    tp = ChannelwiseTensorProduct(
        irreps1,
        irreps2,
        irreps_out,
        n_channels,
        path_channel_coupling=coupling,
        chunk_bytes=chunk_bytes,
    )
    rng = np.random.default_rng(draw(seeds))
    x1 = rng.standard_normal((n_edges, n_channels, irreps1.dim))
    x2 = rng.standard_normal((n_edges, n_channels, irreps2.dim))
    return tp, x1, x2, tp.init_weights(rng), rng


# ---- paths -----------------------------------------------------------------------------------


def test_path_order_of_the_first_allegro_layer():
    """Output entry outer, then input 1, then input 2 (reference/allegro_official.md §2.8)."""
    expected = [
        (0, 0, 0), (1, 1, 0), (2, 2, 0),  # -> 0e
        (0, 1, 1), (1, 0, 1), (1, 2, 1), (2, 1, 1),  # -> 1o
        (0, 2, 2), (1, 1, 2), (2, 0, 2), (2, 2, 2),  # -> 2e
    ]  # fmt: skip
    assert ChannelwiseTensorProduct(SH2, SH2, SH2, 2).paths == expected


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
    tp = ChannelwiseTensorProduct(irreps1, irreps2, irreps_out, 3)
    assert tp.n_paths == len(tp.paths) == n_paths
    assert tp.weight_shape == (3, n_paths)
    assert ChannelwiseTensorProduct(irreps1, irreps2, irreps_out, 3, False).weight_shape == (
        n_paths,
    )


# ---- the official Contracter -----------------------------------------------------------------


@pytest.mark.parametrize("case", CONTRACTER_CASES)
def test_contracter_fixture(case):
    """Output, VJPs and the w3j buffer (which also fixes the path order) of the official
    allegro Contracter, to 1e-12 in float64."""
    f = fixture(case)
    tp = ChannelwiseTensorProduct(
        str(f("irreps_in1")),
        str(f("irreps_in2")),
        str(f("irreps_out")),
        f("x1").shape[1],
        path_channel_coupling=bool(f("path_channel_coupling")),
        chunk_bytes=3000,
    )
    coupling = _coupling_tensor(tp.irreps_in1, tp.irreps_in2, tp.irreps_out)
    if f("w3j_is_ij_diagonal"):  # the official code stores only C[p, i, i, k]
        diagonal = np.arange(coupling.shape[1])
        assert_close(coupling[:, diagonal, diagonal, :], f("w3j"))
    else:
        assert_close(coupling, f("w3j"))
    out, cache = tp.forward(f("x1"), f("x2"), f("weights"))
    assert_close(out, f("out"))
    grads = tp.backward(cache, f("grad_out"))
    for name, grad in zip(["grad_x1", "grad_x2", "grad_weights"], grads, strict=True):
        assert_close(grad, f(name))


# ---- channel-wise: properties ----------------------------------------------------------------


@given(problem=channelwise_problems())
def test_channelwise_matches_per_path_reference(problem):
    tp, x1, x2, weights, _ = problem
    out, _ = tp.forward(x1, x2, weights)
    expected = reference_channelwise(tp.irreps_in1, tp.irreps_in2, tp.irreps_out, x1, x2, weights)
    assert_close(out, expected, rtol=1e-13)


@given(problem=channelwise_problems())
def test_channelwise_backward_matches_finite_differences(problem):
    """A non-linear loss L = Σ c·out + ½ Σ out² (so the difference quotient is not trivially
    exact), checked along random directions for x1, x2 and the weights."""
    tp, x1, x2, weights, rng = problem
    c = rng.standard_normal((x1.shape[0], tp.num_channels, tp.irreps_out.dim))

    def loss(inputs):
        out, _ = tp.forward(*inputs)
        return float(np.sum(c * out) + 0.5 * np.sum(out**2))

    out, cache = tp.forward(x1, x2, weights)
    grads = tp.backward(cache, c + out)
    assert_directional_derivatives(loss, [x1, x2, weights], grads, rng, step=1e-4)


@given(problem=channelwise_problems(), rotation=orthogonal_matrices())
def test_channelwise_equivariance_of_output_and_vjps(problem, rotation):
    """out(D1 x1, D2 x2) = D_out out(x1, x2); the VJPs rotate with the inputs, ∂L/∂θ is
    invariant (for proper and improper R)."""
    tp, x1, x2, weights, rng = problem
    assert_rotates_with_inputs(tp, x1, x2, weights, rotation, rng)


def test_shared_weights_equal_coupled_weights_repeated_over_channels(rng):
    coupled = ChannelwiseTensorProduct(SH2, SH2, SH2, 3)
    shared = ChannelwiseTensorProduct(SH2, SH2, SH2, 3, path_channel_coupling=False)
    x1, x2, g = (rng.standard_normal((5, 3, 9)) for _ in range(3))
    theta = rng.standard_normal(shared.weight_shape)
    out_shared, cache_shared = shared.forward(x1, x2, theta)
    out_coupled, cache_coupled = coupled.forward(x1, x2, np.tile(theta, (3, 1)))
    assert_close(out_shared, out_coupled, rtol=1e-14)
    grads_shared = shared.backward(cache_shared, g)
    grads_coupled = coupled.backward(cache_coupled, g)
    assert_close(grads_shared[0], grads_coupled[0], rtol=1e-14)
    assert_close(grads_shared[2], grads_coupled[2].sum(axis=0), rtol=1e-13)


@pytest.mark.parametrize("irreps_out", [SH2, "0e"])
def test_chunking_does_not_change_results(irreps_out, rng):
    """One edge per chunk vs all edges at once (the scalar output uses gathered pairs)."""
    x1, x2 = rng.standard_normal((2, 7, 4, 9))
    g = rng.standard_normal((7, 4, Irreps(irreps_out).dim))
    results = []
    for chunk_bytes in (1, 1 << 30):
        tp = ChannelwiseTensorProduct(SH2, SH2, irreps_out, 4, chunk_bytes=chunk_bytes)
        weights = tp.init_weights(np.random.default_rng(0))
        out, cache = tp.forward(x1, x2, weights)
        results.append((out, *tp.backward(cache, g)))
    for small, large in zip(*results, strict=True):
        assert_close(small, large, rtol=1e-14)


def test_zero_edges(rng):
    tp = ChannelwiseTensorProduct(SH2, SH2, SH2, 2)
    empty = np.zeros((0, 2, 9))
    out, cache = tp.forward(empty, empty, tp.init_weights(rng))
    grad_x1, grad_x2, grad_w = tp.backward(cache, out)
    assert out.shape == grad_x1.shape == grad_x2.shape == (0, 2, 9)
    np.testing.assert_array_equal(grad_w, np.zeros(tp.weight_shape))


def test_init_weights_are_uniform_with_unit_variance():
    tp = ChannelwiseTensorProduct(SH2, SH2, SH2, 64)
    w = tp.init_weights(np.random.default_rng(0))
    assert w.shape == (64, 11) and w.dtype == np.float64
    assert np.abs(w).max() <= np.sqrt(3) and abs(w.var() - 1) < 0.1


@pytest.mark.parametrize("irreps_out", [SH3, "0e"])
def test_channelwise_backends_agree(backend, irreps_out, rng):
    """NumPy and array-api-strict (simulated device: no hidden NumPy conversion) agree."""
    tp = ChannelwiseTensorProduct(SH3, SH3, irreps_out, 3, chunk_bytes=4000)
    x1, x2 = rng.standard_normal((2, 5, 3, 16))
    g = rng.standard_normal((5, 3, Irreps(irreps_out).dim))
    weights = tp.init_weights(rng)
    assert_backend_agrees_with_numpy(backend, tp, x1, x2, weights, g)


def test_channelwise_float32(rng):
    tp = ChannelwiseTensorProduct(SH2, SH2, PARITY2, 4)
    x1, x2 = rng.standard_normal((2, 6, 4, 9))
    g = rng.standard_normal((6, 4, 17))
    weights = tp.init_weights(rng)
    out, cache = tp.forward(x1, x2, weights)
    grads = tp.backward(cache, g)
    out32, cache32 = tp.forward(*(a.astype(np.float32) for a in (x1, x2, weights)))
    grads32 = tp.backward(cache32, g.astype(np.float32))
    for low, high in zip((out32, *grads32), (out, *grads), strict=True):
        assert low.dtype == np.float32
        assert_close(low, high, rtol=1e-5)


def test_channelwise_errors(rng):
    with pytest.raises(ValueError, match="multiplicity 1"):
        ChannelwiseTensorProduct("2x0e+1o", SH2, SH2, 4)
    with pytest.raises(ValueError, match="no path"):
        ChannelwiseTensorProduct("0e", "0e", "1o", 4)
    with pytest.raises(ValueError, match="num_channels"):
        ChannelwiseTensorProduct(SH2, SH2, SH2, 0)
    tp = ChannelwiseTensorProduct(SH2, SH2, SH2, 4)
    x, w = rng.standard_normal((3, 4, 9)), tp.init_weights(rng)
    with pytest.raises(ValueError, match=r"x1 has shape \(3, 4, 4\).*\[n_edges, 4 channels, 9\]"):
        tp.forward(x[..., :4], x, w)
    with pytest.raises(ValueError, match=r"x2 has shape \(3, 2, 9\)"):
        tp.forward(x, x[:, :2], w)
    with pytest.raises(ValueError, match="x1 has 3 edges but x2 has 2"):
        tp.forward(x, x[:2], w)
    with pytest.raises(ValueError, match=r"weights have shape \(11,\).*\(4, 11\)"):
        tp.forward(x, x, w[0])
    with pytest.raises(ValueError, match="dtypes differ"):
        tp.forward(x, x.astype(np.float32), w)
    _, cache = tp.forward(x, x, w)
    with pytest.raises(ValueError, match=r"grad_out has shape \(3, 4, 8\).*\(3, 4, 9\)"):
        tp.backward(cache, x[..., :8])


# ---- e3nn-layout TensorProduct ---------------------------------------------------------------


def e3nn_tp_from_fixture(f) -> TensorProduct:
    instructions = [
        (i1, i2, i_out, str(f("mode")), bool(w)) for i1, i2, i_out, w in f("instructions")
    ]
    return TensorProduct(
        str(f("irreps_in1")),
        str(f("irreps_in2")),
        str(f("irreps_out")),
        instructions,
        irrep_normalization=str(f("irrep_normalization")),
        path_normalization=str(f("path_normalization")),
        shared_weights=bool(f("shared_weights")),
    )


@pytest.mark.parametrize("case", E3NN_TP_CASES)
def test_e3nn_tensor_product_fixture(case):
    """e3nn.o3.TensorProduct (uvw, uvu, uuu; component/norm, element/path/none; shared and
    per-sample weights; instructions without weights) to 1e-12."""
    f = fixture(case)
    tp = e3nn_tp_from_fixture(f)
    assert tp.weight_numel == f("weights").shape[-1]
    out, cache = tp.forward(f("x1"), f("x2"), f("weights"))
    assert_close(out, f("out"))
    grads = tp.backward(cache, f("grad_out"))
    for name, grad in zip(["grad_x1", "grad_x2", "grad_weights"], grads, strict=True):
        assert_close(grad, f(name))


@st.composite
def e3nn_problems(draw):
    """(tp, x1, x2, weights, rng): random irreps with multiplicities, a mode, normalizations,
    shared or per-sample weights, batch shape (n,) or (a, b)."""
    mode = draw(st.sampled_from(["uvw", "uvu", "uuu"]))
    muls = st.integers(1, 3)

    def irreps():
        irs = draw(st.lists(st.sampled_from(IRREPS_L3), min_size=1, max_size=3, unique=True))
        return Irreps([(draw(muls), ir) for ir in irs])

    irreps1, irreps2, irreps_out = irreps(), irreps(), irreps()
    if mode != "uvw":  # make multiplicities fit: uvu needs mul_out = mul1, uuu all equal
        mul = draw(muls)
        irreps1 = Irreps([(mul, ir) for _, ir in irreps1])
        irreps_out = Irreps([(mul, ir) for _, ir in irreps_out])
        if mode == "uuu":
            irreps2 = Irreps([(mul, ir) for _, ir in irreps2])
    shared = draw(st.booleans())
    tp = TensorProduct(
        irreps1,
        irreps2,
        irreps_out,
        mode,
        irrep_normalization=draw(st.sampled_from(["component", "norm", "none"])),
        path_normalization=draw(st.sampled_from(["element", "path", "none"])),
        shared_weights=shared,
    )
    assume(tp.instructions)
    rng = np.random.default_rng(draw(seeds))
    batch = draw(st.sampled_from([(4,), (2, 3)]))
    x1 = rng.standard_normal((*batch, irreps1.dim))
    x2 = rng.standard_normal((*batch, irreps2.dim))
    weights = rng.standard_normal((tp.weight_numel,) if shared else (*batch, tp.weight_numel))
    return tp, x1, x2, weights, rng


@given(problem=e3nn_problems())
def test_e3nn_tensor_product_backward_matches_finite_differences(problem):
    tp, x1, x2, weights, rng = problem
    out, cache = tp.forward(x1, x2, weights)
    c = rng.standard_normal(out.shape)

    def loss(inputs):
        y, _ = tp.forward(*inputs)
        return float(np.sum(c * y) + 0.5 * np.sum(y**2))

    grads = tp.backward(cache, c + out)
    assert_directional_derivatives(loss, [x1, x2, weights], grads, rng, step=1e-4)


@given(problem=e3nn_problems(), rotation=orthogonal_matrices())
def test_e3nn_tensor_product_equivariance(problem, rotation):
    tp, x1, x2, weights, rng = problem
    assert_rotates_with_inputs(tp, x1, x2, weights, rotation, rng)


def test_e3nn_uuu_without_normalization_is_the_channelwise_product(rng):
    """Two independent implementations of the same map: TensorProduct 'uuu' with U copies of
    each irrep (layout [.., irreps, U, 2l+1]) and ChannelwiseTensorProduct ([.., U, dim])."""
    n_channels = 3
    wide = Irreps([(n_channels, ir) for _, ir in Irreps(SH2)])
    tp = TensorProduct(wide, wide, wide, "uuu", path_normalization="none")
    channelwise = ChannelwiseTensorProduct(SH2, SH2, SH2, n_channels)
    x1, x2 = rng.standard_normal((2, 5, n_channels, 9))
    theta = channelwise.init_weights(rng)

    def to_mul_ir(x):  # [e, U, dim] -> e3nn layout [e, Σ_l U (2l+1)]
        return np.concatenate([x[..., s].reshape(x.shape[0], -1) for s in Irreps(SH2).slices()], -1)

    out, _ = channelwise.forward(x1, x2, theta)
    out_e3nn, _ = tp.forward(to_mul_ir(x1), to_mul_ir(x2), theta.T.reshape(-1))
    assert_close(out_e3nn, to_mul_ir(out), rtol=1e-13)


@pytest.mark.parametrize("mode", ["uvw", "uvu", "uuu"])
def test_e3nn_tensor_product_backends_agree(backend, mode, rng):
    irreps = "2x0e+2x1o+2x2e"
    tp = TensorProduct(irreps, "2x0e+2x1o", irreps, mode)
    x1, x2 = rng.standard_normal((4, 18)), rng.standard_normal((4, 8))
    weights = tp.init_weights(rng)
    g = rng.standard_normal(tp.forward(x1, x2, weights)[0].shape)
    assert_backend_agrees_with_numpy(backend, tp, x1, x2, weights, g)


def test_e3nn_tensor_product_errors(rng):
    with pytest.raises(ValueError, match="mode 'uvx'"):
        TensorProduct("0e", "0e", "0e", "uvx")
    with pytest.raises(ValueError, match="cannot produce 1o"):
        TensorProduct("0e", "0e", "1o", [(0, 0, 0, "uvw", True)])
    with pytest.raises(ValueError, match="does not fit multiplicities 2x0e, 1x0e -> 3x0e"):
        TensorProduct("2x0e", "0e", "3x0e", [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="index 1 is out of range for irreps_in2"):
        TensorProduct("0e", "0e", "0e", [(0, 1, 0, "uvw", True)])
    with pytest.raises(ValueError, match="'uvw' needs weights"):
        TensorProduct("0e", "0e", "0e", [(0, 0, 0, "uvw", False)])
    with pytest.raises(ValueError, match="path_normalization"):
        TensorProduct("0e", "0e", "0e", "uvw", path_normalization="paths")
    tp = TensorProduct("2x1o", "1o", "2x0e+2x1e", "uvu")
    x1, x2, w = rng.standard_normal((5, 6)), rng.standard_normal((5, 3)), tp.init_weights(rng)
    with pytest.raises(ValueError, match="x1 has shape .*last axis must be 6"):
        tp.forward(x1[:, :5], x2, w)
    with pytest.raises(ValueError, match=r"x1 has leading shape \(5,\) but x2 has \(4,\)"):
        tp.forward(x1, x2[:4], w)
    with pytest.raises(ValueError, match=r"weights have shape None but .* expects \(4,\)"):
        tp.forward(x1, x2)
    no_weights = TensorProduct("1o", "1o", "0e", [(0, 0, 0, "uuu", False)])
    with pytest.raises(ValueError, match="no weights"):
        no_weights.forward(x2, x2, w)
    out, cache = no_weights.forward(x2, x2)
    # "component" normalization of one 1o x 1o -> 0e path: α = √1, 3j(1,1,0) = I/√3
    np.testing.assert_allclose(out[:, 0], np.sum(x2 * x2, axis=1) / np.sqrt(3), rtol=1e-14)
    assert no_weights.backward(cache, out)[2] is None
