r"""Bias-free multilayer perceptron with run-time weight normalization, as in the official code.

Given raw weights $W_k$ of shape `[d_k, d_{k+1}]` ($k = 0, \dots, L-1$, stored (in, out) and
initialized $U(-\sqrt 3, \sqrt 3)$, unit variance) the MLP computes, on the last axis of
$x = h_0$ `[..., d_0]`,

$$z_k = h_k\, (\alpha_k W_k), \qquad h_{k+1} = \mathrm{silu}(z_k) \quad (k < L-1), \qquad
  y = z_{L-1}$$

(no activation after the last layer), with $\alpha_0 = 1/\sqrt{d_0}$ and
$\alpha_k = \sqrt 2/\sqrt{d_k}$ for $k \ge 1$ (a "forward-normalized" init: unit-variance inputs
give unit-variance outputs, the $\sqrt 2$ standing in for the activation's gain). Without a
nonlinearity every $\alpha_k = 1/\sqrt{d_k}$. A one-layer MLP `[W]` is the official single linear
layer $y = x W / \sqrt{d_{in}}$. There is no bias anywhere: $\mathrm{silu}(0) = 0$, so an edge
whose inputs vanish at the cutoff keeps vanishing (nequip-allegro 0.8.3's `ScalarMLPFunction`
with `bias=False` and its forward-normalized initialization).

$\mathrm{silu}(z) = z\, \sigma(z)$ with $\sigma$ the logistic sigmoid (torch's plain SiLU, not
normalized).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, namespace

__all__ = [
    "mlp_init",
    "mlp_forward",
    "mlp_backward",
    "MlpCotangents",
    "mlp_jvp",
    "mlp_backward_jvp",
    "silu",
]

_NONLINEARITIES = ("silu", None)


def mlp_init(dims: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
    r"""Random raw weights for an MLP of layer widths `dims = [d_0, ..., d_L]`: a list of $L$
    float64 NumPy arrays `[d_k, d_{k+1}]` drawn from $U(-\sqrt 3, \sqrt 3)$ (mean 0, variance 1).

    Raises:
        ValueError: fewer than two widths, or a width below 1.
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(
            f"MLP dims need at least two positive widths [d_in, ..., d_out]; got {dims}"
        )
    bound = math.sqrt(3.0)
    return [
        rng.uniform(-bound, bound, size=(d_in, d_out))
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)
    ]


def _sigmoids(xp, z, complement: bool):
    """σ(z), and σ(−z) = 1 − σ(z) when ``complement``, accurate to rounding for every finite z.

    Real z: σ(±z) = exp(min(±z, 0)) / (1 + exp(−|z|)). Every exponent is <= 0, so nothing
    overflows, tiny values underflow gracefully, and σ(−z) is not formed as 1 − σ(z) (which
    cancels for large z). Branch-free: ``where`` costs ~10 times an ``exp`` on NumPy.

    Complex z = x + iy (complex-step differentiation): min, max and |z| are not analytic, so
    the branch follows x, with t = exp(∓z) = e^{−|x|} (cos y ∓ i sin y) (|t| <= 1, never
    overflowing) and σ = 1/(1+t) or t/(1+t), 1/(1+t) = conj(1+t)/|1+t|². Built from real
    exp, cos and sin: NumPy's complex64 exp is ~4x slower than these three together.
    """
    if xp.isdtype(z.dtype, "complex floating"):
        x, y = xp.real(z), xp.imag(z)
        positive = x >= 0
        a = xp.exp(-xp.abs(x))
        # t = exp(-z) for x >= 0, exp(z) for x < 0: a (cos y ∓ i sin y), |t| <= 1
        re_t = a * xp.cos(y)
        im_t = xp.where(positive, -a, a) * xp.sin(y)
        p = 1.0 + re_t
        inv = 1.0 / (p * p + im_t * im_t)
        big = (p * inv) - 1j * (im_t * inv)  # 1 / (1 + t)
        small = (re_t + 1j * im_t) * big  # t / (1 + t)
        sigma = xp.where(positive, big, small)
        return (sigma, xp.where(positive, small, big)) if complement else (sigma, None)
    denominator = 1.0 / (1.0 + xp.exp(-xp.abs(z)))
    sigma = xp.exp(xp.minimum(z, 0.0)) * denominator
    if not complement:
        return sigma, None
    return sigma, xp.exp(-xp.maximum(z, 0.0)) * denominator


def silu(z: Array) -> Array:
    r"""$\mathrm{silu}(z) = z\, \sigma(z)$, elementwise, finite and warning-free for any finite
    $z$."""
    sigma, _ = _sigmoids(namespace(z), z, complement=False)
    return z * sigma


def _silu_and_grad(xp, z):
    """(silu(z), silu'(z), σ(z)) with silu'(z) = σ(z) (1 + z σ(−z))."""
    sigma, one_minus_sigma = _sigmoids(xp, z, complement=True)
    return z * sigma, sigma * (1.0 + z * one_minus_sigma), sigma


def _alphas(weights: Sequence[Any], nonlinearity: str | None) -> list[float]:
    """α_k = gain_k / √d_k with gain √2 after an activation, else 1."""
    gains = [1.0] + [math.sqrt(2.0) if nonlinearity is not None else 1.0] * (len(weights) - 1)
    return [g / math.sqrt(w.shape[0]) for g, w in zip(gains, weights, strict=True)]


def _check(weights: Sequence[Any], x: Any, nonlinearity: str | None) -> None:
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(
            f"unknown MLP nonlinearity {nonlinearity!r}; supported: {list(_NONLINEARITIES)}"
        )
    if len(weights) == 0:
        raise ValueError("an MLP needs at least one weight matrix; got an empty list")
    if x.shape[-1] != weights[0].shape[0]:
        raise ValueError(
            f"MLP input has width {x.shape[-1]} but its first weight expects "
            f"{weights[0].shape[0]} (weight shape {tuple(weights[0].shape)})"
        )
    for k, w in enumerate(weights):
        if w.ndim != 2:
            raise ValueError(f"MLP weight {k} must be 2-D [d_in, d_out]; got {tuple(w.shape)}")
        if k > 0 and w.shape[0] != weights[k - 1].shape[1]:
            raise ValueError(
                f"MLP weight {k} has shape {tuple(w.shape)} but weight {k - 1} outputs "
                f"{weights[k - 1].shape[1]} features"
            )
        if w.dtype != x.dtype:
            raise ValueError(f"MLP weight {k} has dtype {w.dtype} but the input has {x.dtype}")


def mlp_forward(
    weights: Sequence[Array], x: Array, nonlinearity: str | None = "silu"
) -> tuple[Array, tuple]:
    r"""Apply the MLP (module docstring) to the last axis of `x`.

    Args:
        weights: $L$ raw weights `[d_k, d_{k+1}]` of the dtype of `x`.
        x: `[..., d_0]` inputs (e.g. `[n_edges, d_0]`).
        nonlinearity: `"silu"` or `None` (purely linear; all gains 1).

    Returns:
        `(y, cache)`: `y` `[..., d_L]`; `cache` = `(x, [(h_{k+1}, silu'(z_k), σ(z_k)) for the
            hidden layers], nonlinearity)`: activations, slopes and sigmoids (kept, not
            recomputed), so neither the backward nor `mlp_jvp` evaluates an exponential.

    Raises:
        ValueError: an unknown nonlinearity, no weights, or widths and dtypes that do not chain.

    Examples:
        ```python
        import numpy as np
        from allegro_ref.nn import mlp_backward, mlp_forward, mlp_init

        rng = np.random.default_rng(0)
        weights = mlp_init([8, 16, 1], rng)  # 8 -> 16 (SiLU) -> 1
        x = rng.standard_normal((5, 8))
        y, cache = mlp_forward(weights, x, nonlinearity="silu")
        grad_x, grad_weights = mlp_backward(weights, cache, np.ones_like(y))
        print(y.shape, grad_x.shape, [g.shape for g in grad_weights])
        # (5, 1) (5, 8) [(8, 16), (16, 1)]
        ```
    """
    _check(weights, x, nonlinearity)
    alphas = _alphas(weights, nonlinearity)
    xp = namespace(x)
    h = x
    hidden = []
    for w, alpha in zip(weights[:-1], alphas[:-1], strict=True):
        z = h @ (alpha * w)
        if nonlinearity is None:
            h, slope, sigma = z, None, None
        else:
            h, slope, sigma = _silu_and_grad(xp, z)
        hidden.append((h, slope, sigma))
    y = h @ (alphas[-1] * weights[-1])
    return y, (x, hidden, nonlinearity)


class MlpCotangents(NamedTuple):
    r"""The cotangents of a backward pass, kept for `mlp_backward_jvp`: per layer $k$,
    ``grad_z[k]`` $= \partial L/\partial z_k$ `[..., d_{k+1}]` and ``grad_h[k]``
    $= \partial L/\partial h_k$ `[..., d_k]` (before the activation's slope)."""

    grad_z: tuple
    grad_h: tuple


def mlp_backward(
    weights: Sequence[Array],
    cache: tuple,
    grad_y: Array,
    weight_gradients: bool = True,
    keep_cotangents: bool = False,
) -> tuple:
    r"""Vector-Jacobian product of [`mlp_forward`][allegro_ref.nn.mlp.mlp_forward].

    Per layer, from the top: for $z = h\, (\alpha W)$,
    $\partial L/\partial W = \alpha\, h^T\, \partial L/\partial z$ (summed over all leading
    axes) and $\partial L/\partial h = \partial L/\partial z\, (\alpha W)^T$; through the
    activation $\partial L/\partial z = \partial L/\partial h \odot \mathrm{silu}'(z)$.

    Args:
        weights: the weights given to the forward.
        cache: from the forward.
        grad_y: `[..., d_L]` gradient of a scalar with respect to `y`.
        weight_gradients: also compute $\partial L/\partial W$ (a third of the work; forces need
            only $\partial L/\partial x$).
        keep_cotangents: also return the `MlpCotangents` (what `mlp_backward_jvp` reads).

    Returns:
        `(grad_x, grad_weights)`: `grad_x` `[..., d_0]` and the list of weight gradients
            `[d_k, d_{k+1}]` (`None` without `weight_gradients`); then the `MlpCotangents`
            if `keep_cotangents`.
    """
    x, hidden, nonlinearity = cache
    xp = namespace(x, grad_y)
    alphas = _alphas(weights, nonlinearity)
    grad_weights: list[Any] = [None] * len(weights)
    grad_z, grad_h = [None] * len(weights), [None] * len(weights)
    grad = grad_y  # ∂L/∂z_k, walking k downwards
    for k in range(len(weights) - 1, -1, -1):
        # The layer input h_k and the activation slope silu'(z_{k-1}), from the forward.
        if k == 0:
            h = x
        else:
            h, slope, _ = hidden[k - 1]
        if weight_gradients:
            h_rows = xp.reshape(h, (-1, h.shape[-1]))
            grad_rows = xp.reshape(grad, (-1, grad.shape[-1]))
            grad_weights[k] = alphas[k] * (h_rows.T @ grad_rows)
        grad_h_k = grad @ (alphas[k] * weights[k]).T  # ∂L/∂h_k
        if keep_cotangents:  # else nothing outlives its layer
            grad_z[k], grad_h[k] = grad, grad_h_k
        grad = grad_h_k * slope if k > 0 and nonlinearity is not None else grad_h_k
    outputs = (grad, grad_weights if weight_gradients else None)
    return (*outputs, MlpCotangents(tuple(grad_z), tuple(grad_h))) if keep_cotangents else outputs


# ---- forward-mode: the tangent of the forward, and of the backward ---------------------------


def _silu_second(slope, sigma):
    r"""$\mathrm{silu}''(z) = \sigma (1 - \sigma) (2 + z (1 - 2\sigma))
    = 2 \sigma (1 - \sigma) + (s - \sigma)(1 - 2 \sigma)$ from the slope
    $s = \mathrm{silu}'(z) = \sigma + z \sigma (1 - \sigma)$ and $\sigma = \sigma(z)$ of the
    forward (no exponential, no z; exact to rounding in absolute terms)."""
    return 2.0 * sigma * (1.0 - sigma) + (slope - sigma) * (1.0 - 2.0 * sigma)


def mlp_jvp(weights: Sequence[Array], cache: tuple, x_dot: Array) -> tuple[Array, tuple]:
    r"""Jacobian-vector product of [`mlp_forward`][allegro_ref.nn.mlp.mlp_forward] at the
    point of `cache`: $\dot z_k = \dot h_k\, (\alpha_k W_k)$,
    $\dot h_{k+1} = \mathrm{silu}'(z_k)\, \dot z_k$.

    Args:
        weights: the weights given to the forward (real dtype).
        cache: from the forward.
        x_dot: `[..., d_0]` tangent of the input.

    Returns:
        `(y_dot [..., d_L], tangent_cache)`; `tangent_cache` = `(x_dot, [(h_dot_{k+1},
            silu''(z_k) ż_k) for the hidden layers])`, the tangents of the forward cache, for
            [`mlp_backward_jvp`][allegro_ref.nn.mlp.mlp_backward_jvp].
    """
    _, hidden, nonlinearity = cache
    alphas = _alphas(weights, nonlinearity)
    h_dot, tangents = x_dot, []
    for (_, slope, sigma), w, alpha in zip(hidden, weights[:-1], alphas[:-1], strict=True):
        z_dot = h_dot @ (alpha * w)
        if nonlinearity is None:
            h_dot, slope_dot = z_dot, None
        else:
            h_dot, slope_dot = slope * z_dot, _silu_second(slope, sigma) * z_dot
        tangents.append((h_dot, slope_dot))
    return h_dot @ (alphas[-1] * weights[-1]), (x_dot, tangents)


def mlp_backward_jvp(
    weights: Sequence[Array],
    cache: tuple,
    tangent_cache: tuple,
    cotangents: MlpCotangents,
    grad_y_dot: Array,
) -> tuple[Array, list[Array]]:
    r"""Tangent of [`mlp_backward`][allegro_ref.nn.mlp.mlp_backward] (forward-over-reverse),
    the weights fixed: the input moves along `tangent_cache` (`mlp_jvp`) and the cotangent
    along `grad_y_dot`, about the backward that kept `cotangents`. Per layer, the product rule
    on the backward's two lines:

    $$\dot{\bar W}_k = \alpha_k (\dot h_k^T \bar z_k + h_k^T \dot{\bar z}_k), \quad
      \dot{\bar h}_k = \dot{\bar z}_k (\alpha_k W_k)^T, \quad
      \dot{\bar z}_{k-1} = \dot{\bar h}_k \odot \mathrm{silu}'(z_{k-1})
        + \bar h_k \odot \mathrm{silu}''(z_{k-1})\, \dot z_{k-1},$$

    with $\bar z_k$, $\bar h_k$ read from `cotangents`, not recomputed.

    Returns:
        `(grad_x_dot, grad_weights_dot)`: the tangent of $\partial L/\partial x$ `[..., d_0]`
            and of the weight gradients `[d_k, d_{k+1}]`.
    """
    x, hidden, nonlinearity = cache
    x_dot, tangents = tangent_cache
    xp = namespace(x, grad_y_dot)
    alphas = _alphas(weights, nonlinearity)
    grad_weights_dot: list[Any] = [None] * len(weights)
    grad_dot = grad_y_dot  # the tangent of ∂L/∂z_k, walking k downwards
    for k in range(len(weights) - 1, -1, -1):
        h, h_dot = (x, x_dot) if k == 0 else (hidden[k - 1][0], tangents[k - 1][0])
        grad = cotangents.grad_z[k]
        h_rows, grad_rows = xp.reshape(h, (-1, h.shape[-1])), xp.reshape(grad, (-1, grad.shape[-1]))
        product = xp.reshape(h_dot, (-1, h.shape[-1])).T @ grad_rows
        grad_weights_dot[k] = alphas[k] * (
            product + h_rows.T @ xp.reshape(grad_dot, (-1, grad.shape[-1]))
        )
        grad_dot = grad_dot @ (alphas[k] * weights[k]).T  # the tangent of ∂L/∂h_k
        if k > 0 and nonlinearity is not None:
            slope, slope_dot = hidden[k - 1][1], tangents[k - 1][1]
            grad_dot = grad_dot * slope + cotangents.grad_h[k] * slope_dot
    return grad_dot, grad_weights_dot
