"""Bias-free MLP and SiLU: explicit formula, finite differences for the input and every weight,
float32, backends, stability, errors, and agreement with nequip's ScalarMLPFunction."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st

from allegro_ref.nn import mlp_backward, mlp_forward, mlp_init, silu
from tests.nn import assert_directional_derivatives
from tests.strategies import seeds

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nequip_blocks.npz"
NONLINEARITIES = st.sampled_from(["silu", None])


def test_two_layer_matches_explicit_formula():
    """y = silu(x @ W0 / √d0) @ W1 · √2/√d1, with scipy's logistic function as the sigmoid."""
    rng = np.random.default_rng(1)
    w0, w1 = mlp_init([5, 7, 3], rng)
    x = rng.standard_normal((11, 5))
    z = x @ w0 / math.sqrt(5)
    expected = (z * scipy.special.expit(z)) @ w1 * (math.sqrt(2) / math.sqrt(7))
    y, _ = mlp_forward([w0, w1], x)
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-14)
    # Without a nonlinearity every layer has gain 1: y = x @ W0 @ W1 / √(d0 d1).
    y_linear, _ = mlp_forward([w0, w1], x, nonlinearity=None)
    np.testing.assert_allclose(y_linear, x @ w0 @ w1 / math.sqrt(35), rtol=1e-13, atol=1e-14)
    # A single layer is the official linear: y = x @ W / √d_in.
    y_single, _ = mlp_forward([w0], x)
    np.testing.assert_allclose(y_single, x @ w0 / math.sqrt(5), rtol=1e-14, atol=1e-14)


@st.composite
def mlp_problems(draw):
    """(weights, x, nonlinearity, seed): 1-4 layers of widths 1-7, x [n, d0] or [a, b, d0]."""
    dims = draw(st.lists(st.integers(1, 7), min_size=2, max_size=5))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    leading = draw(st.sampled_from([(1,), (6,), (2, 3)]))
    x = rng.standard_normal((*leading, dims[0])) * draw(st.sampled_from([0.3, 1.0, 3.0]))
    return mlp_init(dims, rng), x, draw(NONLINEARITIES), seed


@given(problem=mlp_problems())
def test_backward_matches_finite_differences(problem):
    weights, x, nonlinearity, seed = problem
    rng = np.random.default_rng(seed + 1)
    y, cache = mlp_forward(weights, x, nonlinearity)
    grad_y = rng.standard_normal(y.shape)
    grad_x, grad_weights = mlp_backward(weights, cache, grad_y)
    assert grad_x.shape == x.shape
    assert [g.shape for g in grad_weights] == [w.shape for w in weights]

    def loss(inputs):
        return float(np.sum(mlp_forward(inputs[1:], inputs[0], nonlinearity)[0] * grad_y))

    assert_directional_derivatives(loss, [x, *weights], [grad_x, *grad_weights], rng)
    # Without weight gradients (forces): the same input gradient, bit for bit.
    grad_x_only, none = mlp_backward(weights, cache, grad_y, weight_gradients=False)
    assert none is None
    np.testing.assert_array_equal(grad_x_only, grad_x)


def test_float32_close_to_float64():
    rng = np.random.default_rng(2)
    weights = mlp_init([8, 16, 16, 4], rng)
    x = rng.standard_normal((40, 8))
    grad_y = rng.standard_normal((40, 4))
    y64, c64 = mlp_forward(weights, x)
    gx64, gw64 = mlp_backward(weights, c64, grad_y)
    w32 = [w.astype(np.float32) for w in weights]
    y32, c32 = mlp_forward(w32, x.astype(np.float32))
    gx32, gw32 = mlp_backward(w32, c32, grad_y.astype(np.float32))
    assert y32.dtype == gx32.dtype == np.float32 and all(g.dtype == np.float32 for g in gw32)
    for a32, a64 in [(y32, y64), (gx32, gx64), *zip(gw32, gw64, strict=True)]:
        np.testing.assert_allclose(a32, a64, rtol=0, atol=1e-5 * np.abs(a64).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_is_stable_and_exact_at_large_arguments(dtype):
    z = np.array([-1e4, -800.0, -50.0, -1.0, 0.0, 1.0, 50.0, 800.0, 1e4], dtype=dtype)
    weights = [np.eye(1, dtype=dtype), np.eye(1, dtype=dtype)]
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        s = silu(z)
        # A 2-layer MLP on identity weights exposes silu'(z) through the backward.
        _, cache = mlp_forward(weights, z[:, None])
        grad_z, _ = mlp_backward(weights, cache, np.ones((z.size, 1), dtype=dtype))
    assert s.dtype == dtype
    reference = z.astype(np.float64) * scipy.special.expit(z.astype(np.float64))
    np.testing.assert_allclose(s, reference, rtol=4 * np.finfo(dtype).eps, atol=0)
    assert s[0] == 0 and s[-1] == z[-1]
    # silu'(z) = σ(z)(1 + z(1 − σ(z))): 0 far left, 1/2 at 0, 1 far right (times the α_1 = √2).
    grad_silu = grad_z[:, 0] / np.sqrt(dtype(2))
    sigma = scipy.special.expit(z.astype(np.float64))
    expected = sigma * (1 + z.astype(np.float64) * (1 - sigma))
    np.testing.assert_allclose(grad_silu, expected, rtol=8 * np.finfo(dtype).eps, atol=1e-30)
    assert grad_silu[0] == 0 and grad_silu[4] == 0.5 and grad_silu[-1] == 1


def test_mlp_init_shapes_and_distribution():
    weights = mlp_init([300, 200, 1], np.random.default_rng(5))
    assert [w.shape for w in weights] == [(300, 200), (200, 1)]
    assert all(w.dtype == np.float64 for w in weights)
    w = weights[0]
    assert np.abs(w).max() <= math.sqrt(3)
    # U(−√3, √3): mean 0, variance 1 (60 000 samples: standard errors 0.004 and 0.003).
    assert abs(w.mean()) < 0.02 and abs(w.var() - 1) < 0.02


def test_forward_normalisation_keeps_unit_scale():
    """With α = 1/√d_in a linear layer maps unit-variance inputs to unit-variance outputs."""
    rng = np.random.default_rng(6)
    (w,) = mlp_init([256, 256], rng)
    y, _ = mlp_forward([w], rng.standard_normal((400, 256)))
    assert abs(y.var() - 1) < 0.05


@pytest.mark.parametrize(
    ("weights", "x", "nonlinearity", "message"),
    [
        ([np.zeros((3, 2))], np.zeros((4, 3)), "relu", "unknown MLP nonlinearity 'relu'"),
        ([], np.zeros((4, 3)), "silu", "at least one weight"),
        ([np.zeros((5, 2))], np.zeros((4, 3)), "silu", "width 3 but its first weight expects 5"),
        ([np.zeros((3, 2)), np.zeros((4, 1))], np.zeros((4, 3)), "silu", "weight 0 outputs 2"),
        ([np.zeros((3, 2), np.float32)], np.zeros((4, 3)), "silu", "dtype float32 but the input"),
        ([np.zeros((3, 2, 1))], np.zeros((4, 3)), "silu", "must be 2-D"),
    ],
)
def test_errors_name_the_problem(weights, x, nonlinearity, message):
    with pytest.raises(ValueError, match=message):
        mlp_forward(weights, x, nonlinearity)


@pytest.mark.parametrize("dims", [[4], [3, 0, 2], []])
def test_mlp_init_rejects_bad_dims(dims):
    with pytest.raises(ValueError, match="at least two positive widths"):
        mlp_init(dims, np.random.default_rng(0))


@pytest.mark.parametrize("nonlinearity", ["silu", None])
def test_backends_agree(backend, nonlinearity):
    rng = np.random.default_rng(4)
    weights = mlp_init([6, 9, 9, 3], rng)
    x = rng.standard_normal((2, 5, 6))
    grad_y = rng.standard_normal((2, 5, 3))
    y, cache = mlp_forward(weights, x, nonlinearity)
    grad_x, grad_weights = mlp_backward(weights, cache, grad_y)
    w_b = [backend.asarray(w) for w in weights]
    y_b, cache_b = mlp_forward(w_b, backend.asarray(x), nonlinearity)
    grad_x_b, grad_weights_b = mlp_backward(w_b, cache_b, backend.asarray(grad_y))
    for got, expected in [
        (y_b, y),
        (grad_x_b, grad_x),
        *zip(grad_weights_b, grad_weights, strict=True),
    ]:
        np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("case", ["silu_2layer", "silu_3layer", "linear", "linear_2layer"])
def test_matches_official_scalar_mlp(case):
    f = np.load(FIXTURE)
    prefix = f"mlp.{case}."
    d = {k.removeprefix(prefix): f[k] for k in f.files if k.startswith(prefix)}
    n_layers = sum(k.startswith("weight") for k in d)
    weights = [d[f"weight{k}"] for k in range(n_layers)]
    nonlinearity = None if str(d["nonlinearity"]) == "none" else str(d["nonlinearity"])
    y, cache = mlp_forward(weights, d["x"], nonlinearity)
    grad_x, grad_weights = mlp_backward(weights, cache, d["grad_y"])
    np.testing.assert_allclose(y, d["y"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_x, d["grad_x"], rtol=1e-12, atol=1e-12)
    for k, g in enumerate(grad_weights):
        np.testing.assert_allclose(g, d[f"grad_weight{k}"], rtol=1e-12, atol=1e-12)
