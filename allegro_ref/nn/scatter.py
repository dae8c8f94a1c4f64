"""Gather and scatter-sum between atoms and edges: the density trick's sum and its adjoint.

Allegro moves data between the two index spaces of a graph in two directions:

- gather (atoms -> edges): ``out[e] = x[index[e]]``, e.g. the center atom's type or the
  environment density of the center, read by each of its edges;
- scatter-sum (edges -> atoms): ``out[i] = Σ_{e : index[e] = i} values[e]``, e.g. the
  environment density env_i = Σ_{j ∈ N(i)} w_ij Y(r̂_ij) or the sum of edge energies onto atoms.

For a fixed ``index`` both are linear maps, and each is the transpose of the other:
with G the ``[E, N]`` incidence matrix G[e, i] = [index[e] = i], gather is G and scatter-sum is
Gᵀ, so ⟨scatter_sum(v), g⟩ = ⟨v, gather(g)⟩ for all v ``[E, ...]``, g ``[N, ...]``. Hence the
backward (vector-Jacobian product) of one is the other.
"""

from __future__ import annotations

from typing import Any

from ..backend import Array, namespace, scatter_sum

__all__ = ["gather", "gather_backward", "scatter_sum", "scatter_sum_backward"]


def scatter_sum_backward(grad_out: Any, index: Any) -> Any:
    """VJP of :func:`scatter_sum`: ∂L/∂values[e] = ∂L/∂out[index[e]], a gather.

    ``grad_out`` ``[N, ...]`` -> ``grad_values`` ``[E, ...]``.
    """
    return gather(grad_out, index)


def gather(x: Any, index: Any) -> Any:
    """out[e, ...] = x[index[e], ...].

    Args:
        x: ``[N, ...]`` per-atom (or per-type) values.
        index: ``[E]`` integer rows of ``x`` in ``[0, N)``.

    Returns:
        ``[E, ...]``, same dtype and device as ``x``.
    """
    if index.ndim != 1:
        raise ValueError(f"gather index must be 1-D [E]; got shape {tuple(index.shape)}")
    return namespace(x).take(x, index, axis=0)


def gather_backward(grad_out: Any, index: Any, num_segments: int) -> Any:
    """VJP of :func:`gather`: ∂L/∂x[i] = Σ over e with index[e] = i of ∂L/∂out[e], a
    scatter-sum.

    ``grad_out`` ``[E, ...]`` -> ``grad_x`` ``[num_segments, ...]`` (num_segments = N, the number
    of rows of the gathered ``x``).
    """
    return scatter_sum(grad_out, index, num_segments)
