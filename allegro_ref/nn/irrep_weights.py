"""One weight per (channel, irrep): the "weighted spherical harmonics" of Allegro.

Allegro turns a per-edge scalar vector into an equivariant tensor by multiplying each spherical
harmonic component by a learned weight that depends only on the channel u and on the irrep
(degree l) the component belongs to, shared over m (official option ``weight_individual_irreps``):

    out[e, u, (l, m)] = w[e, u, l] * Y[e, (l, m)]

Scaling a whole irrep block by a scalar commutes with rotations, so ``out`` transforms like ``Y``
in every channel. Backward (a bilinear form):

    grad_w[e, u, l]   = sum_m grad_out[e, u, (l, m)] * Y[e, (l, m)]
    grad_Y[e, (l, m)] = sum_u grad_out[e, u, (l, m)] * w[e, u, l]
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from ..backend import as_constant, device, namespace
from ..o3 import Irreps

__all__ = ["irrep_weighted_forward", "irrep_weighted_backward"]


@cache
def _component_to_irrep(irreps: str) -> tuple[np.ndarray, np.ndarray]:
    """(index of the irrep of every component [dim], one-hot matrix [dim, n_irreps])."""
    parsed = Irreps(irreps)
    index = np.concatenate([np.full(mul * ir.dim, i) for i, (mul, ir) in enumerate(parsed)]).astype(
        np.int64
    )
    one_hot = np.zeros((parsed.dim, len(parsed)))
    one_hot[np.arange(parsed.dim), index] = 1.0
    index.flags.writeable = one_hot.flags.writeable = False  # cached: shared by every caller
    return index, one_hot


def irrep_weighted_forward(weights: Any, features: Any, irreps: Any) -> tuple[Any, tuple]:
    """Scale every irrep block of ``features`` by a per-(edge, channel, irrep) weight.

    Args:
        weights: ``[E, U, n_irreps]``, one weight per channel u and irrep of ``irreps``.
        features: ``[E, irreps.dim]`` equivariant features (e.g. spherical harmonics Y).
        irreps: Irreps or string, the irreps of ``features`` (typically multiplicity 1 each).

    Returns:
        ``(out [E, U, irreps.dim], cache)`` with out[e,u,(l,m)] = w[e,u,l] * Y[e,(l,m)].
    """
    xp = namespace(weights, features)
    irreps = str(Irreps(irreps))
    index, _ = _component_to_irrep(irreps)
    n_irreps = len(Irreps(irreps))
    if weights.shape[-1] != n_irreps or features.shape[-1] != index.shape[0]:
        raise ValueError(
            f"irrep_weighted_forward: weights [..., {weights.shape[-1]}] and features "
            f"[..., {features.shape[-1]}] do not match irreps {irreps} "
            f"({n_irreps} irreps, dim {index.shape[0]})"
        )
    index = xp.asarray(index, device=device(features))
    expanded = xp.take(weights, index, axis=-1)  # [E, U, dim]
    out = expanded * features[:, None, :]
    return out, (expanded, features, irreps)


def irrep_weighted_backward(cache: tuple, grad_out: Any) -> tuple[Any, Any]:
    """VJP of :func:`irrep_weighted_forward`: ``(grad_weights [E, U, n_irreps],
    grad_features [E, dim])``."""
    xp = namespace(grad_out)
    expanded, features, irreps = cache
    _, one_hot = _component_to_irrep(irreps)
    grad_weights = (grad_out * features[:, None, :]) @ as_constant(one_hot, like=grad_out)
    grad_features = xp.sum(grad_out * expanded, axis=1)
    return grad_weights, grad_features
