"""The blocks' forward-mode derivatives, against directional finite differences (float64):

1. ``*_jvp``: the tangent of the forward along ẋ equals the central difference of the forward;
2. ``*_backward_jvp``, about the cotangents that the backward kept (``keep_cotangents``),
   equals the central difference of the backward as the inputs move along ẋ and the cotangent
   along ġ (forward-over-reverse; only the gradients that the model's training needs are
   checked); keeping the cotangents changes nothing the backward returns.

Runs on NumPy and array-api-strict. The whole model is checked against complex step in
tests/train/test_loss.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.nn import (
    EnvironmentTensorProduct,
    bessel_basis_backward,
    bessel_basis_backward_jvp,
    bessel_basis_forward,
    bessel_basis_jvp,
    environment_density_backward,
    environment_density_backward_jvp,
    environment_density_forward,
    environment_density_jvp,
    group_edges,
    mlp_backward,
    mlp_backward_jvp,
    mlp_forward,
    mlp_jvp,
    polynomial_cutoff_forward,
    polynomial_cutoff_jvp,
)
from allegro_ref.nn.irrep_weights import (
    irrep_weighted_backward,
    irrep_weighted_backward_jvp,
    irrep_weighted_forward,
    irrep_weighted_jvp,
)
from allegro_ref.o3 import spherical_harmonics_forward, spherical_harmonics_jvp

STEP = 1e-4


def _central(f, step=STEP):
    """Fourth-order central difference of ``f(t) -> list of NumPy arrays`` at t = 0."""
    plus2, plus, minus, minus2 = (f(t * step) for t in (2, 1, -1, -2))
    return [
        (8 * (a - b) - (c - d)) / (12 * step)
        for a, b, c, d in zip(plus, minus, plus2, minus2, strict=True)
    ]


def _close(actual, expected, what):
    for i, (value, e) in enumerate(zip(actual, expected, strict=True)):
        a = np.asarray(value)
        assert a.shape == e.shape, (what, i, a.shape, e.shape)
        assert np.linalg.norm(a - e) <= 1e-8 * max(np.linalg.norm(e), 1e-12), (what, i)


def check(backend, forward, backward, inputs, tangents, rng):
    """``forward(xs) -> (outputs, cache)``; ``backward(xs, gs) -> wanted gradients``;
    ``forward.jvp(cache, dxs) -> (output tangents, tangent cache)``;
    ``backward.jvp(cache, tangent cache, gs, dgs) -> the tangents of the wanted gradients``."""
    put = lambda arrays: [backend.asarray(a) for a in arrays]  # noqa: E731
    get = lambda arrays: [backend.to_numpy(a) for a in arrays]  # noqa: E731
    outputs, cache = forward(put(inputs))
    cotangents = [rng.standard_normal(o.shape) for o in outputs]
    cotangents_dot = [rng.standard_normal(o.shape) for o in outputs]
    output_dot, tangent_cache = forward.jvp(cache, put(tangents))

    def moved(t):
        return put([x + t * d for x, d in zip(inputs, tangents, strict=True)])

    _close(get(output_dot), _central(lambda t: get(forward(moved(t))[0])), "jvp")
    tangent = backward.jvp(cache, tangent_cache, put(cotangents), put(cotangents_dot))

    def backward_along(t):
        gs = [c + t * d for c, d in zip(cotangents, cotangents_dot, strict=True)]
        return get(backward(moved(t), put(gs)))

    _close(get(tangent), _central(backward_along), "backward_jvp")


class _Block:
    """A forward with its ``jvp`` attached (for ``check``)."""

    def __init__(self, forward, jvp):
        self.forward, self.jvp = forward, jvp

    def __call__(self, xs):
        return self.forward(xs)


def test_mlp(backend, rng):
    weights = [rng.uniform(-1.7, 1.7, s) for s in ((4, 6), (6, 6), (6, 2))]
    x = rng.standard_normal((9, 4)) * np.array([[0.3], [1.0], [30.0]] * 3)  # both SiLU branches
    w = [backend.asarray(a) for a in weights]
    forward = _Block(
        lambda xs: (lambda y, c: ([y], c))(*mlp_forward(w, xs[0])),
        lambda c, dxs: (lambda y, t: ([y], t))(*mlp_jvp(w, c, dxs[0])),
    )

    def backward(xs, gs):
        grad_x, grad_w = mlp_backward(w, mlp_forward(w, xs[0])[1], gs[0])
        return [grad_x, *grad_w]

    def backward_jvp(c, t, gs, dgs):
        grad_x, grad_w, kept = mlp_backward(w, c, gs[0], keep_cotangents=True)
        unkept = backward([backend.asarray(x)], gs)
        _close(*([backend.to_numpy(a) for a in b] for b in ([grad_x, *grad_w], unkept)), "kept")
        grad_x_dot, grad_w_dot = mlp_backward_jvp(w, c, t, kept, dgs[0])
        return [grad_x_dot, *grad_w_dot]

    backward.jvp = backward_jvp
    check(backend, forward, backward, [x], [rng.standard_normal(x.shape)], rng)


def test_radial_basis_and_cutoff(backend, rng):
    x = np.concatenate([[0.0, 1e-3, 0.2], rng.uniform(0.05, 0.95, 12)])  # inside the cutoff
    frequencies = backend.asarray(np.arange(1.0, 9.0) + 0.1 * rng.standard_normal(8))

    def run(xs):
        b, cb = bessel_basis_forward(xs[0], frequencies)
        u, cu = polynomial_cutoff_forward(xs[0], 6.0)
        return [b, u], (cb, cu)

    forward = _Block(
        run,
        lambda c, dxs: (
            [bessel_basis_jvp(c[0], dxs[0]), polynomial_cutoff_jvp(c[1], dxs[0])],
            dxs[0],
        ),
    )

    def backward(xs, gs):
        return [bessel_basis_backward(run(xs)[1][0], gs[0])[1]]

    def backward_jvp(c, x_dot, gs, dgs):
        return [bessel_basis_backward_jvp(c[0], x_dot, gs[0], dgs[0])]

    backward.jvp = backward_jvp
    check(backend, forward, backward, [x], [rng.standard_normal(x.shape)], rng)


@pytest.mark.parametrize("normalize", [True, False])
def test_spherical_harmonics(backend, rng, normalize):
    vectors = rng.standard_normal((10, 3)) * rng.uniform(0.5, 3.0, (10, 1))
    directions = rng.standard_normal((10, 3))
    _, cache = spherical_harmonics_forward(3, backend.asarray(vectors), normalize=normalize)
    tangent = backend.to_numpy(spherical_harmonics_jvp(cache, backend.asarray(directions)))

    def along(t):
        moved = backend.asarray(vectors + t * directions)
        return [backend.to_numpy(spherical_harmonics_forward(3, moved, normalize=normalize)[0])]

    _close([tangent], _central(along), "spherical_harmonics_jvp")


def test_irrep_weights(backend, rng):
    sh = "0e+1o+2e"
    w, y = rng.standard_normal((3, 7, 3)), rng.standard_normal((7, 9))  # [U, E, n], [E, dim]

    def run(xs):
        out, cache = irrep_weighted_forward(xs[0], xs[1], sh)
        return [out], cache

    forward = _Block(run, lambda c, dxs: ([irrep_weighted_jvp(c, *dxs)], dxs[1]))

    def backward(xs, gs):
        return [irrep_weighted_backward(run(xs)[1], gs[0])[0]]

    def backward_jvp(c, y_dot, gs, dgs):
        return [irrep_weighted_backward_jvp(c, y_dot, gs[0], dgs[0])]

    backward.jvp = backward_jvp
    check(backend, forward, backward, [w, y], [rng.standard_normal(a.shape) for a in (w, y)], rng)


@pytest.mark.parametrize("sorted_edges", [True, False])
def test_environment_density(backend, rng, sorted_edges):
    sh, n_atoms = "0e+1o+2e", 4
    centers = np.array([0, 0, 1, 1, 3, 3]) if sorted_edges else np.array([2, 0, 2, 1, 0, 2, 0])
    groups = group_edges(backend.asarray(centers))
    w, y = rng.standard_normal((centers.size, 5, 3)), rng.standard_normal((centers.size, 9))

    def run(xs):
        density, cache = environment_density_forward(xs[0], xs[1], sh, groups, n_atoms)
        return [density], cache

    forward = _Block(
        run,
        lambda c, dxs: (lambda a, t: ([a], t))(*environment_density_jvp(c, *dxs, n_atoms)),
    )

    def backward(xs, gs):
        return [environment_density_backward(run(xs)[1], gs[0])[0]]

    def backward_jvp(c, t, gs, dgs):
        return [environment_density_backward_jvp(c, t, gs[0], dgs[0])]

    backward.jvp = backward_jvp
    check(backend, forward, backward, [w, y], [rng.standard_normal(a.shape) for a in (w, y)], rng)


@pytest.mark.parametrize("sorted_edges", [True, False])
def test_tensor_product(backend, rng, sorted_edges):
    tp = EnvironmentTensorProduct("0e+1o+2e", "0e+1o+2e", "0e+1o+1e+2e", 3)
    centers = np.array([0, 0, 1, 1, 2, 2]) if sorted_edges else np.array([2, 0, 2, 1, 0, 2, 0])
    groups, n_atoms = group_edges(backend.asarray(centers)), 4
    x, env = rng.standard_normal((3, centers.size, 9)), rng.standard_normal((n_atoms, 3, 9))
    theta = backend.asarray(rng.standard_normal(tp.weight_shape))

    def run(xs):
        out, cache = tp.forward(xs[0], xs[1], groups, theta)
        return [out], cache

    forward = _Block(run, lambda c, dxs: (lambda o, t: ([o], t))(*tp.jvp(c, *dxs)))

    def backward(xs, gs):
        return list(tp.backward(run(xs)[1], gs[0]))

    def backward_jvp(c, t, gs, dgs):
        *grads, kept = tp.backward(c, gs[0], keep_cotangents=True)
        unkept = tp.backward(c, gs[0])
        _close(*([backend.to_numpy(a) for a in b] for b in (grads, unkept)), "kept")
        assert tp.backward(c, gs[0], weight_gradients=False)[2] is None
        return list(tp.backward_jvp(c, t, kept, dgs[0]))

    backward.jvp = backward_jvp
    tangents = [rng.standard_normal(a.shape) for a in (x, env)]
    check(backend, forward, backward, [x, env], tangents, rng)
