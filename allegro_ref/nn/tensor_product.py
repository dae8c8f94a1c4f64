# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
r"""Tensor products of O(3) features, with hand-written backward passes.

Two features ``x`` (irrep ``a``, degree ``l_a``) and ``y`` (irrep ``b``) couple into an irrep
``c`` through the real Wigner 3j symbol (``allegro_ref.o3.wigner_3j``, e3nn's basis and signs):

    z_k = Σ_{i,j} C[i, j, k] x_i y_j

whenever ``|l_a − l_b| <= l_c <= l_a + l_b`` and ``p_c = p_a p_b``; each such ``a ⊗ b → c`` is
a *path*. ``z`` transforms like ``c`` when ``x`` and ``y`` transform like ``a`` and ``b``.

``ChannelwiseTensorProduct``
    Allegro's contraction (the official ``Contracter``, mode "uuu"): features carry
    ``n_channels`` copies of one vector each, channel ``u`` of ``x1`` only meets channel ``u`` of
    ``x2``, and every (channel, path) has a learned weight. It is ~70 % of Allegro's cost, so
    it is written for speed: all paths fused into one coupling tensor, edges processed in
    chunks that stay in cache, one batched matrix product per chunk.
``TensorProduct``
    e3nn's ``o3.TensorProduct`` on its "mul_ir" feature layout, with the "uvw", "uvu" and
    "uuu" connection modes and e3nn's normalizations: for teaching and for checking other
    codes, written per instruction for clarity.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import as_constant, device, is_numpy, namespace
from ..o3 import Irrep, Irreps, wigner_3j
from .linear import _concat_entries

__all__ = ["ChannelwiseTensorProduct", "TensorProduct", "allowed_paths"]


def allowed_paths(irreps_in1: Any, irreps_in2: Any, irreps_out: Any) -> list[tuple[int, int, int]]:
    """Every path ``(i_in1, i_in2, i_out)`` (indices of entries of the three Irreps) allowed by
    the selection rules ``|l1 − l2| <= l_out <= l1 + l2`` and ``p_out = p1 p2``.

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


def _path_coupling(ir1: Irrep, ir2: Irrep, ir_out: Irrep) -> np.ndarray:
    """``√(2 l_out + 1) · wigner_3j(l1, l2, l_out)`` [2l1+1, 2l2+1, 2l_out+1]: e3nn's "component"
    normalization (unit-variance inputs give unit-variance outputs per path)."""
    return math.sqrt(ir_out.dim) * wigner_3j(ir1.l, ir2.l, ir_out.l)


# =============================================================================================
# Channel-wise ("uuu") tensor product: Allegro's contraction
# =============================================================================================

# Bytes of the largest per-chunk temporary (the pair products) on NumPy: small enough to stay in
# the CPU caches, which makes the elementwise products ~2x faster than with large chunks.
_CPU_CHUNK_BYTES = 1 << 22
# On other backends (GPUs) large chunks amortize the kernel launches.
_DEVICE_CHUNK_BYTES = 1 << 28


class _Bilinear(NamedTuple):
    """A fused bilinear map ``out[k] = Σ_n coupling[p, k, n] a[index_a[n]] b[index_b[n]]``
    (summed over the paths p once weighted), over the pairs ``n`` of components that any path
    couples. ``index_a``/``index_b`` are None when every pair is used (then ``n = α n_b + β``
    and the pair products are one broadcast outer product); otherwise float64 arrays of the
    component indices (moved to the device and cast to integers on use)."""

    coupling: np.ndarray  # [n_paths, n_out, n_pairs]
    index_a: np.ndarray | None  # [n_pairs]
    index_b: np.ndarray | None  # [n_pairs]

    @property
    def n_pairs(self) -> int:
        return self.coupling.shape[2]


def _bilinear(coupling: np.ndarray) -> _Bilinear:
    """Plan of the bilinear map with coupling tensor ``[n_paths, n_a, n_b, n_out]``.

    Building the pair products by gathering costs ~3 passes over memory per pair (two gathers
    and a product) against 1 for a broadcast outer product, so pairs are gathered only when
    fewer than a third of them are coupled (e.g. a scalar output: only ``α = β`` pairs).
    """
    n_paths, n_a, n_b, n_out = coupling.shape
    flat = coupling.reshape(n_paths, n_a * n_b, n_out)
    used = np.flatnonzero(np.any(flat != 0.0, axis=(0, 2)))
    index_a = index_b = None
    if 3 * used.size < n_a * n_b:
        index_a, index_b = (np.asarray(i, dtype=np.float64) for i in np.divmod(used, n_b))
        flat = flat[:, used, :]
    return _Bilinear(np.ascontiguousarray(flat.transpose(0, 2, 1)), index_a, index_b)


class _ChannelwisePlans(NamedTuple):
    """The three bilinear maps of a channel-wise TP with coupling ``C[p, i, j, k]``:
    ``forward``  out_k = Σ C x1_i x2_j      (pairs (i, j) -> k)
    ``grad_x1``  ∂L/∂x1_i = Σ C x2_j g_k    (pairs (j, k) -> i)
    ``grad_x2``  ∂L/∂x2_j = Σ C x1_i g_k    (pairs (i, k) -> j)."""

    forward: _Bilinear
    grad_x1: _Bilinear
    grad_x2: _Bilinear


@functools.cache
def _coupling_tensor(irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps) -> np.ndarray:
    """All paths' couplings ``C[p, i, j, k]`` [n_paths, dim1, dim2, dim_out] (float64 NumPy):
    path p's block ``√(2 l_out + 1) · wigner_3j`` at its entries' offsets, zero elsewhere — the
    official Contracter's ``w3j`` buffer."""
    paths = allowed_paths(irreps_in1, irreps_in2, irreps_out)
    coupling = np.zeros((len(paths), irreps_in1.dim, irreps_in2.dim, irreps_out.dim))
    slices1, slices2, slices_out = irreps_in1.slices(), irreps_in2.slices(), irreps_out.slices()
    for p, (i1, i2, i_out) in enumerate(paths):
        block = _path_coupling(irreps_in1[i1].ir, irreps_in2[i2].ir, irreps_out[i_out].ir)
        coupling[p, slices1[i1], slices2[i2], slices_out[i_out]] = block
    coupling.flags.writeable = False  # cached: shared by every caller
    return coupling


@functools.cache
def _channelwise_plans(irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps):
    """The three bilinear plans of the coupling tensor, built once per irreps."""
    coupling = _coupling_tensor(irreps_in1, irreps_in2, irreps_out)
    return _ChannelwisePlans(
        forward=_bilinear(coupling),
        grad_x1=_bilinear(coupling.transpose(0, 2, 3, 1)),
        grad_x2=_bilinear(coupling.transpose(0, 1, 3, 2)),
    )


def _component_major(xp, x):
    """``[e, U, d]`` -> ``[d, U, e]`` as a fresh C-ordered array (reshaping the permuted view
    through 1-D forces the copy), so that the elementwise products run over long contiguous
    rows of ``U e`` numbers."""
    flat = xp.reshape(xp.permute_dims(x, (2, 1, 0)), (-1,))
    return xp.reshape(flat, (x.shape[2], x.shape[1], x.shape[0]))


def _pair_products(xp, plan: _Bilinear, a, b):
    """``[n_pairs, U, e]`` products ``a[α] b[β]`` of the pairs of ``plan``, from
    component-major ``a`` [n_a, U, e] and ``b`` [n_b, U, e]."""
    if plan.index_a is None:
        products = a[:, None, :, :] * b[None, :, :, :]
        return xp.reshape(products, (-1, a.shape[1], a.shape[2]))
    index_a = as_constant(plan.index_a, like=a, dtype=xp.int64)
    index_b = as_constant(plan.index_b, like=a, dtype=xp.int64)
    return xp.take(a, index_a, axis=0) * xp.take(b, index_b, axis=0)


def _weighted_coupling(xp, plan: _Bilinear, theta):
    """``W[u, k, n] = Σ_p θ[u, p] coupling[p, k, n]`` [U or 1, n_out, n_pairs]."""
    coupling = as_constant(plan.coupling, like=theta)
    n_paths, n_out, n_pairs = coupling.shape
    w = theta @ xp.reshape(coupling, (n_paths, n_out * n_pairs))
    return xp.reshape(w, (theta.shape[0], n_out, n_pairs))


def _apply(xp, plan: _Bilinear, w, a, b):
    """``out[e, u, k] = Σ_n w[u, k, n] a[α_n, u, e] b[β_n, u, e]`` [e, U, n_out]: one batched
    matrix product over channels, ``[n_out, n_pairs] @ [n_pairs, e]`` per channel."""
    pairs = xp.permute_dims(_pair_products(xp, plan, a, b), (1, 0, 2))
    return xp.permute_dims(w @ pairs, (2, 0, 1))


class ChannelwiseTensorProduct:
    r"""Allegro's channel-wise tensor product with per-(channel, path) weights.

    For features with ``U = num_channels`` channels (each irreps entry has multiplicity 1, e.g.
    ``"0e+1o+2e"``):

        out[e, u, γ] = Σ_{p = (a, b) -> c ∋ γ} θ[u, p] Σ_{α∈a, β∈b} C_p[α, β, γ] x1[e,u,α] x2[e,u,β]

    with ``C_p = √(2 l_c + 1) · wigner_3j(l_a, l_b, l_c)`` and the paths of
    ``allowed_paths`` (order: output, then input 1, then input 2). With
    ``path_channel_coupling=False`` one weight per path is shared by all channels
    (``θ[u, p] = θ[p]``). No path-count normalization, as in the official code
    (shared/reference/allegro_official.md §2.10 step 3). In Allegro, ``x1`` are the edge's
    tensor features and ``x2`` the environment of its centre atom gathered onto the edge.

    Computation: the weighted couplings of all paths are fused into ``W_u[α, β, γ] =
    Σ_p θ[u, p] C_p[α, β, γ]``; per chunk of edges the pair products ``x1[α] x2[β]`` are formed
    component-major ``[α β, U, e]`` and multiplied by ``W_u`` in one batched matrix product.

    Backward, by the bilinearity of ``out`` in (x1, x2) and linearity in θ, with g = ∂L/∂out:

        ∂L/∂x1[e, u, α] = Σ_{β γ} W_u[α, β, γ] x2[e, u, β] g[e, u, γ]
        ∂L/∂x2[e, u, β] = Σ_{α γ} W_u[α, β, γ] x1[e, u, α] g[e, u, γ]
        ∂L/∂θ[u, p]     = Σ_{α β γ} C_p[α, β, γ] Σ_e x1[e, u, α] x2[e, u, β] g[e, u, γ]

    — the first two are the same fused contraction with the roles of the arguments permuted;
    the last contracts ``Σ_e (x1 x2)[u, αβ, e] g[u, γ, e]`` (a matrix product over edges).

    Args:
        irreps_in1: Irreps (or a string) of ``x1``, multiplicity 1 per entry.
        irreps_in2: Irreps (or a string) of ``x2``, multiplicity 1 per entry.
        irreps_out: Irreps (or a string) of the output, multiplicity 1 per entry.
        num_channels: ``U``, the number of channels of all three features.
        path_channel_coupling: weights ``[U, n_paths]`` (True, Allegro's default) or
            ``[n_paths]`` shared by the channels.
        chunk_bytes: size of the largest temporary per chunk of edges; default 4 MiB on NumPy
            (cache-sized), 256 MiB on other backends.

    Attributes: ``paths`` (list of ``(i_in1, i_in2, i_out)``), ``n_paths``, ``weight_shape``.
    """

    def __init__(
        self,
        irreps_in1: Any,
        irreps_in2: Any,
        irreps_out: Any,
        num_channels: int,
        path_channel_coupling: bool = True,
        chunk_bytes: int | None = None,
    ):
        self.irreps_in1 = _single_copies(irreps_in1, "irreps_in1")
        self.irreps_in2 = _single_copies(irreps_in2, "irreps_in2")
        self.irreps_out = _single_copies(irreps_out, "irreps_out")
        if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
        if chunk_bytes is not None and chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes!r}")
        self.num_channels = num_channels
        self.path_channel_coupling = bool(path_channel_coupling)
        self.chunk_bytes = chunk_bytes
        self.paths = allowed_paths(self.irreps_in1, self.irreps_in2, self.irreps_out)
        if not self.paths:
            raise ValueError(
                f"no path couples {self.irreps_in1} x {self.irreps_in2} to {self.irreps_out}: "
                f"an output l_c needs |l1 - l2| <= l_c <= l1 + l2 and parity p1 p2"
            )
        self.n_paths = len(self.paths)
        self.weight_shape = (
            (num_channels, self.n_paths) if self.path_channel_coupling else (self.n_paths,)
        )
        self._plans = _channelwise_plans(self.irreps_in1, self.irreps_in2, self.irreps_out)

    def __repr__(self) -> str:
        return (
            f"ChannelwiseTensorProduct({self.irreps_in1} x {self.irreps_in2} -> "
            f"{self.irreps_out} | {self.num_channels} channels | {self.n_paths} paths)"
        )

    def init_weights(self, rng: np.random.Generator) -> np.ndarray:
        """Float64 NumPy weights of ``weight_shape`` drawn from U(−√3, √3) (unit variance), as
        the official initialization."""
        return rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=self.weight_shape)

    def forward(self, x1: Any, x2: Any, weights: Any) -> tuple[Any, tuple]:
        """The product (class docstring).

        Args:
            x1: ``[n_edges, U, irreps_in1.dim]``.
            x2: ``[n_edges, U, irreps_in2.dim]``.
            weights: ``weight_shape``, same dtype.

        Returns:
            ``out`` ``[n_edges, U, irreps_out.dim]`` and the cache for ``backward``
            (references to the inputs; the pair products are recomputed there).
        """
        xp = namespace(x1, x2, weights)
        self._check_inputs(x1, x2, weights)
        plan = self._plans.forward
        w = _weighted_coupling(xp, plan, self._theta(xp, weights))
        out = self._empty(xp, x1, self.irreps_out.dim)
        for s in self._chunks(x1):
            out[s, ...] = _apply(
                xp, plan, w, _component_major(xp, x1[s, ...]), _component_major(xp, x2[s, ...])
            )
        return out, (x1, x2, weights)

    def backward(self, cache: tuple, grad_out: Any) -> tuple[Any, Any, Any]:
        """Vector-Jacobian product (formulas in the class docstring).

        Args:
            cache: from ``forward``.
            grad_out: ``[n_edges, U, irreps_out.dim]``, ∂L/∂out.

        Returns:
            ``(grad_x1, grad_x2, grad_weights)`` with the shapes of ``x1``, ``x2``, ``weights``.
        """
        x1, x2, weights = cache
        xp = namespace(x1, grad_out)
        expected = (x1.shape[0], self.num_channels, self.irreps_out.dim)
        if tuple(grad_out.shape) != expected or grad_out.dtype != x1.dtype:
            raise ValueError(
                f"grad_out has shape {tuple(grad_out.shape)} and dtype {grad_out.dtype}, but the "
                f"forward output has shape {expected} and dtype {x1.dtype}"
            )
        plans = self._plans
        theta = self._theta(xp, weights)
        w1 = _weighted_coupling(xp, plans.grad_x1, theta)
        w2 = _weighted_coupling(xp, plans.grad_x2, theta)
        grad_x1 = self._empty(xp, x1, self.irreps_in1.dim)
        grad_x2 = self._empty(xp, x1, self.irreps_in2.dim)
        # Σ_e g[γ, u, e] (x1 x2)[n, u, e], accumulated over the chunks: [U, n_out, n_pairs]
        n_out, n_pairs = plans.forward.coupling.shape[1:]
        g_pairs = xp.zeros((self.num_channels, n_out, n_pairs), dtype=x1.dtype, device=device(x1))
        for s in self._chunks(x1):
            a, b, g = (_component_major(xp, x[s, ...]) for x in (x1, x2, grad_out))
            pairs = _pair_products(xp, plans.forward, a, b)
            g_pairs = g_pairs + xp.permute_dims(g, (1, 0, 2)) @ xp.permute_dims(pairs, (1, 2, 0))
            grad_x1[s, ...] = _apply(xp, plans.grad_x1, w1, b, g)
            grad_x2[s, ...] = _apply(xp, plans.grad_x2, w2, a, g)
        coupling = as_constant(plans.forward.coupling, like=x1)
        grad_theta = (
            xp.reshape(g_pairs, (self.num_channels, -1))
            @ xp.reshape(coupling, (coupling.shape[0], -1)).T
        )
        if not self.path_channel_coupling:
            grad_theta = xp.sum(grad_theta, axis=0)
        return grad_x1, grad_x2, grad_theta

    # ---- helpers -----------------------------------------------------------------------------

    def _theta(self, xp, weights):
        """The weights as ``[U, n_paths]`` (coupled) or ``[1, n_paths]`` (shared)."""
        return weights if self.path_channel_coupling else xp.reshape(weights, (1, self.n_paths))

    def _empty(self, xp, like, dim: int):
        """An uninitialized ``[n_edges, U, dim]`` array, filled chunk by chunk (slice assignment
        keeps it C-ordered, which a concatenation of permuted chunks would not on NumPy)."""
        shape = (like.shape[0], self.num_channels, dim)
        return xp.empty(shape, dtype=like.dtype, device=device(like))

    def _chunks(self, x1) -> list[slice]:
        """Slices of edges whose largest temporary ``[n_pairs, U, e]`` fits in chunk_bytes."""
        n_edges = x1.shape[0]
        budget = self.chunk_bytes
        if budget is None:
            budget = _CPU_CHUNK_BYTES if is_numpy(x1) else _DEVICE_CHUNK_BYTES
        plans = self._plans
        n_pairs = max(plans.forward.n_pairs, plans.grad_x1.n_pairs, plans.grad_x2.n_pairs)
        bytes_per_edge = self.num_channels * n_pairs * (namespace(x1).finfo(x1.dtype).bits // 8)
        size = max(1, budget // bytes_per_edge)
        return [slice(start, min(start + size, n_edges)) for start in range(0, n_edges, size)]

    def _check_inputs(self, x1, x2, weights) -> None:
        u = self.num_channels
        for name, x, irreps in (("x1", x1, self.irreps_in1), ("x2", x2, self.irreps_in2)):
            if x.ndim != 3 or tuple(x.shape[1:]) != (u, irreps.dim):
                raise ValueError(
                    f"{name} has shape {tuple(x.shape)} but the tensor product expects "
                    f"[n_edges, {u} channels, {irreps.dim}] for irreps {irreps}"
                )
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(
                f"x1 has {x1.shape[0]} edges but x2 has {x2.shape[0]}; they must be equal"
            )
        self._check_weights(weights, {"x1": x1, "x2": x2})

    def _check_weights(self, weights, inputs: dict[str, Any]) -> None:
        """The weights' shape, and one dtype for the named inputs and the weights."""
        if tuple(weights.shape) != self.weight_shape:
            raise ValueError(
                f"weights have shape {tuple(weights.shape)} but this tensor product expects "
                f"{self.weight_shape} (path_channel_coupling={self.path_channel_coupling})"
            )
        if any(a.dtype != weights.dtype for a in inputs.values()):
            dtypes = ", ".join(f"{name} {a.dtype}" for name, a in inputs.items())
            raise ValueError(f"dtypes differ: {dtypes}, weights {weights.dtype}")


def _single_copies(irreps: Any, name: str) -> Irreps:
    irreps = Irreps(irreps)
    if any(mul != 1 for mul, _ in irreps) or len(irreps) == 0:
        raise ValueError(
            f"{name} = {irreps!s} must list each irrep with multiplicity 1 (e.g. '0e+1o+2e'); "
            f"channels are the separate num_channels axis"
        )
    return irreps


# =============================================================================================
# e3nn's TensorProduct on the "mul_ir" layout
# =============================================================================================

_MODES = ("uvw", "uvu", "uuu")
_IRREP_NORMALIZATIONS = ("component", "norm", "none")
_PATH_NORMALIZATIONS = ("element", "path", "none")


class Instruction(NamedTuple):
    """One path of a ``TensorProduct``: entries ``i_in1 ⊗ i_in2 → i_out`` of the three Irreps,
    the connection ``mode``, whether it has learned weights, the user's ``path_weight``, the
    total factor ``alpha`` multiplying its 3j symbol, and the shape of its weights."""

    i_in1: int
    i_in2: int
    i_out: int
    mode: str
    has_weight: bool
    path_weight: float
    alpha: float
    weight_shape: tuple[int, ...]


@functools.cache
def _scaled_3j(l1: int, l2: int, l_out: int, alpha: float) -> np.ndarray:
    """``alpha · wigner_3j(l1, l2, l_out)`` as a ``[(2l1+1)(2l2+1), 2l_out+1]`` matrix."""
    c = alpha * wigner_3j(l1, l2, l_out)
    return c.reshape(c.shape[0] * c.shape[1], c.shape[2])


class TensorProduct:
    r"""e3nn's ``o3.TensorProduct`` on the e3nn "mul_ir" layout, with a hand-written backward.

    Features are ``[..., irreps.dim]`` with multiplicities: entry ``(mul, ir)`` of an Irreps
    holds ``mul`` contiguous copies (``[mul, 2l+1]`` flattened). Each instruction couples the
    copies ``x1[u]`` of entry ``i_in1`` and ``x2[v]`` of entry ``i_in2`` into entry ``i_out``,
    ``(x1[u] ⊗ x2[v])_k = Σ_ij C[i, j, k] x1[u]_i x2[v]_j`` with ``C = α · wigner_3j``:

    - ``"uvw"`` (fully connected): ``out[w] += Σ_{u v} W[u, v, w] (x1[u] ⊗ x2[v])``, weights
      ``[mul1, mul2, mul_out]``;
    - ``"uvu"``: ``out[u] += Σ_v W[u, v] (x1[u] ⊗ x2[v])``, weights ``[mul1, mul2]``,
      ``mul_out = mul1``;
    - ``"uuu"``: ``out[u] += W[u] (x1[u] ⊗ x2[u])``, weights ``[mul1]``, all multiplicities
      equal.

    An instruction without weights ("uvu", "uuu") uses W = 1. Normalization, exactly as e3nn:
    ``α = √(a · path_weight / n)`` with ``a = 2 l_out + 1`` ("component"), ``(2l1+1)(2l2+1)``
    ("norm") or 1 ("none"), and ``n`` the number of terms summed into an output component:
    summed over all instructions into the same output entry ("element"), this instruction's
    times the number of such instructions ("path"), or 1 ("none"); the terms per instruction
    are ``mul1 mul2`` (uvw), ``mul2`` (uvu), 1 (uuu). e3nn's ``in1_var``/``in2_var``/``out_var``
    (all 1 by default) are not supported.

    Weights: one flat vector, the instructions' weights concatenated in order, each flattened
    row-major: ``[weight_numel]`` shared by the batch (``shared_weights=True``), or
    ``[..., weight_numel]`` one set per sample.

    Backward: with ``P = (x1 ⊗ x2) @ C`` the weighted sum is linear in P and W, so
    ``∂L/∂W = Σ P g`` and ``∂L/∂P = W g`` (contracting the other indices); through
    ``P = Σ_ij C_ij x1_i x2_j``: ``∂L/∂x1_i = Σ_j (∂L/∂P C^T)_ij x2_j`` and symmetrically
    for x2.

    Args:
        irreps_in1: Irreps (or a string) of the first input.
        irreps_in2: Irreps (or a string) of the second input.
        irreps_out: Irreps (or a string) of the output.
        instructions: a mode ``"uvw"``, ``"uvu"`` or ``"uuu"`` (every allowed path, in
            ``allowed_paths`` order, whose multiplicities fit the mode, with weights), or a list
            of e3nn tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.
        irrep_normalization: "component" (default), "norm" or "none".
        path_normalization: "element" (default), "path" or "none".
        shared_weights: see Weights.

    Not chunked: memory grows as ``batch · mul1 · mul2 · (2l1+1)(2l2+1)`` per instruction.
    """

    def __init__(
        self,
        irreps_in1: Any,
        irreps_in2: Any,
        irreps_out: Any,
        instructions: str | Sequence[tuple],
        irrep_normalization: str = "component",
        path_normalization: str = "element",
        shared_weights: bool = True,
    ):
        self.irreps_in1, self.irreps_in2, self.irreps_out = (
            Irreps(irreps_in1),
            Irreps(irreps_in2),
            Irreps(irreps_out),
        )
        if irrep_normalization not in _IRREP_NORMALIZATIONS:
            raise ValueError(
                f"irrep_normalization {irrep_normalization!r} is not one of {_IRREP_NORMALIZATIONS}"
            )
        if path_normalization not in _PATH_NORMALIZATIONS:
            raise ValueError(
                f"path_normalization {path_normalization!r} is not one of {_PATH_NORMALIZATIONS}"
            )
        self.irrep_normalization = irrep_normalization
        self.path_normalization = path_normalization
        self.shared_weights = bool(shared_weights)
        raw = self._instruction_tuples(instructions)
        self.instructions = [self._instruction(raw_ins, raw) for raw_ins in raw]
        self.weight_numel = sum(
            math.prod(ins.weight_shape) for ins in self.instructions if ins.has_weight
        )

    def __repr__(self) -> str:
        return (
            f"TensorProduct({self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
            f"{len(self.instructions)} instructions | {self.weight_numel} weights)"
        )

    def init_weights(self, rng: np.random.Generator) -> np.ndarray:
        """Float64 NumPy shared weights ``[weight_numel]`` ~ N(0, 1), as e3nn's internal ones."""
        return rng.standard_normal(self.weight_numel)

    # ---- set-up ------------------------------------------------------------------------------

    def _instruction_tuples(self, instructions) -> list[tuple]:
        if isinstance(instructions, str):
            mode = instructions
            if mode not in _MODES:
                raise ValueError(f"mode {mode!r} is not one of {_MODES}")
            return [
                (i1, i2, i_out, mode, True, 1.0)
                for i1, i2, i_out in allowed_paths(
                    self.irreps_in1, self.irreps_in2, self.irreps_out
                )
                if self._multiplicities_fit(mode, i1, i2, i_out)
            ]
        out = []
        for ins in instructions:
            if len(ins) not in (5, 6):
                raise ValueError(
                    f"instruction {ins!r} must be (i_in1, i_in2, i_out, mode, has_weight"
                    f"[, path_weight])"
                )
            out.append(tuple(ins) if len(ins) == 6 else (*ins, 1.0))
        return out

    def _multiplicities_fit(self, mode: str, i1: int, i2: int, i_out: int) -> bool:
        mul1, mul2, mul_out = (
            self.irreps_in1[i1].mul,
            self.irreps_in2[i2].mul,
            self.irreps_out[i_out].mul,
        )
        return mode == "uvw" or (mul1 == mul_out and (mode == "uvu" or mul1 == mul2))

    def _instruction(self, raw_ins: tuple, raw: list[tuple]) -> Instruction:
        i1, i2, i_out, mode, has_weight, path_weight = raw_ins
        named = (("irreps_in1", i1, self.irreps_in1), ("irreps_in2", i2, self.irreps_in2))
        for name, index, irreps in (*named, ("irreps_out", i_out, self.irreps_out)):
            if not 0 <= index < len(irreps):
                raise ValueError(
                    f"instruction {raw_ins}: index {index} is out of range for {name} = {irreps}"
                )
        if mode not in _MODES:
            raise ValueError(f"instruction {raw_ins}: mode {mode!r} is not one of {_MODES}")
        (mul1, ir1), (mul2, ir2), (mul_out, ir_out) = (
            self.irreps_in1[i1],
            self.irreps_in2[i2],
            self.irreps_out[i_out],
        )
        if ir_out not in ir1 * ir2:
            raise ValueError(f"instruction {raw_ins}: {ir1} x {ir2} cannot produce {ir_out}")
        if not self._multiplicities_fit(mode, i1, i2, i_out):
            raise ValueError(
                f"instruction {raw_ins}: mode {mode!r} does not fit multiplicities "
                f"{mul1}x{ir1}, {mul2}x{ir2} -> {mul_out}x{ir_out}"
            )
        if mode == "uvw" and not has_weight:
            raise ValueError(f"instruction {raw_ins}: mode 'uvw' needs weights")

        def n_terms(ins: tuple) -> int:
            m1, m2 = self.irreps_in1[ins[0]].mul, self.irreps_in2[ins[1]].mul
            return {"uvw": m1 * m2, "uvu": m2, "uuu": 1}[ins[3]]

        a = {"component": ir_out.dim, "norm": ir1.dim * ir2.dim, "none": 1}[
            self.irrep_normalization
        ]
        siblings = [ins for ins in raw if ins[2] == i_out]
        n = {
            "element": sum(n_terms(ins) for ins in siblings),
            "path": n_terms(raw_ins) * len(siblings),
            "none": 1,
        }[self.path_normalization]
        alpha = math.sqrt(a * path_weight / n) if n > 0 else math.sqrt(a * path_weight)
        weight_shape = {"uvw": (mul1, mul2, mul_out), "uvu": (mul1, mul2), "uuu": (mul1,)}[mode]
        return Instruction(
            i1, i2, i_out, mode, bool(has_weight), float(path_weight), alpha, weight_shape
        )

    # ---- forward / backward ------------------------------------------------------------------

    def forward(self, x1: Any, x2: Any, weights: Any = None) -> tuple[Any, tuple]:
        """The product (class docstring).

        Args:
            x1: ``[..., irreps_in1.dim]``.
            x2: ``[..., irreps_in2.dim]``, the same leading shape.
            weights: ``[weight_numel]`` (shared) or ``[..., weight_numel]``; None when no
                instruction has weights.

        Returns:
            ``out`` ``[..., irreps_out.dim]`` and the cache for ``backward``.
        """
        xp = namespace(x1, x2)
        batch = self._check_inputs(x1, x2, weights)
        x1, x2 = xp.reshape(x1, (-1, x1.shape[-1])), xp.reshape(x2, (-1, x2.shape[-1]))
        if weights is not None and not self.shared_weights:
            weights = xp.reshape(weights, (-1, self.weight_numel))
        outputs = [None] * len(self.irreps_out)
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            a, b = self._operands(xp, ins, x1, x2)
            y = _mix(xp, ins.mode, w, self._path_products(xp, ins, a, b))
            outputs[ins.i_out] = y if outputs[ins.i_out] is None else outputs[ins.i_out] + y
        out = _concat_entries(xp, outputs, self.irreps_out, x1)
        return xp.reshape(out, (*batch, self.irreps_out.dim)), (x1, x2, weights, batch)

    def backward(self, cache: tuple, grad_out: Any) -> tuple[Any, Any, Any]:
        """Vector-Jacobian product (class docstring).

        Args:
            cache: from ``forward``.
            grad_out: ``[..., irreps_out.dim]``, ∂L/∂out.

        Returns:
            ``(grad_x1, grad_x2, grad_weights)`` shaped like the inputs (``grad_weights`` is
            None when there are no weights).
        """
        x1, x2, weights, batch = cache
        xp = namespace(x1, grad_out)
        if tuple(grad_out.shape) != (*batch, self.irreps_out.dim):
            raise ValueError(
                f"grad_out has shape {tuple(grad_out.shape)} but the forward output has shape "
                f"{(*batch, self.irreps_out.dim)}"
            )
        g = xp.reshape(grad_out, (-1, self.irreps_out.dim))
        n_samples = x1.shape[0]
        grads1, grads2 = [None] * len(self.irreps_in1), [None] * len(self.irreps_in2)
        grad_w = []
        slices_out = self.irreps_out.slices()
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            a, b = self._operands(xp, ins, x1, x2)
            mul_out, ir_out = self.irreps_out[ins.i_out]
            g_ins = xp.reshape(g[:, slices_out[ins.i_out]], (n_samples, mul_out, ir_out.dim))
            products = self._path_products(xp, ins, a, b)
            grad_products, grad_weight = _mix_backward(xp, ins.mode, w, products, g_ins)
            if ins.has_weight:
                if self.shared_weights:
                    grad_weight = xp.sum(grad_weight, axis=0)
                grad_w.append(
                    xp.reshape(grad_weight, (*grad_weight.shape[: -len(ins.weight_shape)], -1))
                )
            grad_a, grad_b = self._operands_backward(xp, ins, a, b, grad_products)
            for grads, index, grad in ((grads1, ins.i_in1, grad_a), (grads2, ins.i_in2, grad_b)):
                grads[index] = grad if grads[index] is None else grads[index] + grad
        grad_x1 = _concat_entries(xp, grads1, self.irreps_in1, x1)
        grad_x2 = _concat_entries(xp, grads2, self.irreps_in2, x1)
        grad_weights = None
        if weights is not None:
            grad_weights = xp.concat(grad_w, axis=-1)
            if not self.shared_weights:
                grad_weights = xp.reshape(grad_weights, (*batch, self.weight_numel))
        return (
            xp.reshape(grad_x1, (*batch, self.irreps_in1.dim)),
            xp.reshape(grad_x2, (*batch, self.irreps_in2.dim)),
            grad_weights,
        )

    # ---- helpers -----------------------------------------------------------------------------

    def _operands(self, xp, ins: Instruction, x1, x2):
        """The entries of the instruction as ``[n, mul1, 2l1+1]`` and ``[n, mul2, 2l2+1]``."""
        (mul1, ir1), (mul2, ir2) = self.irreps_in1[ins.i_in1], self.irreps_in2[ins.i_in2]
        a = x1[:, self.irreps_in1.slices()[ins.i_in1]]
        b = x2[:, self.irreps_in2.slices()[ins.i_in2]]
        return (
            xp.reshape(a, (x1.shape[0], mul1, ir1.dim)),
            xp.reshape(b, (x2.shape[0], mul2, ir2.dim)),
        )

    def _coupling(self, ins: Instruction, like):
        ls = (self.irreps_in1[ins.i_in1].ir.l, self.irreps_in2[ins.i_in2].ir.l)
        return as_constant(_scaled_3j(*ls, self.irreps_out[ins.i_out].ir.l, ins.alpha), like=like)

    def _path_products(self, xp, ins: Instruction, a, b):
        """``P = (x1 ⊗ x2) @ C``: ``[n, mul, 2l_out+1]`` (uuu) or ``[n, mul1, mul2, 2l_out+1]``."""
        n, mul1, d1 = a.shape
        if ins.mode == "uuu":
            pairs = xp.reshape(a[:, :, :, None] * b[:, :, None, :], (n, mul1, -1))
        else:
            pairs = xp.reshape(
                a[:, :, None, :, None] * b[:, None, :, None, :], (n, mul1, b.shape[1], -1)
            )
        return pairs @ self._coupling(ins, a)

    def _operands_backward(self, xp, ins: Instruction, a, b, grad_products):
        """∂L/∂a, ∂L/∂b from ∂L/∂P: ``∂L/∂(a_i b_j) = (∂L/∂P C^T)_ij``, then contract with the
        other operand."""
        grad_pairs = grad_products @ self._coupling(ins, a).T
        n, mul1, d1 = a.shape
        d2 = b.shape[2]
        if ins.mode == "uuu":
            g = xp.reshape(grad_pairs, (n, mul1, d1, d2))
            return xp.sum(g * b[:, :, None, :], axis=3), xp.sum(g * a[:, :, :, None], axis=2)
        g = xp.reshape(grad_pairs, (n, mul1, b.shape[1], d1, d2))
        grad_a = xp.sum(g * b[:, None, :, None, :], axis=(2, 4))
        grad_b = xp.sum(g * a[:, :, None, :, None], axis=(1, 3))
        return grad_a, grad_b

    def _weight_views(self, xp, weights) -> list:
        """Per instruction: its weights shaped ``weight_shape`` (shared) or ``[n, *shape]``,
        or None without weights."""
        views, offset = [], 0
        for ins in self.instructions:
            if not ins.has_weight:
                views.append(None)
                continue
            size = math.prod(ins.weight_shape)
            if self.shared_weights:
                views.append(xp.reshape(weights[offset : offset + size], ins.weight_shape))
            else:
                piece = weights[:, offset : offset + size]
                views.append(xp.reshape(piece, (weights.shape[0], *ins.weight_shape)))
            offset += size
        return views

    def _check_inputs(self, x1, x2, weights) -> tuple[int, ...]:
        for name, x, irreps in (("x1", x1, self.irreps_in1), ("x2", x2, self.irreps_in2)):
            if x.ndim < 1 or x.shape[-1] != irreps.dim:
                raise ValueError(
                    f"{name} has shape {tuple(x.shape)} but its last axis must be {irreps.dim}, "
                    f"the dim of {irreps}"
                )
        batch = tuple(x1.shape[:-1])
        if tuple(x2.shape[:-1]) != batch:
            raise ValueError(
                f"x1 has leading shape {batch} but x2 has {tuple(x2.shape[:-1])}; they must match"
            )
        if self.weight_numel == 0:
            if weights is not None:
                raise ValueError("this tensor product has no weights, but weights were given")
            return batch
        expected = (self.weight_numel,) if self.shared_weights else (*batch, self.weight_numel)
        if weights is None or tuple(weights.shape) != expected:
            got = None if weights is None else tuple(weights.shape)
            raise ValueError(
                f"weights have shape {got} but this tensor product expects {expected} "
                f"(shared_weights={self.shared_weights})"
            )
        if not x1.dtype == x2.dtype == weights.dtype:
            raise ValueError(
                f"dtypes differ: x1 {x1.dtype}, x2 {x2.dtype}, weights {weights.dtype}"
            )
        return batch


def _mix(xp, mode: str, w, products):
    """Weighted sum of the path products over the input copies: ``[n, mul_out, 2l_out+1]``."""
    if mode == "uvw":  # out[w] = Σ_uv W[u, v, w] P[u, v]
        n, mul1, mul2, d = products.shape
        p = xp.permute_dims(xp.reshape(products, (n, mul1 * mul2, d)), (0, 2, 1))
        weight = xp.reshape(w, (*w.shape[:-3], mul1 * mul2, w.shape[-1]))
        return xp.permute_dims(p @ weight, (0, 2, 1))
    if mode == "uvu":  # out[u] = Σ_v W[u, v] P[u, v]
        return xp.sum(products if w is None else w[..., None] * products, axis=2)
    return products if w is None else w[..., None] * products  # uuu: out[u] = W[u] P[u]


def _mix_backward(xp, mode: str, w, products, g):
    """(∂L/∂P, ∂L/∂W per sample) of ``_mix``, from ``g = ∂L/∂out`` [n, mul_out, 2l_out+1]."""
    if mode == "uvw":  # ∂L/∂P[u, v] = Σ_w W[u, v, w] g[w];  ∂L/∂W[u, v, w] = P[u, v] · g[w]
        n, mul1, mul2, d = products.shape
        p = xp.reshape(products, (n, mul1 * mul2, d))
        weight = xp.reshape(w, (*w.shape[:-3], mul1 * mul2, w.shape[-1]))
        grad_p = xp.reshape(weight @ g, products.shape)
        grad_w = xp.reshape(p @ xp.matrix_transpose(g), (n, *w.shape[-3:]))
        return grad_p, grad_w
    if mode == "uvu":
        grad_w = xp.sum(products * g[:, :, None, :], axis=3)
        grad_p = g[:, :, None, :] if w is None else w[..., None] * g[:, :, None, :]
        return xp.broadcast_to(grad_p, products.shape), grad_w
    grad_w = xp.sum(products * g, axis=2)
    return (g if w is None else w[..., None] * g), grad_w
