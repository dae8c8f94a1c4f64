# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
r"""Allegro's tensor product: every edge's tensor features coupled with the environment of its
center atom, channel by channel, with a hand-written backward.

**Paths.** A feature $x$ of irrep $a = (l_a, p_a)$ and a feature $y$ of irrep $b$ couple into
irrep $c$ through the real Wigner 3j symbol ([`wigner_3j`][allegro_ref.o3.wigner_3j], e3nn's
basis and signs),

$$z_\gamma = \sum_{\alpha \beta} C_{\alpha\beta\gamma}\, x_\alpha\, y_\beta, \qquad
  C = \sqrt{2 l_c + 1}\; \mathrm{3j}(l_a, l_b, l_c),$$

whenever $c$ occurs in $a \otimes b$ (the selection rule of `Irrep.__mul__`:
$|l_a - l_b| \le l_c \le l_a + l_b$ and $p_c = p_a p_b$). Each such $a \otimes b \to c$ is a
*path* $p$ (`allowed_paths`); the factor $\sqrt{2 l_c + 1}$ is e3nn's "component" normalization
(unit-variance inputs give unit-variance outputs per path). All paths' blocks placed at their
entries' offsets form the coupling tensor $C_{p\alpha\beta\gamma}$ (`coupling_tensor`; the
official Allegro code, nequip-allegro 0.8.3, stores the same numbers as the `w3j` buffer of its
`Contracter`).

**The product** (`EnvironmentTensorProduct`; the official `Contracter`, mode "uuu"). Edge
$e = (i \to j)$ carries tensor features $x_{ue}$ in $U$ channels; its center atom $i = c_e$
carries the environment $A_{iu}$ (`environment_density_forward`). Channel $u$ of $x$ meets only
channel $u$ of $A$, and every (channel, path) has a learned weight $\theta_{up}$:

$$\mathrm{out}_{ue\gamma} = \sum_p \theta_{up} \sum_{\alpha\beta} C_{p\alpha\beta\gamma}\,
  x_{ue\alpha}\, A_{c_e u \beta}
  = \sum_{\alpha\beta} W_{u\alpha\beta\gamma}\, x_{ue\alpha}\, A_{c_e u\beta}, \qquad
  W_u = \sum_p \theta_{up}\, C_p.$$

With `path_channel_coupling=False` one weight per path is shared by the channels
($\theta_{up} = \theta_p$). No path-count normalization, as in the official code.
`EnvironmentTensorProduct.reference` computes the first form path by path, as written.

**Folding the environment per atom.** All edges of atom $i$ meet the same $A_i$, so the sum over
$\beta$ is done once per atom:

$$M_{ui\alpha\gamma} = \sum_\beta W_{u\alpha\beta\gamma}\, A_{iu\beta} \quad
  (\text{per atom: } U d_1 d_2 d_{out} \text{ multiply-adds}), \qquad
  \mathrm{out}_{ue} = x_{ue}\, M_{u c_e} \quad (\text{per edge: } U d_1 d_{out}),$$

the same function with $d_2$ times fewer operations per edge (9 at $l_{max} = 2$) and no per-edge
pair products. Backward, with $g = \partial L/\partial \mathrm{out}$ (the same maps transposed):

$$\begin{aligned}
\partial L/\partial x_{ue} &= g_{ue}\, M_{u c_e}^T, \\
\partial L/\partial M_{ui} &= \textstyle\sum_{e:\ c_e = i} x_{ue}^T\, g_{ue}
  \quad (\text{a } d_1 \times d_{out} \text{ matrix per atom}), \\
\partial L/\partial A_{iu\beta} &= \textstyle\sum_{\alpha\gamma} W_{u\alpha\beta\gamma}\,
  \partial L/\partial M_{ui\alpha\gamma}, \\
\partial L/\partial \theta_{up} &= \textstyle\sum_{\alpha\beta\gamma} C_{p\alpha\beta\gamma}
  \sum_i A_{iu\beta}\, \partial L/\partial M_{ui\alpha\gamma}.
\end{aligned}$$

**Layout.** The tensor features are channel-major, `[U, E, d]` (the Allegro model's tensor
track), so that the edges of one (channel, center) are consecutive rows and the per-edge
products are `U · n_centers` matrix products `[K, d1] @ [d1, d_out]` on contiguous blocks
`[U, n_centers, K, d]`, with nothing to transpose. The edges are grouped by center
(`group_edges`), $K$ the largest number of edges of one center, shorter groups padded (padding
slots hold copies of edge 0 and are masked wherever they could reach a result). When the edges
are sorted by center with $K$ each (a crystal, or a chunk of one) the grouping is a reshape;
otherwise it costs gathers and the padding ($K$ / mean number of edges per center times the
work).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, as_constant, device, namespace
from ..o3 import Irrep, Irreps, wigner_3j
from .environment import EdgeGroups, _copy_c_order, _group_rows, _pad_atoms, _ungroup_rows

__all__ = [
    "allowed_paths",
    "coupling_tensor",
    "EnvironmentTensorProduct",
    "EnvironmentTensorProductCache",
]


def allowed_paths(irreps_in1: Any, irreps_in2: Any, irreps_out: Any) -> list[tuple[int, int, int]]:
    """Every path `(i_in1, i_in2, i_out)` (indices of entries of the three Irreps) whose output
    irrep occurs in the product of its input irreps (`Irrep.__mul__`).

    Order: output entry (outer loop), then input-1 entry, then input-2 entry — the official
    Allegro order, which is the order of the path axis of the weights.
    """
    irreps_in1, irreps_in2, irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
    return [
        (i1, i2, i_out)
        for i_out, (_, ir_out) in enumerate(irreps_out)
        for i1, (_, ir1) in enumerate(irreps_in1)
        for i2, (_, ir2) in enumerate(irreps_in2)
        if ir_out in ir1 * ir2
    ]


@functools.cache
def _path_coupling(ir1: Irrep, ir2: Irrep, ir_out: Irrep) -> np.ndarray:
    """C_p = √(2 l_out + 1) · 3j(l1, l2, l_out) `[2l1+1, 2l2+1, 2l_out+1]` (float64 NumPy,
    read-only, cached): the coupling of one path, e3nn's "component" normalization."""
    coupling = math.sqrt(ir_out.dim) * wigner_3j(ir1.l, ir2.l, ir_out.l)
    coupling.flags.writeable = False  # cached: shared by every caller
    return coupling


def coupling_tensor(irreps_in1: Any, irreps_in2: Any, irreps_out: Any) -> np.ndarray:
    r"""All paths' couplings $C_{p\alpha\beta\gamma}$ `[n_paths, irreps_in1.dim, irreps_in2.dim,
    irreps_out.dim]` (float64 NumPy, read-only, cached): path $p$'s block
    $\sqrt{2 l_{out} + 1}\; \mathrm{3j}(l_1, l_2, l_{out})$ at its entries' offsets, zero
    elsewhere; paths in `allowed_paths` order.

    The official Allegro code stores the same numbers as the `w3j` buffer of each tensor product
    (`allegro_ref.io` checks an imported model against them).
    """
    return _coupling_tensor(Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out))


@functools.cache
def _coupling_tensor(irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps) -> np.ndarray:
    paths = allowed_paths(irreps_in1, irreps_in2, irreps_out)
    coupling = np.zeros((len(paths), irreps_in1.dim, irreps_in2.dim, irreps_out.dim))
    slices1, slices2, slices_out = irreps_in1.slices(), irreps_in2.slices(), irreps_out.slices()
    for p, (i1, i2, i_out) in enumerate(paths):
        block = _path_coupling(irreps_in1[i1].ir, irreps_in2[i2].ir, irreps_out[i_out].ir)
        coupling[p, slices1[i1], slices2[i2], slices_out[i_out]] = block
    coupling.flags.writeable = False  # cached: shared by every caller
    return coupling


@functools.cache
def _env_major_coupling(irreps_in1: Irreps, irreps_env: Irreps, irreps_out: Irreps) -> np.ndarray:
    """`C[p, β, (α γ)]` flattened to `[n_paths, d2 · d1 · d_out]` (float64 NumPy): the
    couplings with the environment index first, as the per-atom fold contracts it."""
    coupling = _coupling_tensor(irreps_in1, irreps_env, irreps_out)  # [p, α, β, γ]
    arranged = np.ascontiguousarray(coupling.transpose(0, 2, 1, 3))
    arranged = arranged.reshape(coupling.shape[0], -1)
    arranged.flags.writeable = False  # cached: shared by every caller
    return arranged


class EnvironmentTensorProductCache(NamedTuple):
    """What `EnvironmentTensorProduct.backward` needs from the forward."""

    x_groups: Any  # [U, n_centers, K, d1]: x grouped by center
    env_by_channel: Any  # [U, n_centers, d2]: the environments of the centers
    folded: Any  # [U, n_centers, d1, d_out]: M
    w: Any  # [U or 1, d2, d1 · d_out]: the fused couplings W_u, environment index first
    groups: EdgeGroups
    n_atoms: int  # N, rows of env


class EnvironmentTensorProductCotangents(NamedTuple):
    """The cotangents of a backward pass, kept for `EnvironmentTensorProduct.backward_jvp`."""

    g_groups: Any  # [U, n_centers, K, d_out]: ∂L/∂out grouped by center, padding zeroed
    grad_folded: Any  # [U, n_centers, d1 · d_out]: ∂L/∂M


class EnvironmentTensorProduct:
    r"""Allegro's channel-wise tensor product of edge features with the environment of their
    center atom (module docstring: formula, fold, backward, layout).

    Examples:
        Six edges around two atoms (three each), $U = 4$ channels, $l \le 1$ features coupled
        with $l \le 1$ environments into $l \le 1$; the fast product agrees with the per-path
        reference:

        ```python
        import numpy as np
        from allegro_ref.nn import EnvironmentTensorProduct, group_edges

        tp = EnvironmentTensorProduct("0e+1o", "0e+1o", "0e+1o", num_channels=4)
        print(tp)  # 0e+1o x 0e+1o -> 0e+1o | 4 channels | 4 paths
        rng = np.random.default_rng(0)
        centers = np.array([0, 0, 0, 1, 1, 1])
        x = rng.standard_normal((4, 6, 4))  # [U, E, irreps_in1.dim]
        env = rng.standard_normal((2, 4, 4))  # [N, U, irreps_env.dim]
        weights = tp.init_weights(rng)  # [U, n_paths]
        out, cache = tp.forward(x, env, group_edges(centers), weights)
        grad_x, grad_env, grad_weights = tp.backward(cache, np.ones_like(out))
        assert np.allclose(out, tp.reference(x, env, centers, weights))
        print(out.shape, grad_env.shape, grad_weights.shape)  # (4, 6, 4) (2, 4, 4) (4, 4)
        ```

    Args:
        irreps_in1: Irreps (or a string) of the edge features x, multiplicity 1 per entry (e.g.
            `"0e+1o+2e"`; channels are the separate `num_channels` axis).
        irreps_env: Irreps of the environment A (in Allegro, the spherical harmonics'),
            multiplicity 1 per entry.
        irreps_out: Irreps of the output, multiplicity 1 per entry.
        num_channels: U, the number of channels of x, A and the output.
        path_channel_coupling: weights `[U, n_paths]` (True, Allegro's default) or `[n_paths]`
            shared by the channels.

    Attributes:
        paths: the `allowed_paths` `(i_in1, i_env, i_out)`, in weight order.
        n_paths: their number.
        weight_shape: `(U, n_paths)` or `(n_paths,)`.
    """

    def __init__(
        self,
        irreps_in1: Any,
        irreps_env: Any,
        irreps_out: Any,
        num_channels: int,
        path_channel_coupling: bool = True,
    ):
        self.irreps_in1 = _single_copies(irreps_in1, "irreps_in1")
        self.irreps_env = _single_copies(irreps_env, "irreps_env")
        self.irreps_out = _single_copies(irreps_out, "irreps_out")
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
        self.num_channels = num_channels
        self.path_channel_coupling = bool(path_channel_coupling)
        self.paths = allowed_paths(self.irreps_in1, self.irreps_env, self.irreps_out)
        if not self.paths:
            raise ValueError(
                f"no path couples {self.irreps_in1} x {self.irreps_env} to {self.irreps_out}: "
                f"an output l_c needs |l1 - l2| <= l_c <= l1 + l2 and parity p1 p2"
            )
        self.n_paths = len(self.paths)
        self.weight_shape = (
            (num_channels, self.n_paths) if self.path_channel_coupling else (self.n_paths,)
        )

    def __repr__(self) -> str:
        return (
            f"EnvironmentTensorProduct({self.irreps_in1} x {self.irreps_env} -> "
            f"{self.irreps_out} | {self.num_channels} channels | {self.n_paths} paths)"
        )

    def init_weights(self, rng: np.random.Generator) -> np.ndarray:
        r"""Float64 NumPy weights of `weight_shape` drawn from $U(-\sqrt 3, \sqrt 3)$ (unit
        variance), as the official initialization."""
        return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=self.weight_shape)

    # ---- the fast path -----------------------------------------------------------------------

    def forward(
        self, x: Array, env: Array, groups: EdgeGroups, weights: Array
    ) -> tuple[Array, EnvironmentTensorProductCache]:
        """The product, with the environment folded per atom (module docstring).

        Args:
            x: `[U, E, irreps_in1.dim]` edge features, channel-major.
            env: `[N, U, irreps_env.dim]` per-atom environments (`N >= groups.n_centers`).
            groups: `group_edges(centers)` of the edges' center atoms.
            weights: `weight_shape`, the dtype of `x`.

        Returns:
            `(out, cache)`: `out` `[U, E, irreps_out.dim]`, and the cache for `backward`.

        Raises:
            ValueError: shapes or dtypes that do not match the irreps, the channels, the groups
                or `weight_shape`.
        """
        xp = namespace(x, env, weights)
        self._check_inputs(x, env, groups, weights)
        n, d1, d_out = groups.n_centers, self.irreps_in1.dim, self.irreps_out.dim
        w = self._env_coupling(xp, weights)
        env_by_channel = xp.permute_dims(env[:n, ...], (1, 0, 2))  # [U, n, d2]
        folded = xp.reshape(env_by_channel @ w, (self.num_channels, n, d1, d_out))  # M
        x_groups = _group_rows(xp, x, groups, axis=1)  # [U, n, K, d1]
        out = _ungroup_rows(xp, x_groups @ folded, groups, axis=1)
        cache = EnvironmentTensorProductCache(
            x_groups, env_by_channel, folded, w, groups, env.shape[0]
        )
        return out, cache

    def backward(
        self,
        cache: EnvironmentTensorProductCache,
        grad_out: Array,
        weight_gradients: bool = True,
        keep_cotangents: bool = False,
    ) -> tuple:
        r"""Vector-Jacobian product (formulas in the module docstring).

        Args:
            cache: from `forward`.
            grad_out: `[U, E, irreps_out.dim]`, $\partial L/\partial \mathrm{out}$.
            weight_gradients: also compute $\partial L/\partial \theta$.
            keep_cotangents: also return the `EnvironmentTensorProductCotangents` (what
                `backward_jvp` reads).

        Returns:
            `(grad_x, grad_env, grad_weights)`: `[U, E, d1]`, `[N, U, d2]` and `weight_shape`
                (`None` without `weight_gradients`); then the cotangents if `keep_cotangents`.

        Raises:
            ValueError: `grad_out` does not have the shape and dtype of the forward's output.
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
        U, n = self.num_channels, groups.n_centers
        d1_d_out = self.irreps_in1.dim * self.irreps_out.dim
        # padding slots must not reach ∂L/∂M: their gradient is zero
        g_groups = _group_rows(xp, grad_out, groups, axis=1, masked=True)  # [U, n, K, d_out]
        folded_t = _copy_c_order(xp, xp.matrix_transpose(folded))  # Mᵀ, small; BLAS prefers it
        grad_x = _ungroup_rows(xp, g_groups @ folded_t, groups, axis=1)
        grad_folded = xp.matrix_transpose(x_groups) @ g_groups  # [U, n, d1, d_out]
        grad_folded = xp.reshape(grad_folded, (U, n, d1_d_out))
        grad_env = xp.permute_dims(grad_folded @ xp.matrix_transpose(w), (1, 0, 2))
        grad_env = _pad_atoms(xp, grad_env, n_atoms)
        grad_weights = None
        if weight_gradients:
            grad_weights = self._weight_gradients(xp, env_by_channel, grad_folded, w)
        outputs = (grad_x, grad_env, grad_weights)
        if not keep_cotangents:
            return outputs
        return (*outputs, EnvironmentTensorProductCotangents(g_groups, grad_folded))

    def _weight_gradients(self, xp, env_by_channel: Array, grad_folded: Array, w: Array) -> Array:
        r"""$\partial L/\partial \theta_{up} = \sum C_p \sum_i A_{iu\beta}\,
        \partial L/\partial M_{ui\alpha\gamma}$ from $A$ `[U, n, d2]` and
        $\partial L/\partial M$ `[U, n, d1 · d_out]` (or their tangents, term by term)."""
        per_channel = xp.matrix_transpose(env_by_channel) @ grad_folded  # [U, d2, d1 d_out]
        coupling = as_constant(
            _env_major_coupling(self.irreps_in1, self.irreps_env, self.irreps_out), like=w
        )
        grad_weights = xp.reshape(per_channel, (self.num_channels, -1)) @ xp.matrix_transpose(
            coupling
        )
        return grad_weights if self.path_channel_coupling else xp.sum(grad_weights, axis=0)

    def jvp(
        self, cache: EnvironmentTensorProductCache, x_dot: Array, env_dot: Array
    ) -> tuple[Array, EnvironmentTensorProductCache]:
        r"""Jacobian-vector product of `forward` (the weights fixed; bilinear in x and A):
        $\dot M = \dot A\, W$, $\dot{\mathrm{out}}_{ue} = \dot x_{ue} M_{uc_e} + x_{ue} \dot
        M_{uc_e}$.

        Args:
            cache: from `forward`.
            x_dot: `[U, E, d1]` tangent of x.
            env_dot: `[N, U, d2]` tangent of the environments.

        Returns:
            `(out_dot [U, E, d_out], tangent_cache)`: the cache of the tangents (ẋ grouped, Ȧ,
                Ṁ) for `backward_jvp`.
        """
        x_groups, _, folded, w, groups, n_atoms = cache
        xp = namespace(x_dot, env_dot)
        n, d1, d_out = groups.n_centers, self.irreps_in1.dim, self.irreps_out.dim
        env_dot_by_channel = xp.permute_dims(env_dot[:n, ...], (1, 0, 2))
        folded_dot = xp.reshape(env_dot_by_channel @ w, (self.num_channels, n, d1, d_out))
        x_dot_groups = _group_rows(xp, x_dot, groups, axis=1)
        out_dot = x_dot_groups @ folded + x_groups @ folded_dot
        tangent = EnvironmentTensorProductCache(
            x_dot_groups, env_dot_by_channel, folded_dot, w, groups, n_atoms
        )
        return _ungroup_rows(xp, out_dot, groups, axis=1), tangent

    def backward_jvp(
        self,
        cache: EnvironmentTensorProductCache,
        tangent_cache: EnvironmentTensorProductCache,
        cotangents: EnvironmentTensorProductCotangents,
        grad_out_dot: Array,
    ) -> tuple[Array, Array, Array]:
        r"""Tangent of `backward` (forward-over-reverse): the inputs move along
        `tangent_cache` (`jvp`), the cotangent $g$ along $\dot g$, about the backward that
        kept `cotangents` ($g$ and $\bar M$). The product rule on each line of the backward:

        $$\dot{\bar x} = \dot g M^T + g \dot M^T, \quad
          \dot{\bar M} = \dot x^T g + x^T \dot g, \quad
          \dot{\bar A} = \dot{\bar M} W^T, \quad
          \dot{\bar\theta}_{up} = \textstyle\sum C_p (\dot A^T \bar M + A^T \dot{\bar M}).$$

        Returns:
            `(grad_x_dot, grad_env_dot, grad_weights_dot)`.
        """
        x_groups, env_by_channel, folded, w, groups, n_atoms = cache
        x_dot_groups, env_dot_by_channel, folded_dot = tangent_cache[:3]
        g_groups, grad_folded = cotangents
        xp = namespace(grad_out_dot, x_groups)
        g_dot_groups = _group_rows(xp, grad_out_dot, groups, axis=1, masked=True)
        folded_t, folded_dot_t = (
            _copy_c_order(xp, xp.matrix_transpose(m)) for m in (folded, folded_dot)
        )  # Mᵀ and Ṁᵀ, small; BLAS prefers them contiguous
        grad_x_dot = g_dot_groups @ folded_t + g_groups @ folded_dot_t
        grad_folded_dot = xp.matrix_transpose(x_dot_groups) @ g_groups
        grad_folded_dot = grad_folded_dot + xp.matrix_transpose(x_groups) @ g_dot_groups
        grad_folded_dot = xp.reshape(grad_folded_dot, grad_folded.shape)
        grad_env_dot = xp.permute_dims(grad_folded_dot @ xp.matrix_transpose(w), (1, 0, 2))
        grad_weights_dot = self._weight_gradients(
            xp, env_dot_by_channel, grad_folded, w
        ) + self._weight_gradients(xp, env_by_channel, grad_folded_dot, w)
        return (
            _ungroup_rows(xp, grad_x_dot, groups, axis=1),
            _pad_atoms(xp, grad_env_dot, n_atoms),
            grad_weights_dot,
        )

    def _env_coupling(self, xp, weights):
        """`W_u[β, (α γ)]` `[U or 1, d2, d1 · d_out]`: the weighted couplings of all paths."""
        coupling = as_constant(
            _env_major_coupling(self.irreps_in1, self.irreps_env, self.irreps_out), like=weights
        )
        theta = weights if self.path_channel_coupling else xp.reshape(weights, (1, self.n_paths))
        w = theta @ coupling
        return xp.reshape(w, (theta.shape[0], self.irreps_env.dim, -1))

    # ---- the reference -----------------------------------------------------------------------

    def reference(self, x: Array, env: Array, centers: Array, weights: Array) -> Array:
        r"""The same product computed path by path, as the formula reads (the test oracle of
        `forward`; no cache, no backward):

        $$\mathrm{out}_{ue\gamma} = \sum_p \theta_{up} \sum_{\alpha\beta}
          C_{p\alpha\beta\gamma}\, x_{ue\alpha}\, A_{c_e u\beta},$$

        each path's double sum the einsum `"uea,ueb,abc->uec"` written as a broadcast product
        summed over $\alpha$ and $\beta$ (the Array API standard has no einsum). Memory
        `U · E · d1 · d2 · d_out` per path: for checking, not for speed.

        Args:
            x: `[U, E, irreps_in1.dim]` edge features, channel-major.
            env: `[N, U, irreps_env.dim]` per-atom environments.
            centers: `[E]` integer index of the center atom of every edge.
            weights: `weight_shape`.

        Returns:
            `out` `[U, E, irreps_out.dim]`.
        """
        xp = namespace(x, env, weights)
        env_on_edges = xp.permute_dims(xp.take(env, centers, axis=0), (1, 0, 2))  # A[c_e, u]
        pieces = [[] for _ in self.irreps_out]
        s1, s2 = self.irreps_in1.slices(), self.irreps_env.slices()
        for p, (i1, i2, i_out) in enumerate(self.paths):
            irreps = (self.irreps_in1[i1].ir, self.irreps_env[i2].ir, self.irreps_out[i_out].ir)
            c_p = as_constant(_path_coupling(*irreps), like=x)  # [α, β, γ]
            a = x[:, :, s1[i1], None, None]  # x[u, e, α]
            b = env_on_edges[:, :, None, s2[i2], None]  # A[c_e, u, β]
            path = xp.sum(a * b * c_p, axis=(2, 3))  # Σ_αβ C_p[α, β, γ] x[u, e, α] A[c_e, u, β]
            theta = weights[:, p, None, None] if self.path_channel_coupling else weights[p]
            pieces[i_out].append(theta * path)
        zeros = functools.partial(xp.zeros, dtype=x.dtype, device=device(x))
        blocks = [
            sum(terms[1:], terms[0]) if terms else zeros((*x.shape[:2], entry.dim))
            for terms, entry in zip(pieces, self.irreps_out, strict=True)
        ]
        return xp.concat(blocks, axis=-1)

    # ---- checks ------------------------------------------------------------------------------

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
        if n_edges != groups.n_centers * groups.k_max and groups.edge_slots is None:
            raise ValueError(
                f"x has {n_edges} edges but the groups hold {groups.n_centers} centers x "
                f"{groups.k_max} edges: group_edges(centers) of these edges is needed"
            )
        if groups.edge_slots is not None and groups.edge_slots.shape[0] != n_edges:
            raise ValueError(
                f"x has {n_edges} edges but the groups were built for {groups.edge_slots.shape[0]}"
            )
        if env.shape[0] < groups.n_centers:
            raise ValueError(
                f"env has {env.shape[0]} atoms but the edges have centers up to "
                f"{groups.n_centers - 1}"
            )
        if tuple(weights.shape) != self.weight_shape:
            raise ValueError(
                f"weights have shape {tuple(weights.shape)} but this tensor product expects "
                f"{self.weight_shape} (path_channel_coupling={self.path_channel_coupling})"
            )
        if not x.dtype == env.dtype == weights.dtype:
            raise ValueError(
                f"dtypes differ: x {x.dtype}, env {env.dtype}, weights {weights.dtype}"
            )


def _single_copies(irreps: Any, name: str) -> Irreps:
    irreps = Irreps(irreps)
    if any(mul != 1 for mul, _ in irreps) or len(irreps) == 0:
        raise ValueError(
            f"{name} = {irreps!s} must list each irrep with multiplicity 1 (e.g. '0e+1o+2e'); "
            f"channels are the separate num_channels axis"
        )
    return irreps
