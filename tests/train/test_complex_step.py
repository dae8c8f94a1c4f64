"""Every block of the model is complex-analytic, forward *and* backward: the contract that lets
training get mixed second derivatives by complex-step differentiation (allegro_ref.train.loss).

For each block f with its hand-written VJP b(x, c) = Jᵀc:
1. forward: Im⟨c, f(x + i h d)⟩ / h equals the real backward's ⟨b(x, c), d⟩ (to rounding), and
   Re f(x + i h d) equals f(x);
2. backward: Im b(x + i h d, c) / h equals the central finite difference of the real b along d
   (the derivative of the backward itself, which is what training uses).
Runs on NumPy and array-api-strict (complex128 on a simulated device).
"""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.backend import float_dtype
from allegro_ref.model import AllegroModel, presets
from allegro_ref.nn import (
    EnvironmentTensorProduct,
    bessel_basis_backward,
    bessel_basis_forward,
    group_edges,
    mlp_backward,
    mlp_forward,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
    scatter_sum,
)
from allegro_ref.nn.irrep_weights import irrep_weighted_backward, irrep_weighted_forward
from allegro_ref.o3 import spherical_harmonics_backward, spherical_harmonics_forward

H = 1e-20  # complex step
FD_STEP = 1e-4


def _to_complex(backend, x):
    return backend.asarray(np.asarray(x, dtype=np.complex128))


def check_block(backend, block, inputs, directions, rng):
    """``block(xs) -> (outputs, vjp)`` with ``vjp(cotangents) -> input gradients``; checks 1
    and 2 of the module docstring for real NumPy ``inputs`` perturbed along ``directions``."""
    outputs, vjp = block([backend.asarray(x) for x in inputs])
    cotangents = [rng.standard_normal(o.shape) for o in outputs]
    grads = [backend.to_numpy(g) for g in vjp([backend.asarray(c) for c in cotangents])]

    stepped = [
        _to_complex(backend, x + 1j * H * d) for x, d in zip(inputs, directions, strict=True)
    ]
    c_outputs, c_vjp = block(stepped)
    c_outputs = [backend.to_numpy(o) for o in c_outputs]
    for output, stepped_out in zip(outputs, c_outputs, strict=True):
        real = backend.to_numpy(output)  # equal to rounding (cancelling sums: absolute scale)
        np.testing.assert_allclose(stepped_out.real, real, rtol=0, atol=1e-13 * np.abs(real).max())
    directional = sum(
        float(np.sum(c * o.imag)) / H for c, o in zip(cotangents, c_outputs, strict=True)
    )
    expected = sum(float(np.sum(g * d)) for g, d in zip(grads, directions, strict=True))
    scale = sum(
        np.linalg.norm(g) * np.linalg.norm(d) for g, d in zip(grads, directions, strict=True)
    )
    assert abs(directional - expected) <= 1e-12 * scale, (directional, expected)

    # The backward is analytic too: complex step of the VJP == finite differences of the VJP.
    c_grads = [backend.to_numpy(g) for g in c_vjp([_to_complex(backend, c) for c in cotangents])]

    def real_vjp(t):
        shifted = [backend.asarray(x + t * d) for x, d in zip(inputs, directions, strict=True)]
        _, v = block(shifted)
        return [backend.to_numpy(g) for g in v([backend.asarray(c) for c in cotangents])]

    plus2, plus, minus, minus2 = (real_vjp(t * FD_STEP) for t in (2, 1, -1, -2))
    for i, stepped_grad in enumerate(c_grads):
        fd = (8 * (plus[i] - minus[i]) - (plus2[i] - minus2[i])) / (12 * FD_STEP)
        cs = stepped_grad.imag / H
        assert np.linalg.norm(cs - fd) <= 1e-7 * max(np.linalg.norm(fd), 1e-300), (
            f"gradient {i}: complex step {cs.ravel()[:4]} vs finite differences {fd.ravel()[:4]}"
        )


def test_float_dtype_follows_complex_inputs(backend):
    xp = backend.xp
    z = backend.asarray(np.ones(2, dtype=np.complex128))
    assert float_dtype(xp, "float32", like=z) == xp.complex64
    assert float_dtype(xp, "float64", like=z) == xp.complex128
    assert float_dtype(xp, xp.float32, like=z) == xp.complex64
    assert float_dtype(xp, xp.complex64) == xp.complex64  # complex dtype objects are accepted
    assert float_dtype(xp, "float64", like=backend.asarray(np.ones(2))) == xp.float64
    with pytest.raises(ValueError, match="not supported"):
        float_dtype(xp, "complex128")


def test_radial_basis_and_cutoff(backend, rng):
    # x on both sides of the cutoff, near 0 (the series branch of j1) and exactly 0.
    x = np.concatenate([[0.0, 1e-3, 0.2], rng.uniform(0.05, 1.3, 12)])
    frequencies = np.arange(1.0, 9.0) + 0.1 * rng.standard_normal(8)

    def block(xs):
        b, cb = bessel_basis_forward(xs[0], xs[1])
        u, cu = polynomial_cutoff_forward(xs[0], 6.0)

        def vjp(cs):
            gx, gw = bessel_basis_backward(cb, cs[0])
            return [gx + polynomial_cutoff_backward(cu, cs[1]), gw]

        return [b, u], vjp

    check_block(
        backend, block, [x, frequencies], [rng.standard_normal(15), rng.standard_normal(8)], rng
    )


@pytest.mark.parametrize("l_max", [1, 3])
def test_spherical_harmonics(backend, rng, l_max):
    vectors = rng.standard_normal((10, 3)) * rng.uniform(0.5, 3.0, (10, 1))

    def block(xs):
        y, cache = spherical_harmonics_forward(l_max, xs[0])
        return [y], lambda cs: [spherical_harmonics_backward(cache, cs[0])]

    check_block(backend, block, [vectors], [rng.standard_normal((10, 3))], rng)


def test_mlp_with_large_pre_activations(backend, rng):
    """SiLU on both branches of its stable form, including |z| >> 1 (exp(-|z|) would not be
    analytic; the branch follows Re z)."""
    weights = [
        rng.uniform(-1.7, 1.7, (4, 6)),
        rng.uniform(-1.7, 1.7, (6, 6)),
        rng.uniform(-1.7, 1.7, (6, 2)),
    ]
    x = rng.standard_normal((9, 4)) * np.array([[0.3], [1.0], [30.0]] * 3)

    def block(xs):
        y, cache = mlp_forward(xs[1:], xs[0])
        return [y], lambda cs: list(_flatten(mlp_backward(xs[1:], cache, cs[0])))

    directions = [rng.standard_normal(a.shape) for a in (x, *weights)]
    check_block(backend, block, [x, *weights], directions, rng)


def _flatten(result):
    grad_x, grad_weights = result
    return [grad_x, *grad_weights]


def test_tensor_product_irrep_weights_and_scatter(backend, rng):
    sh = "0e+1o+2e"
    tp = EnvironmentTensorProduct(sh, sh, "0e+1o+1e+2e", 3)
    n_edges, n_atoms = 7, 3
    index = backend.asarray(rng.integers(0, n_atoms, n_edges))
    groups = group_edges(index)
    w = rng.standard_normal((3, n_edges, 3))  # [U, E, n_irreps], channel-major as in the model
    y = rng.standard_normal((n_edges, 9))
    x = rng.standard_normal((3, n_edges, 9))  # [U, E, dim]
    theta = rng.standard_normal(tp.weight_shape)

    def block(xs):
        env, cache_env = irrep_weighted_forward(xs[0], xs[1], sh)
        density = scatter_sum(backend.xp.permute_dims(env, (1, 0, 2)), index, n_atoms)
        out, cache_tp = tp.forward(xs[2], density, groups, xs[3])

        def vjp(cs):
            g_x, g_density, g_theta = tp.backward(cache_tp, cs[0])
            g_env = backend.xp.take(g_density, index, axis=0)
            gw, gy = irrep_weighted_backward(cache_env, backend.xp.permute_dims(g_env, (1, 0, 2)))
            return [gw, gy, g_x, g_theta]

        return [out], vjp

    inputs = [w, y, x, theta]
    check_block(backend, block, inputs, [rng.standard_normal(a.shape) for a in inputs], rng)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_whole_model_energy(backend, dtype):
    """Im E(r + i h w) / h == w · ∂E/∂r for the whole model, float64 and float32 networks."""
    rng = np.random.default_rng(5)
    config = presets.tiny(
        ["H", "O"],
        r_max=3.0,
        num_tensor_features=3,
        avg_num_neighbors=3.0,
        per_type_energy_scales={"H": 0.5, "O": 2.0},
        per_type_energy_shifts={"H": -1.0, "O": 3.0},
    )
    model = AllegroModel.init(config, seed=3, dtype=dtype)
    model = AllegroModel(config, {k: backend.asarray(v) for k, v in model.params.items()}, dtype)
    centers = np.array([0, 0, 1, 1, 2, 2, 3])
    neighbors = np.array([1, 2, 0, 3, 0, 3, 1])
    vectors = rng.uniform(-1.5, 1.5, (7, 3))
    w = rng.standard_normal((7, 3))
    types = backend.asarray(np.array([0, 1, 1, 0]))
    idx = [backend.asarray(centers), backend.asarray(neighbors)]

    energies, cache = model.forward(backend.asarray(vectors), *idx, types)
    grad = backend.to_numpy(model.backward(cache, backend.xp.ones_like(energies)))
    stepped, _ = model.forward(_to_complex(backend, vectors + 1j * H * w), *idx, types)
    stepped = backend.to_numpy(stepped)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(stepped.real, backend.to_numpy(energies), rtol=rtol, atol=0)
    directional = float(np.sum(stepped.imag)) / H
    assert abs(directional - float(np.sum(grad * w))) <= rtol * np.linalg.norm(
        grad
    ) * np.linalg.norm(w)
