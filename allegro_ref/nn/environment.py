# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
r"""The environment of a center atom, built from its edges: Allegro's density trick, computed
on the edges grouped by center atom (`group_edges`) so that every per-atom sum over edges is a
batched matrix product.

**Density** (`environment_density_forward`): the environment of atom $i$, one weight per
(edge, channel, irrep) times the spherical harmonics, summed over $i$'s edges,

$$A_{iu,(lm)} = \sum_{e:\ c_e = i} w_{eul}\, Y_{e,(lm)} \qquad (\text{per } l:\
  A_l[i] = W_l[i]^T\, Y_l[i]),$$

the same numbers as `scatter_sum(irrep_weighted_forward(w, Y), centers)` without the per-edge
`[E, U, dim]` products. Backward, with $G = \partial L/\partial A$:
$\partial L/\partial w_{eul} = \sum_m Y_{e,(lm)}\, G_{c_e u,(lm)}$ and
$\partial L/\partial Y_{e,(lm)} = \sum_u w_{eul}\, G_{c_e u,(lm)}$ (per $l$: $Y_l G_l^T$ and
$W_l G_l$).

**Grouping** (`group_edges`): the edges of each center atom fill `k_max` consecutive slots of
a `[n_centers, k_max]` block, shorter groups padded with copies of edge 0 (masked wherever they
could reach a result). When the edges are sorted by center with `k_max` each (a crystal, or a
chunk of one) the grouping is a reshape.
[`EnvironmentTensorProduct`][allegro_ref.nn.tensor_product.EnvironmentTensorProduct] couples
each edge with the environment of its center on the same groups.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import Array, device, namespace, scatter_sum
from ..o3 import Irreps

__all__ = [
    "EdgeGroups",
    "EnvironmentDensityCache",
    "group_edges",
    "environment_density_forward",
    "environment_density_backward",
    "environment_density_jvp",
    "environment_density_backward_jvp",
]


class EdgeGroups(NamedTuple):
    """Edges grouped by center atom into ``n_centers × k_max`` slots (``group_edges``).

    ``slot_edges`` ``[n_centers · k_max]``: the edge in each slot (edge 0 in the padding slots),
    ``edge_slots`` ``[E]``: the slot of each edge, ``slot_mask`` ``[n_centers · k_max]`` bool:
    True where a slot holds an edge. All three are None when edges are sorted by center with
    exactly k_max per center (slot = edge index).
    """

    n_centers: int
    k_max: int
    slot_edges: Array | None
    edge_slots: Array | None
    slot_mask: Array | None


def group_edges(centers: Array) -> EdgeGroups:
    """Group edges by their center atom.

    Args:
        centers: ``[E]`` integer index of the center atom of every edge, any order.

    Returns:
        the ``EdgeGroups`` of centers ``0 .. max(centers)`` (atoms with a larger index have no
        edge; they are left out of the groups and get zero rows where needed).
    """
    xp = namespace(centers)
    n_edges = centers.shape[0]
    if n_edges == 0:
        return EdgeGroups(0, 0, None, None, None)
    n_centers = int(xp.max(centers)) + 1
    where = device(centers)
    ones = xp.ones((n_edges,), dtype=xp.float64, device=where)
    counts = xp.astype(scatter_sum(ones, centers, n_centers), centers.dtype)
    k_max = int(xp.max(counts))
    in_order = n_edges < 2 or bool(xp.all(centers[1:] >= centers[:-1]))
    if in_order and n_edges == n_centers * k_max:
        return EdgeGroups(n_centers, k_max, None, None, None)
    order = xp.argsort(centers, stable=True)  # edges of center 0, then of center 1, ...
    starts = xp.cumulative_sum(counts) - counts  # position of each center's first edge in order
    slots = xp.arange(n_centers * k_max, dtype=centers.dtype, device=where)
    slot_center, slot_rank = slots // k_max, slots % k_max
    used = slot_rank < xp.take(counts, slot_center)
    position = xp.where(used, xp.take(starts, slot_center) + slot_rank, 0)
    slot_edges = xp.take(order, position)
    # Edge order[n] sits at rank n - starts[its center]: invert the permutation to index by edge.
    rank_in_order = xp.arange(n_edges, dtype=centers.dtype, device=where) - xp.take(
        starts, xp.take(centers, order)
    )
    edge_rank = xp.take(rank_in_order, xp.argsort(order))
    edge_slots = centers * k_max + edge_rank
    return EdgeGroups(n_centers, k_max, slot_edges, edge_slots, used)


def _copy_c_order(xp, x):
    """A C-ordered copy of a permuted view (reshaping through 1-D forces the copy)."""
    return xp.reshape(xp.reshape(x, (-1,)), x.shape)


def _group_rows(xp, x, groups: EdgeGroups, axis: int = 0, masked: bool = False):
    """``x`` with its edge axis ``axis`` [E] turned into ``[n_centers, k_max]`` (padding slots
    hold edge 0, or zeros when ``masked``)."""
    if groups.slot_edges is not None:
        x = xp.take(x, groups.slot_edges, axis=axis)
        if masked:
            mask = xp.reshape(groups.slot_mask, (-1,) + (1,) * (x.ndim - axis - 1))
            x = xp.where(mask, x, xp.zeros((), dtype=x.dtype, device=device(x)))
    shape = x.shape[:axis] + (groups.n_centers, groups.k_max) + x.shape[axis + 1 :]
    return xp.reshape(x, shape)


def _ungroup_rows(xp, y, groups: EdgeGroups, axis: int = 0):
    """``y`` with its axes ``axis, axis + 1`` ``[n_centers, k_max]`` turned back into the edge
    axis [E], dropping the padding slots."""
    shape = y.shape[:axis] + (groups.n_centers * groups.k_max,) + y.shape[axis + 2 :]
    y = xp.reshape(y, shape)
    if groups.edge_slots is not None:
        y = xp.take(y, groups.edge_slots, axis=axis)
    return y


def _pad_atoms(xp, a, n_atoms: int):
    """``[n, ...]`` -> ``[n_atoms, ...]`` with zero rows for the atoms that are no center."""
    if n_atoms == a.shape[0]:
        return a
    rest = xp.zeros((n_atoms - a.shape[0], *a.shape[1:]), dtype=a.dtype, device=device(a))
    return xp.concat([a, rest], axis=0)


class EnvironmentDensityCache(NamedTuple):
    """What `environment_density_backward` needs from the forward."""

    w_groups: Any  # [n_irreps, n_centers, K, U]: the weights grouped by center, per irrep
    sh_groups: Any  # [n_centers, K, dim]: the features grouped by center, zero padding
    irreps: Irreps
    groups: EdgeGroups


def environment_density_forward(
    weights: Array, sh: Array, irreps: Any, groups: EdgeGroups, n_atoms: int
) -> tuple[Array, EnvironmentDensityCache]:
    r"""Environments $A_{iu,(lm)} = \sum_{e:\ c_e = i} w_{eul}\, Y_{e,(lm)}$ (module docstring).

    Args:
        weights: ``[E, U, n_irreps]``, one weight per edge, channel and entry of ``irreps``.
        sh: ``[E, irreps.dim]`` per-edge features (Allegro: the spherical harmonics).
        irreps: the Irreps of ``sh``.
        groups: ``group_edges(centers)`` of the edges.
        n_atoms: number of atoms N (rows of the result; atoms without edges get zeros).

    Returns:
        ``(density [N, U, irreps.dim], cache)``.
    """
    xp = namespace(weights, sh)
    irreps = Irreps(irreps)
    if weights.shape[-1] != len(irreps) or sh.shape[-1] != irreps.dim:
        raise ValueError(
            f"environment_density_forward: weights [..., {weights.shape[-1]}] and sh "
            f"[..., {sh.shape[-1]}] do not match irreps {irreps} ({len(irreps)} entries, "
            f"dim {irreps.dim})"
        )
    # one contiguous [E, U] block of weights per irrep, then grouped: [n_irreps, n, K, U]
    by_irrep = _copy_c_order(xp, xp.permute_dims(weights, (2, 0, 1)))
    w_groups = _group_rows(xp, by_irrep, groups, axis=1)
    sh_groups = _group_rows(xp, sh, groups, masked=True)  # [n, K, dim], zero padding
    blocks = [
        xp.matrix_transpose(w_groups[i, ...]) @ sh_groups[:, :, s]
        for i, s in enumerate(irreps.slices())
    ]
    density = _pad_atoms(xp, xp.concat(blocks, axis=-1), n_atoms)
    return density, EnvironmentDensityCache(w_groups, sh_groups, irreps, groups)


def environment_density_backward(
    cache: EnvironmentDensityCache, grad_density: Array
) -> tuple[Array, Array]:
    r"""VJP of `environment_density_forward` (module docstring).

    Args:
        cache: from `environment_density_forward`.
        grad_density: `[N, U, dim]`, $\partial L/\partial A$.

    Returns:
        `(grad_weights [E, U, n_irreps], grad_sh [E, dim])`.
    """
    w_groups, sh_groups, irreps, groups = cache
    xp = namespace(grad_density)
    g = grad_density[: groups.n_centers, ...]
    grad_w, grad_sh = [], []
    for i, s in enumerate(irreps.slices()):
        g_l = g[:, :, s]  # [n, U, 2l+1]
        grad_w.append(sh_groups[:, :, s] @ xp.matrix_transpose(g_l))  # [n, K, U]
        grad_sh.append(w_groups[i, ...] @ g_l)  # [n, K, 2l+1]
    grad_weights = _ungroup_rows(xp, xp.stack(grad_w, axis=-1), groups)
    return grad_weights, _ungroup_rows(xp, xp.concat(grad_sh, axis=-1), groups)


def environment_density_jvp(
    cache: EnvironmentDensityCache, weights_dot: Array, sh_dot: Array, n_atoms: int
) -> tuple[Array, EnvironmentDensityCache]:
    r"""Jacobian-vector product of `environment_density_forward` (bilinear, so the product
    rule): $\dot A_l[i] = \dot W_l[i]^T Y_l[i] + W_l[i]^T \dot Y_l[i]$.

    Args:
        cache: from the forward.
        weights_dot: `[E, U, n_irreps]` tangent of the weights.
        sh_dot: `[E, dim]` tangent of the features.
        n_atoms: N, as given to the forward.

    Returns:
        `(density_dot [N, U, dim], tangent_cache)`: the tangent cache is the forward's cache
            of the tangents (for `environment_density_backward_jvp`).
    """
    w_groups, sh_groups, irreps, groups = cache
    xp = namespace(weights_dot, sh_dot)
    w_dot = _group_rows(xp, _copy_c_order(xp, xp.permute_dims(weights_dot, (2, 0, 1))), groups, 1)
    sh_dot = _group_rows(xp, sh_dot, groups, masked=True)
    blocks = [
        xp.matrix_transpose(w_dot[i, ...]) @ sh_groups[:, :, s]
        + xp.matrix_transpose(w_groups[i, ...]) @ sh_dot[:, :, s]
        for i, s in enumerate(irreps.slices())
    ]
    density_dot = _pad_atoms(xp, xp.concat(blocks, axis=-1), n_atoms)
    return density_dot, EnvironmentDensityCache(w_dot, sh_dot, irreps, groups)


def environment_density_backward_jvp(
    cache: EnvironmentDensityCache,
    tangent_cache: EnvironmentDensityCache,
    grad_density: Array,
    grad_density_dot: Array,
) -> Array:
    r"""Tangent of the weight gradient of `environment_density_backward` about the cotangent
    $G$ = `grad_density` it was given: $\partial L/\partial w = Y_l G_l^T$ per $l$, so its
    tangent is $\dot Y_l G_l^T + Y_l \dot G_l^T$.

    Returns:
        `grad_weights_dot` `[E, U, n_irreps]` (the tangent of $\partial L/\partial Y$ is not
            formed: nothing trainable lies below the harmonics).
    """
    _, sh_groups, irreps, groups = cache
    sh_dot = tangent_cache.sh_groups
    xp = namespace(grad_density)
    g = grad_density[: groups.n_centers, ...]
    g_dot = grad_density_dot[: groups.n_centers, ...]
    grad_w_dot = [
        sh_dot[:, :, s] @ xp.matrix_transpose(g[:, :, s])
        + sh_groups[:, :, s] @ xp.matrix_transpose(g_dot[:, :, s])
        for s in irreps.slices()
    ]  # [n, K, U] per irrep
    return _ungroup_rows(xp, xp.stack(grad_w_dot, axis=-1), groups)
