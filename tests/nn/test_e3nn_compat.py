"""The e3nn compatibility layer: e3nn's TensorProduct and o3.Linear reproduced from fixtures,
explicit formulas, finite differences, O(3) equivariance of the outputs and the VJPs, backends,
float32, e3nn's edge cases (multiplicity 0, empty irreps, no weights, empty batch), errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.nn import EnvironmentTensorProduct, group_edges
from allegro_ref.nn.e3nn_compat import EquivariantLinear, TensorProduct
from allegro_ref.o3 import Irrep, Irreps
from tests.nn import assert_directional_derivatives
from tests.strategies import orthogonal_matrices, seeds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tp_fixtures.npz"
IRREPS_L3 = [Irrep(l, p) for l in range(4) for p in (1, -1)]
E3NN_TP_CASES = [
    "e3nn_tp_uvw",
    "e3nn_tp_uvw_path_norm",
    "e3nn_tp_uvu",
    "e3nn_tp_uvu_batched",
    "e3nn_tp_uuu",
]
SH2 = "0e+1o+2e"


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


# ---- TensorProduct ---------------------------------------------------------------------------


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
    """(tp, x1, x2, weights, rng): random irreps with multiplicities 0-3 (sometimes empty), a
    mode, normalizations, shared or per-sample weights, batch shape (n,), (a, b) or empty."""
    mode = draw(st.sampled_from(["uvw", "uvu", "uuu"]))
    muls = st.integers(0, 3)

    def irreps():
        min_size = draw(st.sampled_from([0, 1, 1, 1]))
        irs = draw(st.lists(st.sampled_from(IRREPS_L3), min_size=min_size, max_size=3, unique=True))
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
    rng = np.random.default_rng(draw(seeds))
    batch = draw(st.sampled_from([(4,), (2, 3), (0,), (0, 2)]))
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


def test_e3nn_uuu_without_normalization_is_allegros_product(rng):
    """Two independent implementations of the same map: TensorProduct 'uuu' with U copies of
    each irrep (layout [.., irreps, U, 2l+1]) and EnvironmentTensorProduct ([U, .., dim]) with
    every edge its own center atom."""
    n_channels = 3
    wide = Irreps([(n_channels, ir) for _, ir in Irreps(SH2)])
    tp = TensorProduct(wide, wide, wide, "uuu", path_normalization="none")
    allegro = EnvironmentTensorProduct(SH2, SH2, SH2, n_channels)
    x1, x2 = rng.standard_normal((2, 5, n_channels, 9))  # [e, U, dim]
    theta = allegro.init_weights(rng)

    def to_mul_ir(x):  # [e, U, dim] -> e3nn layout [e, Σ_l U (2l+1)]
        return np.concatenate([x[..., s].reshape(x.shape[0], -1) for s in Irreps(SH2).slices()], -1)

    centers = np.arange(5)
    x1_channel_major = np.ascontiguousarray(np.transpose(x1, (1, 0, 2)))
    out, _ = allegro.forward(x1_channel_major, x2, group_edges(centers), theta)
    out_e3nn, _ = tp.forward(to_mul_ir(x1), to_mul_ir(x2), theta.T.reshape(-1))
    assert_close(out_e3nn, to_mul_ir(np.transpose(out, (1, 0, 2))), rtol=1e-13)


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


# ---- e3nn's edge cases -----------------------------------------------------------------------


def test_e3nn_zero_multiplicity_entries_change_nothing(rng):
    """Entries of multiplicity 0 anywhere (inputs, output) give the same numbers as the irreps
    without them: their instructions have no weights to take and no terms to count."""
    with_zeros = TensorProduct("2x0e+0x1o+1x1o", "0x0e+1o+0x2e", "0x0e+2x1e+1x0e+0x1o", "uvw")
    without = TensorProduct("2x0e+1x1o", "1o", "2x1e+1x0e", "uvw")
    assert with_zeros.weight_numel == without.weight_numel
    x1, x2 = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    weights = with_zeros.init_weights(rng)
    out, cache = with_zeros.forward(x1, x2, weights)
    expected, cache_expected = without.forward(x1, x2, weights)
    assert_close(out, expected, rtol=1e-15)
    g = rng.standard_normal(out.shape)
    for got, want in zip(
        with_zeros.backward(cache, g), without.backward(cache_expected, g), strict=True
    ):
        assert_close(got, want, rtol=1e-15)


@pytest.mark.parametrize(
    "irreps1, irreps2, irreps_out",
    [("", "1o", "0e"), ("1o", "", "0e"), ("1o", "1o", ""), ("", "", ""), ("0x1o", "1o", "0e")],
)
def test_e3nn_empty_irreps(irreps1, irreps2, irreps_out, rng):
    """An empty Irreps (or only multiplicity 0) anywhere: no weights, zero output and zero
    VJPs of the right shapes; weights None or an empty array."""
    tp = TensorProduct(irreps1, irreps2, irreps_out, "uvw")
    assert tp.weight_numel == 0
    x1 = rng.standard_normal((3, tp.irreps_in1.dim))
    x2 = rng.standard_normal((3, tp.irreps_in2.dim))
    for weights in (None, np.zeros(0)):
        out, cache = tp.forward(x1, x2, weights)
        np.testing.assert_array_equal(out, np.zeros((3, tp.irreps_out.dim)))
        grad_x1, grad_x2, grad_w = tp.backward(cache, np.ones_like(out))
        np.testing.assert_array_equal(grad_x1, np.zeros_like(x1))
        np.testing.assert_array_equal(grad_x2, np.zeros_like(x2))
        assert grad_w is None if weights is None else grad_w.shape == (0,)


@pytest.mark.parametrize("shared", [True, False])
def test_e3nn_instructions_without_weights(shared, rng):
    """A mix of weighted and unweighted instructions, and a product with no weights at all
    (weight_numel == 0, weights None or empty): backward against finite differences."""
    mixed = TensorProduct(
        "2x1o",
        "1o+0e",
        "2x0e+2x1e+2x1o",
        [(0, 0, 0, "uvu", False), (0, 0, 1, "uvu", True), (0, 1, 2, "uvu", False)],
        shared_weights=shared,
    )
    unweighted = TensorProduct(
        "2x1o", "1o", "2x0e", [(0, 0, 0, "uvu", False)], shared_weights=shared
    )
    assert mixed.weight_numel == 2 and unweighted.weight_numel == 0
    x1, x2 = rng.standard_normal((4, 6)), rng.standard_normal((4, 4))
    cases = [
        (mixed, x2, rng.standard_normal((2,) if shared else (4, 2))),
        (unweighted, x2[:, :3], np.zeros((0,) if shared else (4, 0))),
        (unweighted, x2[:, :3], None),
    ]
    for tp, b, weights in cases:
        out, cache = tp.forward(x1, b, weights)
        c = rng.standard_normal(out.shape)
        grads = tp.backward(cache, c)
        inputs = [x1, b] if weights is None else [x1, b, weights]

        def loss(xs, tp=tp, c=c, weights=weights):
            return float(np.sum(c * tp.forward(xs[0], xs[1], xs[2] if len(xs) > 2 else None)[0]))

        assert_directional_derivatives(loss, inputs, grads[: len(inputs)], rng, step=1e-4)
        if weights is None:
            assert grads[2] is None


@pytest.mark.parametrize("batch", [(0,), (0, 3), (2, 0)])
@pytest.mark.parametrize("shared", [True, False])
def test_e3nn_empty_batch(batch, shared, rng):
    tp = TensorProduct("2x0e+1o", "1o", "2x1o+0e", "uvw", shared_weights=shared)
    x1 = np.zeros((*batch, tp.irreps_in1.dim))
    x2 = np.zeros((*batch, tp.irreps_in2.dim))
    weights = rng.standard_normal((tp.weight_numel,) if shared else (*batch, tp.weight_numel))
    out, cache = tp.forward(x1, x2, weights)
    assert out.shape == (*batch, tp.irreps_out.dim)
    grad_x1, grad_x2, grad_w = tp.backward(cache, out)
    assert grad_x1.shape == x1.shape and grad_x2.shape == x2.shape
    np.testing.assert_array_equal(grad_w, np.zeros_like(weights))


@pytest.mark.parametrize(
    "irreps_in, irreps_out", [("0x0e+2x1o", "3x1o+0x0e"), ("", "2x0e"), ("1o", ""), ("", "")]
)
def test_linear_zero_multiplicities_and_empty_irreps(irreps_in, irreps_out, rng):
    lin = EquivariantLinear(irreps_in, irreps_out)
    for batch in ((3,), (0,)):
        x = rng.standard_normal((*batch, lin.irreps_in.dim))
        weights = lin.init_weights(rng)
        out, cache = lin.forward(x, weights)
        assert out.shape == (*batch, lin.irreps_out.dim)
        grad_x, grad_w = lin.backward(cache, np.ones_like(out))
        assert grad_x.shape == x.shape and grad_w.shape == weights.shape


# ---- EquivariantLinear -----------------------------------------------------------------------


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


def test_linear_explicit_formula(rng):
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
    """(lin, x, weights, rng): irreps with multiplicities 0-3 (l <= 3, repeated irreps allowed;
    sometimes empty), either normalization, batch (n,), (a, b) or empty."""

    def irreps(min_size: int):
        entries = draw(
            st.lists(
                st.tuples(st.integers(0, 3), st.sampled_from(IRREPS_L3)),
                min_size=min_size,
                max_size=4,
            )
        )
        return Irreps(entries)

    irreps_in = irreps(min_size=draw(st.sampled_from([0, 1, 1, 1])))
    irreps_out = irreps(min_size=0)
    if len(irreps_in) > 0:  # mostly some irrep is shared, so the map is not identically zero
        irreps_out = irreps_out + Irreps([(draw(st.integers(1, 3)), irreps_in[0].ir)])
    lin = EquivariantLinear(irreps_in, irreps_out, draw(st.sampled_from(["element", "path"])))
    rng = np.random.default_rng(draw(seeds))
    batch = draw(st.sampled_from([(3,), (2, 2), (0,)]))
    return lin, rng.standard_normal((*batch, irreps_in.dim)), lin.init_weights(rng), rng


@given(problem=linear_problems())
def test_linear_backward_matches_finite_differences(problem):
    lin, x, weights, rng = problem
    out, cache = lin.forward(x, weights)
    c = rng.standard_normal(out.shape)

    def loss(inputs):
        y, _ = lin.forward(*inputs)
        return float(np.sum(c * y) + 0.5 * np.sum(y**2))

    grads = lin.backward(cache, c + out)
    assert_directional_derivatives(loss, [x, weights], grads, rng, step=1e-4)


@given(problem=linear_problems(), rotation=orthogonal_matrices())
def test_linear_equivariance_of_output_and_vjps(problem, rotation):
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


def test_linear_backends_agree(backend, rng):
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


def test_linear_float32(rng):
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


def test_linear_no_shared_irrep_gives_zero_map(rng):
    lin = EquivariantLinear("2x1o", "3x1e")
    assert lin.weight_numel == 0
    out, cache = lin.forward(rng.standard_normal((2, 6)), np.zeros(0))
    np.testing.assert_array_equal(out, np.zeros((2, 9)))
    grad_x, grad_w = lin.backward(cache, rng.standard_normal((2, 9)))
    np.testing.assert_array_equal(grad_x, np.zeros((2, 6)))
    assert grad_w.shape == (0,)


def test_linear_errors(rng):
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
