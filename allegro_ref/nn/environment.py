# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
r"""The environment of a centre atom: built from its edges, and coupled back to them.

Allegro's density trick in two blocks, both computed on the edges grouped by centre atom
(``group_edges``), so that every per-atom sum over edges is a batched matrix product:

**Density** (``environment_density_forward``): the environment of atom i, one weight per
(edge, channel, irrep) times the spherical harmonics, summed over i's edges,

    A[i, u, (l, m)] = Σ_{e: c_e = i} w[e, u, l] Y[e, (l, m)]       (per l: A_l[i] = W_l[i]ᵀ Y_l[i])

— the same numbers as ``scatter_sum(irrep_weighted_forward(w, Y), centers)`` without the
per-edge ``[E, U, dim]`` products. Backward: ∂L/∂w[e, u, l] = Σ_m Y[e, (l, m)] G[c_e, u, (l, m)]
and ∂L/∂Y[e, (l, m)] = Σ_u w[e, u, l] G[c_e, u, (l, m)], G = ∂L/∂A (per l: Y_l G_lᵀ, W_l G_l).

**Tensor product** (``EnvironmentTensorProduct``): in every layer, edge e = (i -> j) couples its
tensor features x[u, e] with the environment A[i] of its centre atom
(``ChannelwiseTensorProduct`` with ``x2 = A[centers]``):

    out[u, e, γ] = Σ_{α β} W_u[α, β, γ] x[u, e, α] A[c_e, u, β],    W_u = Σ_p θ[u, p] C_p.

All K ≈ 40 edges of atom i meet the same A[i], so the sum over β can be done once per atom:

    M[u, i, α, γ] = Σ_β W_u[α, β, γ] A[i, u, β]      (per atom: U·d1·d2·d_out multiply-adds)
    out[u, e, :]  = x[u, e, :] @ M[u, c_e]            (per edge: U·d1·d_out multiply-adds)

which is the same function with d2 times fewer operations per edge (9 at l_max 2) and no
per-edge pair products at all. Backward, with g = ∂L/∂out (the same maps transposed):

    ∂L/∂x[u, e, :]   = g[u, e, :] @ M[u, c_e]ᵀ
    ∂L/∂M[u, i]      = Σ_{e: c_e = i} x[u, e, :]ᵀ g[u, e, :]      (a [d1, d_out] matrix per atom)
    ∂L/∂A[i, u, β]   = Σ_{α γ} W_u[α, β, γ] ∂L/∂M[u, i, α, γ]
    ∂L/∂θ[u, p]      = Σ_{α β γ} C_p[α, β, γ] Σ_i A[i, u, β] ∂L/∂M[u, i, α, γ]

Layout: the tensor features are channel-major, ``[U, E, d]`` (the Allegro model's tensor track),
so that the edges of one (channel, centre) are consecutive rows and the per-edge products are
``U · n_centres`` matrix products ``[K, d1] @ [d1, d_out]`` on contiguous blocks
``[U, n_centres, K, d]``, with nothing to transpose. Edges grouped by centre fill those blocks,
K the largest number of edges of one centre, shorter groups padded (padding slots hold copies
of edge 0 and are masked wherever they could reach a result). When the edges are sorted by
centre with K each (a crystal, or a chunk of one) the grouping is a reshape; otherwise it costs
gathers and the padding (K / mean number of edges per centre times the work).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from ..backend import as_constant, device, namespace, segment_sum
from ..o3 import Irreps
from .tensor_product import ChannelwiseTensorProduct, _coupling_tensor

__all__ = [
    "EdgeGroups",
    "group_edges",
    "environment_density_forward",
    "environment_density_backward",
    "EnvironmentTensorProduct",
]


class EdgeGroups(NamedTuple):
    """Edges grouped by centre atom into ``n_centres × k_max`` slots (``group_edges``).

    ``slot_edges`` ``[n_centres · k_max]``: the edge in each slot (edge 0 in the padding slots),
    ``edge_slots`` ``[E]``: the slot of each edge, ``slot_mask`` ``[n_centres · k_max]`` bool:
    True where a slot holds an edge. All three are None when edges are sorted by centre with
    exactly k_max per centre (slot = edge index).
    """

    n_centres: int
    k_max: int
    slot_edges: Any | None
    edge_slots: Any | None
    slot_mask: Any | None


def group_edges(centers: Any) -> EdgeGroups:
    """Group edges by their centre atom.

    Args:
        centers: ``[E]`` integer index of the centre atom of every edge, any order.

    Returns:
        the ``EdgeGroups`` of centres ``0 .. max(centers)`` (atoms with a larger index have no
        edge; they are left out of the groups and get zero rows where needed).
    """
    xp = namespace(centers)
    n_edges = centers.shape[0]
    if n_edges == 0:
        return EdgeGroups(0, 0, None, None, None)
    n_centres = int(xp.max(centers)) + 1
    where = device(centers)
    ones = xp.ones((n_edges,), dtype=xp.float64, device=where)
    counts = xp.astype(segment_sum(ones, centers, n_centres), centers.dtype)
    k_max = int(xp.max(counts))
    in_order = n_edges < 2 or bool(xp.all(centers[1:] >= centers[:-1]))
    if in_order and n_edges == n_centres * k_max:
        return EdgeGroups(n_centres, k_max, None, None, None)
    order = xp.argsort(centers, stable=True)  # edges of centre 0, then of centre 1, ...
    starts = xp.cumulative_sum(counts) - counts  # position of each centre's first edge in order
    slots = xp.arange(n_centres * k_max, dtype=centers.dtype, device=where)
    slot_centre, slot_rank = slots // k_max, slots % k_max
    used = slot_rank < xp.take(counts, slot_centre)
    position = xp.where(used, xp.take(starts, slot_centre) + slot_rank, 0)
    slot_edges = xp.take(order, position)
    # Edge order[n] sits at rank n - starts[its centre]: invert the permutation to index by edge.
    rank_in_order = xp.arange(n_edges, dtype=centers.dtype, device=where) - xp.take(
        starts, xp.take(centers, order)
    )
    edge_rank = xp.take(rank_in_order, xp.argsort(order))
    edge_slots = centers * k_max + edge_rank
    return EdgeGroups(n_centres, k_max, slot_edges, edge_slots, used)


def _copy_c_order(xp, x):
    """A C-ordered copy of a permuted view (reshaping through 1-D forces the copy)."""
    return xp.reshape(xp.reshape(x, (-1,)), x.shape)


def _group_rows(xp, x, groups: EdgeGroups, axis: int = 0, masked: bool = False):
    """``x`` with its edge axis ``axis`` [E] turned into ``[n_centres, k_max]`` (padding slots
    hold edge 0, or zeros when ``masked``)."""
    if groups.slot_edges is not None:
        x = xp.take(x, groups.slot_edges, axis=axis)
        if masked:
            mask = xp.reshape(groups.slot_mask, (-1,) + (1,) * (x.ndim - axis - 1))
            x = xp.where(mask, x, xp.zeros((), dtype=x.dtype, device=device(x)))
    shape = x.shape[:axis] + (groups.n_centres, groups.k_max) + x.shape[axis + 1 :]
    return xp.reshape(x, shape)


def _ungroup_rows(xp, y, groups: EdgeGroups, axis: int = 0):
    """``y`` with its axes ``axis, axis + 1`` ``[n_centres, k_max]`` turned back into the edge
    axis [E], dropping the padding slots."""
    shape = y.shape[:axis] + (groups.n_centres * groups.k_max,) + y.shape[axis + 2 :]
    y = xp.reshape(y, shape)
    if groups.edge_slots is not None:
        y = xp.take(y, groups.edge_slots, axis=axis)
    return y


def _pad_atoms(xp, a, n_atoms: int):
    """``[n, ...]`` -> ``[n_atoms, ...]`` with zero rows for the atoms that are no centre."""
    if n_atoms == a.shape[0]:
        return a
    rest = xp.zeros((n_atoms - a.shape[0], *a.shape[1:]), dtype=a.dtype, device=device(a))
    return xp.concat([a, rest], axis=0)


def environment_density_forward(weights, sh, irreps, groups: EdgeGroups, n_atoms: int):
    """Environments A[i, u, (l, m)] = Σ_{e: c_e = i} w[e, u, l] Y[e, (l, m)] (module docstring).

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
    return density, (w_groups, sh_groups, irreps, groups)


def environment_density_backward(cache, grad_density):
    """VJP of :func:`environment_density_forward`: ``(grad_weights [E, U, n_irreps],
    grad_sh [E, dim])`` from ``grad_density [N, U, dim]``."""
    w_groups, sh_groups, irreps, groups = cache
    xp = namespace(grad_density)
    g = grad_density[: groups.n_centres, ...]
    grad_w, grad_sh = [], []
    for i, s in enumerate(irreps.slices()):
        g_l = g[:, :, s]  # [n, U, 2l+1]
        grad_w.append(sh_groups[:, :, s] @ xp.matrix_transpose(g_l))  # [n, K, U]
        grad_sh.append(w_groups[i, ...] @ g_l)  # [n, K, 2l+1]
    grad_weights = _ungroup_rows(xp, xp.stack(grad_w, axis=-1), groups)
    return grad_weights, _ungroup_rows(xp, xp.concat(grad_sh, axis=-1), groups)


@functools.cache
def _env_major_coupling(irreps_in1, irreps_env, irreps_out) -> np.ndarray:
    """``C[p, β, (α γ)]`` flattened to ``[n_paths, d2 · d1 · d_out]`` (float64 NumPy): the
    couplings with the environment index first, as the per-atom fold contracts it."""
    coupling = _coupling_tensor(irreps_in1, irreps_env, irreps_out)  # [p, α, β, γ]
    arranged = np.ascontiguousarray(coupling.transpose(0, 2, 1, 3))
    arranged = arranged.reshape(coupling.shape[0], -1)
    arranged.flags.writeable = False  # cached: shared by every caller
    return arranged


class EnvironmentTensorProduct:
    r"""``ChannelwiseTensorProduct(x, A[centers])`` computed with the environment folded into the
    coupling per atom (module docstring).

    Paths, path order, weights and their initialization are those of
    ``ChannelwiseTensorProduct(irreps_in1, irreps_env, irreps_out, num_channels,
    path_channel_coupling)``.

    Args:
        irreps_in1: Irreps of the edge features x (multiplicity 1 per entry).
        irreps_env: Irreps of the environment A (the spherical harmonics' in Allegro).
        irreps_out: Irreps of the output.
        num_channels: U, the number of channels of x, A and the output.
        path_channel_coupling: weights ``[U, n_paths]`` (True) or ``[n_paths]``.

    Attributes: ``paths``, ``n_paths``, ``weight_shape`` (as ``ChannelwiseTensorProduct``).
    """

    def __init__(
        self,
        irreps_in1: Any,
        irreps_env: Any,
        irreps_out: Any,
        num_channels: int,
        path_channel_coupling: bool = True,
    ):
        self.plain = ChannelwiseTensorProduct(
            irreps_in1, irreps_env, irreps_out, num_channels, path_channel_coupling
        )
        self.irreps_in1 = self.plain.irreps_in1
        self.irreps_env = self.plain.irreps_in2
        self.irreps_out = self.plain.irreps_out
        self.num_channels = num_channels
        self.path_channel_coupling = self.plain.path_channel_coupling
        self.paths, self.n_paths = self.plain.paths, self.plain.n_paths
        self.weight_shape = self.plain.weight_shape

    def __repr__(self) -> str:
        return (
            f"EnvironmentTensorProduct({self.irreps_in1} x {self.irreps_env} -> "
            f"{self.irreps_out} | {self.num_channels} channels | {self.n_paths} paths)"
        )

    def init_weights(self, rng: np.random.Generator) -> np.ndarray:
        """As ``ChannelwiseTensorProduct.init_weights``."""
        return self.plain.init_weights(rng)

    def _env_coupling(self, xp, weights):
        """``W_u[β, (α γ)]`` ``[U or 1, d2, d1 · d_out]``: the weighted couplings of all paths."""
        coupling = as_constant(
            _env_major_coupling(self.irreps_in1, self.irreps_env, self.irreps_out), like=weights
        )
        theta = weights if self.path_channel_coupling else xp.reshape(weights, (1, self.n_paths))
        w = theta @ coupling
        return xp.reshape(w, (theta.shape[0], self.irreps_env.dim, -1))

    def forward(self, x: Any, env: Any, groups: EdgeGroups, weights: Any) -> tuple[Any, tuple]:
        """The product (class and module docstrings).

        Args:
            x: ``[U, E, irreps_in1.dim]`` edge features, channel-major.
            env: ``[N, U, irreps_env.dim]`` per-atom environments (N >= groups.n_centres).
            groups: ``group_edges(centers)`` of the edges' centre atoms.
            weights: ``weight_shape``, the dtype of ``x``.

        Returns:
            ``out`` ``[U, E, irreps_out.dim]`` and the cache for ``backward``.
        """
        xp = namespace(x, env, weights)
        self._check_inputs(x, env, groups, weights)
        n, d1, d_out = groups.n_centres, self.irreps_in1.dim, self.irreps_out.dim
        w = self._env_coupling(xp, weights)
        env_by_channel = xp.permute_dims(env[:n, ...], (1, 0, 2))  # [U, n, d2]
        folded = xp.reshape(env_by_channel @ w, (self.num_channels, n, d1, d_out))  # M
        x_groups = _group_rows(xp, x, groups, axis=1)  # [U, n, K, d1]
        out = _ungroup_rows(xp, x_groups @ folded, groups, axis=1)
        return out, (x_groups, env_by_channel, folded, w, groups, env.shape[0])

    def backward(self, cache: tuple, grad_out: Any) -> tuple[Any, Any, Any]:
        """Vector-Jacobian product (formulas in the module docstring).

        Args:
            cache: from ``forward``.
            grad_out: ``[U, E, irreps_out.dim]``, ∂L/∂out.

        Returns:
            ``(grad_x [U, E, d1], grad_env [N, U, d2], grad_weights weight_shape)``.
        """
        x_groups, env_by_channel, folded, w, groups, n_atoms = cache
        xp = namespace(grad_out, x_groups)
        n_edges = x_groups.shape[1] * x_groups.shape[2]
        if groups.edge_slots is not None:
            n_edges = groups.edge_slots.shape[0]
        expected = (self.num_channels, n_edges, self.irreps_out.dim)
        if tuple(grad_out.shape) != expected or grad_out.dtype != x_groups.dtype:
            raise ValueError(
                f"grad_out has shape {tuple(grad_out.shape)} and dtype {grad_out.dtype}, but the "
                f"forward output has shape {expected} and dtype {x_groups.dtype}"
            )
        U, n = self.num_channels, groups.n_centres
        d1_d_out = self.irreps_in1.dim * self.irreps_out.dim
        # padding slots must not reach ∂L/∂M: their gradient is zero
        g_groups = _group_rows(xp, grad_out, groups, axis=1, masked=True)  # [U, n, K, d_out]
        folded_t = _copy_c_order(xp, xp.matrix_transpose(folded))  # Mᵀ, small; BLAS prefers it
        grad_x = _ungroup_rows(xp, g_groups @ folded_t, groups, axis=1)
        grad_folded = xp.matrix_transpose(x_groups) @ g_groups  # [U, n, d1, d_out]
        grad_folded = xp.reshape(grad_folded, (U, n, d1_d_out))
        grad_env = xp.permute_dims(grad_folded @ xp.matrix_transpose(w), (1, 0, 2))
        grad_env = _pad_atoms(xp, grad_env, n_atoms)
        # Σ_i A[i, u, β] ∂L/∂M[u, i, (α γ)], then contracted with C_p
        per_channel = xp.matrix_transpose(env_by_channel) @ grad_folded  # [U, d2, d1 d_out]
        coupling = as_constant(
            _env_major_coupling(self.irreps_in1, self.irreps_env, self.irreps_out), like=w
        )
        grad_weights = xp.reshape(per_channel, (U, -1)) @ xp.matrix_transpose(coupling)
        if not self.path_channel_coupling:
            grad_weights = xp.sum(grad_weights, axis=0)
        return grad_x, grad_env, grad_weights

    def _check_inputs(self, x, env, groups: EdgeGroups, weights) -> None:
        u = self.num_channels
        if x.ndim != 3 or tuple(x.shape[::2]) != (u, self.irreps_in1.dim):
            raise ValueError(
                f"x has shape {tuple(x.shape)} but the tensor product expects "
                f"[{u} channels, E, {self.irreps_in1.dim}] for irreps {self.irreps_in1}"
            )
        if env.ndim != 3 or tuple(env.shape[1:]) != (u, self.irreps_env.dim):
            raise ValueError(
                f"env has shape {tuple(env.shape)} but the tensor product expects "
                f"[N, {u} channels, {self.irreps_env.dim}] for irreps {self.irreps_env}"
            )
        n_edges = x.shape[1]
        if n_edges != groups.n_centres * groups.k_max and groups.edge_slots is None:
            raise ValueError(
                f"x has {n_edges} edges but the groups hold {groups.n_centres} centres x "
                f"{groups.k_max} edges: group_edges(centers) of these edges is needed"
            )
        if groups.edge_slots is not None and groups.edge_slots.shape[0] != n_edges:
            raise ValueError(
                f"x has {n_edges} edges but the groups were built for {groups.edge_slots.shape[0]}"
            )
        if env.shape[0] < groups.n_centres:
            raise ValueError(
                f"env has {env.shape[0]} atoms but the edges have centres up to "
                f"{groups.n_centres - 1}"
            )
        self.plain._check_weights(weights, {"x": x, "env": env})
