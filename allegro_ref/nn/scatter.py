r"""Gather and scatter-sum between atoms and edges: the density trick's sum and its adjoint.

Allegro moves data between the two index spaces of a graph in two directions:

- **gather** (atoms → edges): $\mathrm{out}[e] = x[\mathrm{index}[e]]$, e.g. the center atom's
  type or the environment density of the center, read by each of its edges;
- **scatter-sum** (edges → atoms): $\mathrm{out}[i] = \sum_{e:\ \mathrm{index}[e] = i}
  \mathrm{values}[e]$, e.g. the environment density $A_i = \sum_{j \in N(i)} w_{ij} \otimes
  Y(\hat r_{ij})$ or the sum of edge energies onto atoms.

For a fixed `index` both are linear maps, and each is the transpose of the other: with $G$ the
`[E, N]` incidence matrix $G_{ei} = [\mathrm{index}[e] = i]$, gather is $G$ and scatter-sum is
$G^T$, so $\langle \mathrm{scatter\_sum}(v), g \rangle = \langle v, \mathrm{gather}(g) \rangle$
for all $v$ `[E, ...]`, $g$ `[N, ...]`. Hence the backward (vector-Jacobian product) of one is
the other.

`scatter_sum` is [`allegro_ref.backend.scatter_sum`][allegro_ref.backend.scatter_sum] (the
backend module holds its NumPy, CuPy and generic implementations), exported here beside its
backward.
"""

from __future__ import annotations

from ..backend import Array, namespace, scatter_sum

__all__ = ["gather", "gather_backward", "scatter_sum", "scatter_sum_backward"]


def scatter_sum_backward(grad_out: Array, index: Array) -> Array:
    r"""VJP of `scatter_sum`: $\partial L / \partial \mathrm{values}[e] = \partial L / \partial
    \mathrm{out}[\mathrm{index}[e]]$, a gather.

    Args:
        grad_out: `[N, ...]`, $\partial L / \partial \mathrm{out}$.
        index: `[E]` integers in `[0, N)`, as given to `scatter_sum`.

    Returns:
        `[E, ...]`, $\partial L / \partial \mathrm{values}$.
    """
    return gather(grad_out, index)


def gather(x: Array, index: Array) -> Array:
    """`out[e, ...] = x[index[e], ...]`.

    Args:
        x: `[N, ...]` per-atom (or per-type) values.
        index: `[E]` integer rows of `x` in `[0, N)`.

    Returns:
        `[E, ...]`, same dtype and device as `x`.

    Raises:
        ValueError: `index` is not one-dimensional.
    """
    if index.ndim != 1:
        raise ValueError(f"gather index must be 1-D [E]; got shape {tuple(index.shape)}")
    return namespace(x).take(x, index, axis=0)


def gather_backward(grad_out: Array, index: Array, num_segments: int) -> Array:
    r"""VJP of `gather`: $\partial L / \partial x[i] = \sum_{e:\ \mathrm{index}[e] = i}
    \partial L / \partial \mathrm{out}[e]$, a scatter-sum.

    Args:
        grad_out: `[E, ...]`, $\partial L / \partial \mathrm{out}$.
        index: `[E]` integers in `[0, N)`, as given to `gather`.
        num_segments: $N$, the number of rows of the gathered `x`.

    Returns:
        `[N, ...]`, $\partial L / \partial x$.
    """
    return scatter_sum(grad_out, index, num_segments)
