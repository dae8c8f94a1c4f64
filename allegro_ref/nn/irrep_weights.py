r"""One weight per (channel, irrep): the "weighted spherical harmonics" of Allegro.

Allegro turns a per-edge scalar vector into an equivariant tensor by multiplying each spherical
harmonic component by a learned weight that depends only on the channel $u$ and on the irrep
(degree $l$) the component belongs to, shared over $m$ (official option
`weight_individual_irreps`):

$$\mathrm{out}_{ue,(lm)} = w_{uel}\, Y_{e,(lm)}.$$

Scaling a whole irrep block by a scalar commutes with rotations, so `out` transforms like $Y$
in every channel. With the 0/1 matrix $P_{l,(l'm)} = \delta_{ll'}$ that copies each irrep's
weight to its components, $\mathrm{out} = (w P) \odot Y$: the expansion is a matrix product and
the product a plain broadcast. Backward (a bilinear form), with $g = \partial L/\partial
\mathrm{out}$:

$$\frac{\partial L}{\partial w_{uel}} = \sum_m g_{ue,(lm)}\, Y_{e,(lm)} = \big((g \odot Y)
  P^T\big)_{uel}, \qquad \frac{\partial L}{\partial Y_{e,(lm)}} = \sum_u g_{ue,(lm)}\, w_{uel}
  = \Big(\sum_u g \odot (w P)\Big)_{e,(lm)}.$$

The axes in front of the last one are free: `features` broadcasts against `weights`. The
Allegro model keeps its tensor track channel-major, weights `[U, E, n_irreps]` and features
`[E, dim]`, so that the broadcast repeats whole `[E, dim]` planes and the sum over channels
adds planes (both stream through memory; broadcasting a short middle axis does not).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from ..backend import Array, as_constant, namespace
from ..o3 import Irreps

__all__ = [
    "irrep_weighted_forward",
    "irrep_weighted_backward",
    "irrep_weighted_jvp",
    "irrep_weighted_backward_jvp",
]


@cache
def _irrep_to_components(irreps: str) -> np.ndarray:
    """P ``[n_irreps, dim]``: P[i, c] = 1 where component c belongs to entry i of ``irreps``."""
    parsed = Irreps(irreps)
    expand = np.zeros((len(parsed), parsed.dim))
    for i, block in enumerate(parsed.slices()):
        expand[i, block] = 1.0
    expand.flags.writeable = False  # cached: shared by every caller
    return expand


def irrep_weighted_forward(weights: Array, features: Array, irreps: Any) -> tuple[Array, tuple]:
    """Scale every irrep block of ``features`` by a weight per irrep (module docstring).

    Args:
        weights: ``[..., n_irreps]``, one weight per entry of ``irreps`` (e.g. ``[U, E, n]``:
            one per channel, edge and irrep); its leading axes are those of the output.
        features: ``[..., irreps.dim]`` equivariant features (e.g. spherical harmonics Y
            ``[E, dim]``), broadcastable against the leading axes of ``weights``.
        irreps: Irreps or string, the irreps of ``features`` (typically multiplicity 1 each).

    Returns:
        ``(out [..., irreps.dim], cache)``, out[..., (l, m)] = w[..., l] Y[..., (l, m)].
    """
    irreps = Irreps(irreps)
    if weights.shape[-1] != len(irreps) or features.shape[-1] != irreps.dim:
        raise ValueError(
            f"irrep_weighted_forward: weights [..., {weights.shape[-1]}] and features "
            f"[..., {features.shape[-1]}] do not match irreps {irreps} "
            f"({len(irreps)} irreps, dim {irreps.dim})"
        )
    expand = _irrep_to_components(str(irreps))
    expanded = weights @ as_constant(expand, like=weights)  # w P, [..., dim]
    out = expanded * features
    if tuple(out.shape) != tuple(expanded.shape):
        raise ValueError(
            f"irrep_weighted_forward: features {tuple(features.shape)} do not broadcast against "
            f"weights {tuple(weights.shape)}"
        )
    return out, (expanded, features, expand)


def irrep_weighted_backward(cache: tuple, grad_out: Array) -> tuple[Array, Array]:
    """VJP of `irrep_weighted_forward`: ``(grad_weights`` (the shape of ``weights``),
    ``grad_features`` (the shape of ``features``)), the latter summed over the axes that
    ``features`` was broadcast along."""
    xp = namespace(grad_out)
    expanded, features, expand = cache
    grad_weights = (grad_out * features) @ xp.matrix_transpose(as_constant(expand, like=grad_out))
    return grad_weights, _sum_to_shape(xp, grad_out * expanded, tuple(features.shape))


def irrep_weighted_jvp(cache: tuple, weights_dot: Array, features_dot: Array) -> Array:
    r"""Jacobian-vector product of `irrep_weighted_forward` (bilinear):
    $\dot{\mathrm{out}} = (\dot w P) \odot Y + (w P) \odot \dot Y$, the shape of the output."""
    expanded, features, expand = cache
    return (
        weights_dot @ as_constant(expand, like=weights_dot)
    ) * features + expanded * features_dot


def irrep_weighted_backward_jvp(
    cache: tuple, features_dot: Array, grad_out: Array, grad_out_dot: Array
) -> Array:
    r"""Tangent of the weight gradient of `irrep_weighted_backward` about the cotangent $G$ =
    `grad_out` it was given: from $\partial L/\partial w = (G \odot Y) P^T$,
    $(\dot G \odot Y + G \odot \dot Y) P^T$.

    Returns:
        `grad_weights_dot`, the shape of `weights` (the tangent of $\partial L/\partial Y$ is
            not formed).
    """
    _, features, expand = cache
    xp = namespace(grad_out)
    expand_t = xp.matrix_transpose(as_constant(expand, like=grad_out))
    return (grad_out_dot * features + grad_out * features_dot) @ expand_t


def _sum_to_shape(xp, a: Any, shape: tuple[int, ...]) -> Any:
    """``a`` summed over the axes that broadcasting added to (or stretched in) ``shape``."""
    leading = a.ndim - len(shape)
    if leading:
        a = xp.sum(a, axis=tuple(range(leading)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    if stretched:
        a = xp.sum(a, axis=stretched, keepdims=True)
    return a
