r"""The 2022-era Allegro model (the paper's architecture), with its hand-written backward.

This is the model of the Allegro paper (Musaelian, Batzner et al., arXiv 2204.05249) exactly as
nequip-allegro 0.3.0 computes it on nequip 0.6.2, the code most Allegro models of 2022–2024 were
trained with. Read it side by side with ``allegro_ref.model.allegro`` (today's nequip-allegro
0.8.3): the stages are the same five, the blocks (spherical harmonics, envelope, MLP, density,
environment tensor product, gather/scatter) are the same functions, and each stage below says
how it differs.

Stage by stage, what differs from today's model:

1. **geometry**: Bessel functions $b_n = \sin(\omega_n r)/(\pi r / r_c)$ with trainable
   frequencies ω in Å⁻¹ (one row per edge type with per-edge-type cutoffs), or nequip's
   normalized basis; computed in the model dtype (today's: ω = 1..B in units of π/r_c,
   float64).
2. **two-body**: $x^0 = \mathrm{MLP}_{2b}([C_{t_i} \| N_{t_j}] \odot R W / \sqrt B)$, the
   two-body latent *is* the first scalar track (today's: h, then a linear projection).
3. **initial tracks**: $[w_V \| w_A] = \mathrm{MLP}_{env,0}(x^0)$ and $V^0 = w_V \cdot Y$
   (today's: two linear maps of h).
4. **layer k**: the environment an edge meets leaves the edge itself out and is scaled by
   $1/\sqrt{\bar N - 1}$; the tensor product keeps one slot per path and is followed by an
   equivariant linear map ("uuulin"; or weighted paths: "uuup", "p", "uvvp"); the latents
   are updated ResNet-style; the next environment weights come from
   $\mathrm{MLP}_{env,k+1}(x^{k+1})$ (today's: with the edge, $1/\sqrt{\bar N}$, weighted
   paths, DenseNet latents that also give the next weights).
5. **readout**: $\varepsilon = \mathrm{MLP}(x^L)$ of the last latent only and
   $E_i = g\,(\mathrm{shift}_{t_i} + \mathrm{scale}_{t_i} \sum_e \varepsilon_e / \sqrt{\bar N})$
   (today's: an MLP of all latents, $1/\sqrt{2 \bar N}$, no global scale).

Every MLP normalizes a layer after an activation by $c/\sqrt{d_{in}}$ with
$c = 1.6791767923989418$ (``SILU_NORMALIZATION_2022``, e3nn's Monte-Carlo estimate), where
today's uses $\sqrt 2$: ``_mlp_forward`` runs the shared ``mlp_forward`` on weights scaled by
$c/\sqrt 2$.

Conventions as in ``allegro_ref.model.allegro``: ``outputs, cache = stage_forward(...)`` and
``grad_inputs, grad_params = stage_backward(params, cache, grad_outputs,
parameter_gradients=...)``; the tensor track is channel-major ``[U, E, dim]``; features travel
between stages 3–5 as ``Tracks``. Unlike today's model the whole network, geometry included,
runs in the model dtype (the 2022 code casts its inputs to it); only the per-type scale and
shift and the global scale g are float64.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from ..backend import as_constant, device, float_dtype, namespace, to_backend
from ..nn import (
    EnvironmentTensorProduct,
    coupling_tensor,
    environment_density_backward,
    environment_density_forward,
    gather,
    mlp_backward,
    mlp_forward,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
    scatter_sum,
)
from ..nn.irrep_weights import irrep_weighted_backward, irrep_weighted_forward
from ..o3 import Irrep, Irreps, spherical_harmonics_backward, spherical_harmonics_forward
from .allegro import (
    EdgeGraph,
    ParameterPlacement,
    Tracks,
    _flat_channels,
    _mlp_weights,
    _named,
    _type_and_radial_embeddings,
    _type_and_radial_embeddings_backward,
    edge_graph,
    model_parameters,
)
from .config_2022 import SILU_NORMALIZATION_2022, Allegro2022Config

__all__ = [
    "Allegro2022Model",
    "geometry_2022_forward",
    "geometry_2022_backward",
    "two_body_2022_forward",
    "two_body_2022_backward",
    "initial_tracks_2022_forward",
    "initial_tracks_2022_backward",
    "Layer2022",
    "layer_2022_forward",
    "layer_2022_backward",
    "readout_2022_forward",
    "readout_2022_backward",
]


# -------------------------------------------------------------------------------------------
# The 2022 MLP: today's MLP with the post-activation gain √2 replaced by c
# -------------------------------------------------------------------------------------------
def _gain_ratio(nonlinearity: str | None) -> float:
    return 1.0 if nonlinearity is None else SILU_NORMALIZATION_2022 / math.sqrt(2.0)


def _scaled(weights: list[Any], ratio: float) -> list[Any]:
    return weights if ratio == 1.0 else [weights[0]] + [w * ratio for w in weights[1:]]


def _mlp_forward(params: dict[str, Any], prefix: str, x: Any, nonlinearity: str | None):
    r"""The 2022 MLP ``prefix.*`` on x: $y_0 = x W_0 / \sqrt{d_0}$,
    $y_k = \mathrm{act}(y_{k-1}) W_k \, c / \sqrt{d_k}$ (c = 1 without an activation), as
    ``mlp_forward`` on the weights $W_k \cdot c/\sqrt 2$ (k >= 1)."""
    weights = _scaled(_mlp_weights(params, prefix), _gain_ratio(nonlinearity))
    return mlp_forward(weights, x, nonlinearity)


def _mlp_backward(
    params: dict[str, Any], prefix: str, cache: tuple, grad_y: Any, parameter_gradients: bool
) -> tuple[Any, dict[str, Any]]:
    """VJP of ``_mlp_forward``: ∂L/∂x and {prefix.k: ∂L/∂W_k} (the scaled weights' gradients
    times the same factor c/√2)."""
    ratio = _gain_ratio(cache[2])
    weights = _scaled(_mlp_weights(params, prefix), ratio)
    grad_x, grad_w = mlp_backward(weights, cache, grad_y, weight_gradients=parameter_gradients)
    return grad_x, _named(prefix, _scaled(grad_w, ratio) if grad_w else None)


# -------------------------------------------------------------------------------------------
# 1. Geometry (in the model dtype)
# -------------------------------------------------------------------------------------------
class Geometry2022(NamedTuple):
    """``lengths`` [E] Å, ``radial`` [E, B] the radial basis, ``sh`` [E, (l_max+1)²] Y(r̂)."""

    lengths: Any
    radial: Any
    sh: Any


class Geometry2022Cache(NamedTuple):
    edge_vectors: Any  # [E, 3] model dtype
    lengths: Any  # [E]
    prefactor: Any  # [E or 1, B]: a in b = a sin(k r) / r
    wavenumbers: Any  # [E or 1, B]: k
    pair: Any  # [E] t_i·T + t_j (per-edge-type frequencies) or None
    bessel: Any  # [E, B] b
    envelope: Any  # [E] u(x), or None (normalized basis)
    envelope_cache: tuple | None
    inv_cutoff: Any  # [E] 1/r_c
    sh_cache: Any
    frequency_scale: float  # k = ω · frequency_scale (1/r_max for the normalized basis)


def _basis_factors(params, config: Allegro2022Config, graph: EdgeGraph, dtype, xp):
    r"""(a, k, pair) with $b_n = a_n \sin(k_n r)/r$:

    - Bessel (0.3.0's ``AllegroBesselBasis``): $k = \omega_n$ (stored as nπ/r_c, per edge
      type with per-edge-type cutoffs), $a = r_c/\pi$, i.e. $b_n = \sin(\omega_n r)/(\pi x)$,
      x = r/r_c;
    - normalized (nequip's ``NormalizedBasis``): $k = \omega_n / r_{max}$ (ω stored as nπ),
      $a = (2/r_{max})\, s_n$.
    """
    omega = params["bessel_frequencies"]
    if config.normalized_basis:
        inv_std = as_constant(_config_constant(config, "basis_inv_std"), like=omega, dtype=dtype)
        return (2.0 / config.r_max) * inv_std[None, :], omega[None, :] / config.r_max, None
    inv_cutoff = xp.astype(graph.inv_cutoff, dtype)
    prefactor = (1.0 / math.pi) / inv_cutoff[:, None]
    if omega.ndim == 1:
        return prefactor, omega[None, :], None
    pair = graph.center_types * config.num_types + graph.neighbor_types
    return prefactor, gather(omega, pair), pair


_CONSTANTS: dict[tuple, np.ndarray] = {}


def _config_constant(config: Allegro2022Config, name: str) -> np.ndarray:
    """A float64 NumPy constant computed from the config (``config.<name>()``), kept so that
    ``backend.as_constant`` converts it once."""
    key = (id(config), name)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (config, getattr(config, name)())
    return _CONSTANTS[key][1]


def geometry_2022_forward(
    params: dict[str, Any],
    config: Allegro2022Config,
    edge_vectors: Any,
    graph: EdgeGraph,
    dtype: Any,
) -> tuple[Geometry2022, Geometry2022Cache]:
    r"""Stage 1, edge geometry in the model dtype: $R_n = b_n(r)\, u(r / r_c)$ (Bessel basis ×
    polynomial envelope, ``_basis_factors``) or the normalized basis $R_n = b_n$ without
    envelope, and the spherical harmonics $Y(\hat r)$.

    Today's ``geometry_forward`` computes the same Bessel functions in float64 with fixed
    frequencies 1..B in units of π/r_c; here ω is a parameter in Å⁻¹.

    Returns:
        ``(Geometry2022, Geometry2022Cache)``.
    """
    xp = namespace(edge_vectors)
    vectors = xp.astype(edge_vectors, dtype)
    lengths = xp.sqrt(xp.sum(vectors * vectors, axis=-1))
    prefactor, wavenumbers, pair = _basis_factors(params, config, graph, dtype, xp)
    bessel = prefactor * xp.sin(wavenumbers * lengths[:, None]) / lengths[:, None]
    envelope = envelope_cache = None
    inv_cutoff = xp.astype(graph.inv_cutoff, dtype)
    radial = bessel
    if not config.normalized_basis:
        envelope, envelope_cache = polynomial_cutoff_forward(
            lengths * inv_cutoff, config.polynomial_cutoff_p
        )
        radial = bessel * envelope[:, None]
    sh, sh_cache = spherical_harmonics_forward(config.l_max, vectors)
    cache = Geometry2022Cache(
        vectors, lengths, prefactor, wavenumbers, pair, bessel, envelope, envelope_cache,
        inv_cutoff, sh_cache, 1.0 / config.r_max if config.normalized_basis else 1.0,
    )  # fmt: skip
    return Geometry2022(lengths, radial, sh), cache


def geometry_2022_backward(
    params: dict[str, Any],
    cache: Geometry2022Cache,
    grad_radial: Any,
    grad_sh: Any,
    *,
    parameter_gradients: bool = False,
) -> tuple[Any, dict[str, Any]]:
    r"""VJP of ``geometry_2022_forward``: ``(grad_edge_vectors [E, 3], {"bessel_frequencies"})``.

    With $b = a \sin(k r)/r$: $\partial b/\partial r = a\,(k r \cos(k r) - \sin(k r))/r^2$
    and $\partial b/\partial k = a \cos(k r)$; the envelope adds
    $\partial L/\partial u \cdot u'(x)/r_c$.
    """
    c = cache
    xp = namespace(grad_radial)
    r = c.lengths[:, None]
    grad_bessel = grad_radial if c.envelope is None else grad_radial * c.envelope[:, None]
    kr = c.wavenumbers * r
    cos_kr = xp.cos(kr)
    grad_lengths = xp.sum(grad_bessel * c.prefactor * (kr * cos_kr - xp.sin(kr)) / (r * r), axis=1)
    if c.envelope is not None:
        grad_envelope = xp.sum(grad_radial * c.bessel, axis=-1)
        grad_x = polynomial_cutoff_backward(c.envelope_cache, grad_envelope)
        grad_lengths = grad_lengths + grad_x * c.inv_cutoff
    grad_vectors = (grad_lengths / c.lengths)[:, None] * c.edge_vectors
    grad_vectors = grad_vectors + spherical_harmonics_backward(c.sh_cache, grad_sh)
    grads = {}
    if parameter_gradients:
        grad_k = grad_bessel * c.prefactor * cos_kr  # [E, B]
        omega = params["bessel_frequencies"]
        if omega.ndim == 1:  # k = ω · frequency_scale on every edge
            grads["bessel_frequencies"] = xp.sum(grad_k, axis=0) * c.frequency_scale
        else:  # one row of frequencies per edge type
            grads["bessel_frequencies"] = scatter_sum(grad_k, c.pair, omega.shape[0])
    return grad_vectors, grads


# -------------------------------------------------------------------------------------------
# 2. Two-body latent
# -------------------------------------------------------------------------------------------
class TwoBody2022(NamedTuple):
    """``edge_embedding`` h [E, D] and the two-body latent ``latent`` x⁰ [E, F]."""

    edge_embedding: Any
    latent: Any


class TwoBody2022Cache(NamedTuple):
    center_types: Any
    neighbor_types: Any
    type_embedding: Any  # [E, D]
    radial_embedding: Any  # [E, D]
    basis_cache: tuple
    latent_cache: tuple


def two_body_2022_forward(
    params: dict[str, Any], config: Allegro2022Config, radial: Any, graph: EdgeGraph
) -> tuple[TwoBody2022, TwoBody2022Cache]:
    r"""Stage 2: $h = [C_{t_i} \| N_{t_j}] \odot (R\, W_{basis} / \sqrt B)$ (as today's) and the
    two-body latent $x^0 = \mathrm{MLP}_{2b}(h)$ (``two_body_latent.*``), which *is* the first
    scalar track (today's model projects h instead).

    Returns:
        ``(TwoBody2022(h [E, D], x⁰ [E, F]), TwoBody2022Cache)``.
    """
    type_embedding, radial_embedding, basis_cache = _type_and_radial_embeddings(
        params, radial, graph
    )
    h = type_embedding * radial_embedding
    x0, latent_cache = _mlp_forward(
        params, "two_body_latent", h, config.two_body_latent_nonlinearity
    )
    cache = TwoBody2022Cache(
        graph.center_types, graph.neighbor_types, type_embedding, radial_embedding, basis_cache,
        latent_cache,
    )  # fmt: skip
    return TwoBody2022(h, x0), cache


def two_body_2022_backward(
    params: dict[str, Any],
    cache: TwoBody2022Cache,
    grad_x0: Any,
    *,
    parameter_gradients: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """VJP of ``two_body_2022_forward``: ``(grad_radial [E, B], grads)`` from ∂L/∂x⁰."""
    c = cache
    grad_h, grads = _mlp_backward(
        params, "two_body_latent", c.latent_cache, grad_x0, parameter_gradients
    )
    grad_radial, embedding_grads = _type_and_radial_embeddings_backward(
        params, c, grad_h, parameter_gradients=parameter_gradients
    )
    grads.update(embedding_grads)
    return grad_radial, grads


# -------------------------------------------------------------------------------------------
# 3. The two tracks start
# -------------------------------------------------------------------------------------------
def _per_irrep(xp, w: Any, config: Allegro2022Config) -> Any:
    """Environment weights ``[E, n_env]`` as ``[E, U, n_l]``: row-major u·n_l + l
    (``weight_individual_irreps``), or one weight per channel repeated over l."""
    U, n_l = config.num_tensor_features, config.num_sh_irreps
    if config.weight_individual_irreps:
        return xp.reshape(w, (w.shape[0], U, n_l))
    return xp.reshape(w, (w.shape[0], U, 1)) * xp.ones((1, 1, n_l), dtype=w.dtype, device=device(w))


def _per_irrep_backward(xp, grad: Any, config: Allegro2022Config) -> Any:
    """VJP of ``_per_irrep``: ``[E, U, n_l]`` -> ``[E, n_env]`` (a sum over l when the weight
    is shared by the degrees)."""
    if not config.weight_individual_irreps:
        return xp.sum(grad, axis=-1)
    return _flat_channels(xp, grad)


class InitialTracks2022Cache(NamedTuple):
    env_embed_cache: tuple
    irrep_weights_cache: tuple
    config: Allegro2022Config


def initial_tracks_2022_forward(
    params: dict[str, Any], config: Allegro2022Config, x0: Any, sh: Any
) -> tuple[Tracks, InitialTracks2022Cache]:
    r"""Stage 3: $[w_V \| w_A] = \mathrm{MLP}_{env,0}(x^0)$ (``env_embed.0.*``), the tensor track
    $V^0_e[u, (l, m)] = w_V[e, u, l]\, Y_{lm}(\hat r_e)$ and the layer-0 environment weights
    $w_A$. Both come from x⁰ (today's: two linear maps of h).

    Returns:
        ``(Tracks(V⁰ [U, E, dim], (x⁰,), w_A [E, U, n_l]), InitialTracks2022Cache)``.
    """
    xp = namespace(x0, sh)
    n_env = config.num_env_weights
    w, env_embed_cache = _mlp_forward(params, "env_embed.0", x0, config.env_embed_nonlinearity)
    tensor_weights = xp.permute_dims(_per_irrep(xp, w[:, :n_env], config), (1, 0, 2))
    tensors, irrep_weights_cache = irrep_weighted_forward(tensor_weights, sh, config.sh_irreps)
    tracks = Tracks(tensors, (x0,), _per_irrep(xp, w[:, n_env:], config))
    return tracks, InitialTracks2022Cache(env_embed_cache, irrep_weights_cache, config)


def initial_tracks_2022_backward(
    params: dict[str, Any],
    cache: InitialTracks2022Cache,
    grad_tracks: Tracks,
    *,
    parameter_gradients: bool = False,
) -> tuple[tuple[Any, Any], dict[str, Any]]:
    """VJP of ``initial_tracks_2022_forward``: ``((grad_x0 [E, F], grad_sh [E, dim]), grads)``."""
    c = cache
    xp = namespace(grad_tracks.tensors)
    (grad_x0,) = grad_tracks.latents
    grad_weights, grad_sh = irrep_weighted_backward(c.irrep_weights_cache, grad_tracks.tensors)
    grad_w = xp.concat(
        [
            _per_irrep_backward(xp, xp.permute_dims(grad_weights, (1, 0, 2)), c.config),
            _per_irrep_backward(xp, grad_tracks.env_weights, c.config),
        ],
        axis=-1,
    )
    grad_x0_env, grads = _mlp_backward(
        params, "env_embed.0", c.env_embed_cache, grad_w, parameter_gradients
    )
    return (grad_x0 + grad_x0_env, grad_sh), grads


# -------------------------------------------------------------------------------------------
# 4. One layer
# -------------------------------------------------------------------------------------------
class _LinearBlock(NamedTuple):
    """The slots of one output irrep of a uuulin product, and its block of linear weights."""

    slots: slice  # its slots' components in the product output [.., d_slots]
    n_slots: int  # n_c
    dim: int  # 2l + 1
    out: slice  # its components in V^{k+1}
    weights: slice  # its U·U·n_c numbers in ``linear.{k}``, viewed [U_out, U_in, n_c]


class Layer2022:
    r"""The fixed structure of layer k: its irreps, paths and the shared
    ``EnvironmentTensorProduct`` that runs its product in every mixing mode.

    Paths p = (a, s, c) in the official order (output irrep, input irrep, harmonic irrep), with
    couplings $C_p = \kappa_p\, 3j(l_a, l_s, l_c)$. The shared block computes
    $\sum_p \theta_p \sqrt{2l_c+1}\, C^{3j}_p(x, y)$ for the paths between its three irreps:

    - **uuulin**: one output slot per path, $\kappa_p = \sqrt{2l_c+1}$, no weights. The block's
      output irreps are the slots (one entry per path, so its paths are every (a, s) pair that
      couples to a slot's irrep); θ is 1 on each slot's own path and 0 elsewhere.
    - **uuup** / **p**: weights w[u, p] / w[p] summed into each output irrep,
      $\kappa_p = \sqrt{(2l_c+1)/P_c}$ ($P_c$ paths into c): $\theta = w / \sqrt{P_c}$.
    - **uvvp**: $V^{k+1}[v] = \sum_p \sum_u w[u, v, p]\, C_p(V[u], \tilde A[v])$,
      $\kappa_p = \sqrt{(2l_c+1)/(P_c U)}$: the inputs are first mixed per path,
      $X_p[v] = \sum_u w[u, v, p] V[u, a_p]$, one block input entry per path, and θ selects
      path p's own (entry p, s_p, c_p) with $1/\sqrt{P_c U}$.
    """

    def __init__(self, config: Allegro2022Config, k: int):
        self.k = k
        self.mode = config.tensors_mixing_mode
        self.is_last = k == config.num_layers - 1
        self.irreps_in, self.irreps_out = config.layer_irreps()[k]
        self.sh_irreps = config.sh_irreps
        self.paths = config.layer_paths()[k]
        self.num_channels = U = config.num_tensor_features
        self.n_scalars = config.num_scalars(k)
        ir_out = [self.irreps_out[c].ir for *_, c in self.paths]
        per_output = [ir_out.count(self.irreps_out[i].ir) for i in range(len(self.irreps_out))]
        self.inv_sqrt_paths = np.array([1.0 / math.sqrt(per_output[c]) for *_, c in self.paths])
        if self.mode == "uuulin":
            slots = Irreps([(1, ir) for ir in ir_out])
            self.tensor_product = EnvironmentTensorProduct(
                self.irreps_in, self.sh_irreps, slots, U, path_channel_coupling=False
            )
            own = [(a, s, q) for q, (a, s, _) in enumerate(self.paths)]
            self.theta = self._selector(own, np.ones(len(self.paths)))
            self.linear_blocks = self._linear_blocks(slots, U)
        elif self.mode == "uvvp":
            entries = Irreps([(1, self.irreps_in[a].ir) for a, _, _ in self.paths])
            self.tensor_product = EnvironmentTensorProduct(
                entries, self.sh_irreps, self.irreps_out, U, path_channel_coupling=False
            )
            own = [(p, s, c) for p, (_, s, c) in enumerate(self.paths)]
            self.theta = self._selector(own, self.inv_sqrt_paths / math.sqrt(U))
        else:
            self.tensor_product = EnvironmentTensorProduct(
                self.irreps_in, self.sh_irreps, self.irreps_out, U,
                path_channel_coupling=self.mode == "uuup",
            )  # fmt: skip
        self._own_edge_constants(ir_out)

    def _own_edge_constants(self, ir_out: list[Irrep]) -> None:
        r"""Constants of the own-edge term (``_own_edge_forward``): every path as its own slot,
        ``own_coupling`` $C[\beta, (\alpha, q)]$ ``[d_sh, d_in · d_slots]`` (each slot's own
        path, environment index first), ``slot_paths`` ``[P, d_slots]`` (slot q's components
        belong to path q), ``path_sh`` ``[P, n_l]`` (path p reads harmonic irrep s_p),
        ``slot_outputs`` ``[d_slots, d_out]`` (slots summed into their output irreps; None
        for uuulin, whose outputs are the slots) and ``path_scale`` [P] (the κ_p / √(2l_c+1)
        of the mode)."""
        slots = Irreps([(1, ir) for ir in ir_out])
        block_in, P = self.tensor_product.irreps_in1, len(self.paths)
        own = [(p if self.mode == "uvvp" else a, s, p) for p, (a, s, _) in enumerate(self.paths)]
        # [d_in, d_sh, d_slots]: each own path's block at its place (only those blocks are
        # built: the coupling tensor of every path of block_in x sh -> slots is far larger)
        coupling = np.zeros((block_in.dim, self.sh_irreps.dim, slots.dim))
        in_slices, sh_slices = block_in.slices(), self.sh_irreps.slices()
        slot_slices = slots.slices()
        for i1, s, q in own:
            block = coupling_tensor(
                Irreps([(1, block_in[i1].ir)]),
                Irreps([(1, self.sh_irreps[s].ir)]),
                Irreps([(1, slots[q].ir)]),
            )[0]  # √(2 l_q + 1) 3j(l_1, l_s, l_q)
            coupling[in_slices[i1], sh_slices[s], slot_slices[q]] += block
        self.own_coupling = _constant(coupling.transpose(1, 0, 2).reshape(self.sh_irreps.dim, -1))
        out_slices = self.irreps_out.slices()
        slot_paths = np.zeros((P, slots.dim))
        path_sh = np.zeros((P, len(self.sh_irreps)))
        slot_outputs = np.zeros((slots.dim, self.irreps_out.dim))
        for p, (_, s, c) in enumerate(self.paths):
            slot_paths[p, slot_slices[p]] = 1.0
            path_sh[p, s] = 1.0
            slot_outputs[slot_slices[p], out_slices[c]] = np.eye(ir_out[p].dim)
        self.slot_paths, self.path_sh = _constant(slot_paths), _constant(path_sh)
        self.slot_outputs = None if self.mode == "uuulin" else _constant(slot_outputs)
        scale = {"uuulin": np.ones(P), "uvvp": self.inv_sqrt_paths / math.sqrt(self.num_channels)}
        self.path_scale = _constant(scale.get(self.mode, self.inv_sqrt_paths))

    def _selector(self, own: list[tuple[int, int, int]], values: np.ndarray) -> np.ndarray:
        """θ over the block's paths: ``values[i]`` on ``own[i]``, 0 on every other path."""
        theta = np.zeros(self.tensor_product.n_paths)
        for (i1, i2, i_out), value in zip(own, values, strict=True):
            theta[self.tensor_product.paths.index((i1, i2, i_out))] = value
        theta.flags.writeable = False
        return theta

    def _linear_blocks(self, slots: Irreps, U: int) -> list[_LinearBlock]:
        """One block per output irrep c: its consecutive slots (paths are grouped by output)."""
        blocks, start, out_start, w_start = [], 0, 0, 0
        slot_slices = slots.slices()
        for i, (_, ir) in enumerate(self.irreps_out):
            n = sum(1 for *_, c in self.paths if c == i)
            stop = slot_slices[start + n - 1].stop
            blocks.append(
                _LinearBlock(
                    slice(slot_slices[start].start, stop),
                    n,
                    ir.dim,
                    slice(out_start, out_start + ir.dim),
                    slice(w_start, w_start + U * U * n),
                )  # fmt: skip
            )
            start, out_start, w_start = start + n, out_start + ir.dim, w_start + U * U * n
        return blocks

    def __repr__(self) -> str:
        return (
            f"Layer2022(k={self.k}, {self.mode}: {self.irreps_in} x {self.sh_irreps} -> "
            f"{self.irreps_out}, {len(self.paths)} paths)"
        )


def _constant(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float64)
    array.flags.writeable = False
    return array


def _theta(layer: Layer2022, params: dict[str, Any], like: Any) -> Any:
    """The block's path weights θ (module docstring of ``Layer2022``)."""
    if layer.mode in ("uuulin", "uvvp"):
        return as_constant(layer.theta, like=like)
    return params[f"tp.{layer.k}"] * as_constant(layer.inv_sqrt_paths, like=like)


def _mix_inputs(xp, layer: Layer2022, w: Any, tensors: Any) -> Any:
    r"""uvvp: $X_p[v, e] = \sum_u w[u, v, p]\, V[u, e, a_p]$, concatenated over the paths
    ``[U, E, Σ_p dim(a_p)]``."""
    U, n_edges = tensors.shape[0], tensors.shape[1]
    slices = layer.irreps_in.slices()
    blocks = []
    for p, (a, _, _) in enumerate(layer.paths):
        dim = slices[a].stop - slices[a].start
        v = xp.reshape(tensors[:, :, slices[a]], (U, n_edges * dim))
        blocks.append(xp.reshape(xp.matrix_transpose(w[:, :, p]) @ v, (U, n_edges, dim)))
    return xp.concat(blocks, axis=-1)


def _mix_inputs_backward(xp, layer: Layer2022, w: Any, tensors: Any, grad_mixed: Any):
    """VJP of ``_mix_inputs``: (∂L/∂V, ∂L/∂w)."""
    U, n_edges = tensors.shape[0], tensors.shape[1]
    slices, mixed = layer.irreps_in.slices(), layer.tensor_product.irreps_in1.slices()
    grad_tensors = [None] * len(slices)
    grad_w = []
    for p, (a, _, _) in enumerate(layer.paths):
        dim = slices[a].stop - slices[a].start
        v = xp.reshape(tensors[:, :, slices[a]], (U, n_edges * dim))
        g = xp.reshape(grad_mixed[:, :, mixed[p]], (U, n_edges * dim))
        grad_w.append(v @ xp.matrix_transpose(g))  # [u, v]
        part = xp.reshape(w[:, :, p] @ g, (U, n_edges, dim))
        grad_tensors[a] = part if grad_tensors[a] is None else grad_tensors[a] + part
    zeros = [
        xp.zeros((U, n_edges, s.stop - s.start), dtype=tensors.dtype, device=device(tensors))
        for s in slices
    ]
    grad_tensors = [g if g is not None else z for g, z in zip(grad_tensors, zeros, strict=True)]
    return xp.concat(grad_tensors, axis=-1), xp.stack(grad_w, axis=-1)


def _slot_matrix(xp, product: Any, b: _LinearBlock) -> Any:
    """The slots of one output irrep as a matrix ``[(u, m), (e, γ)]`` (row u·n_c + m)."""
    U, n_edges = product.shape[0], product.shape[1]
    t_c = xp.reshape(product[:, :, b.slots], (U, n_edges, b.n_slots, b.dim))
    return xp.reshape(xp.permute_dims(t_c, (0, 2, 1, 3)), (U * b.n_slots, n_edges * b.dim))


def _linear_forward(xp, layer: Layer2022, weights: Any, product: Any) -> Any:
    r"""uuulin's equivariant linear map: for each output irrep c with slots $q_1 … q_{n_c}$,
    $V^{k+1}[v, e, c] = \frac{1}{\sqrt{U n_c}} \sum_{u, m} w_c[v, u, m]\, T[u, e, q_m]$,
    $w_c$ the block ``[U_out, U_in, n_c]`` of ``linear.{k}``: one matrix product
    ``[U, U·n_c] @ [U·n_c, E·(2l+1)]`` per output irrep. ``[U, E, d_slots]`` ->
    ``[U, E, dim_out]``."""
    U, n_edges = product.shape[0], product.shape[1]
    out = []
    for b in layer.linear_blocks:
        w_c = xp.reshape(weights[b.weights], (U, U * b.n_slots)) * (1.0 / math.sqrt(U * b.n_slots))
        out.append(xp.reshape(w_c @ _slot_matrix(xp, product, b), (U, n_edges, b.dim)))
    return xp.concat(out, axis=-1)


def _linear_backward(xp, layer: Layer2022, weights: Any, product: Any, grad_out: Any):
    """VJP of ``_linear_forward``: (∂L/∂T ``[U, E, d_slots]``, ∂L/∂w flat); per output irrep
    ∂L/∂T_c = w_cᵀ g and ∂L/∂w_c = g T_cᵀ."""
    U, n_edges = product.shape[0], product.shape[1]
    grad_product, grad_w = [], []
    for b in layer.linear_blocks:
        scale = 1.0 / math.sqrt(U * b.n_slots)
        w_c = xp.reshape(weights[b.weights], (U, U * b.n_slots)) * scale
        g = xp.reshape(grad_out[:, :, b.out], (U, n_edges * b.dim))
        grad_t = xp.reshape(xp.matrix_transpose(w_c) @ g, (U, b.n_slots, n_edges, b.dim))
        grad_t = xp.permute_dims(grad_t, (0, 2, 1, 3))
        grad_product.append(xp.reshape(grad_t, (U, n_edges, b.n_slots * b.dim)))
        grad_w.append(
            xp.reshape(g @ xp.matrix_transpose(_slot_matrix(xp, product, b)), (U * U * b.n_slots,))
        )
        grad_w[-1] = grad_w[-1] * scale
    return xp.concat(grad_product, axis=-1), xp.concat(grad_w, axis=0)


def resnet_coefficients(phi: Any) -> tuple[Any, Any, Any]:
    r"""The ResNet update's coefficients from the parameters φ ``[L+1]``:
    $e_k = \exp(\varphi_k - \max\varphi)$, $S_k = \sum_{j \le k} e_j + 10^{-12}$ (the 1e-12 as
    in 0.3.0), $a_k = \sqrt{S_{k-1}/S_k}$ and $b_k = \sqrt{e_k / S_k}$ for k = 1 … L
    (``a[k-1]``, ``b[k-1]``). Returns ``(a [L], b [L], (e, S))``."""
    xp = namespace(phi)
    real = xp.real(phi) if xp.isdtype(phi.dtype, "complex floating") else phi
    e = xp.exp(phi - xp.max(real))
    s = xp.cumulative_sum(e) + 1e-12
    return xp.sqrt(s[:-1] / s[1:]), xp.sqrt(e[1:] / s[1:]), (e, s)


def resnet_coefficients_backward(phi: Any, j: int, grad_a: Any, grad_b: Any) -> Any:
    r"""∂L/∂φ ``[L+1]`` from ∂L/∂a_j and ∂L/∂b_j (j = 1 … L), with
    $\partial a_j/\partial\varphi_i = \tfrac{a_j}{2}([i<j]\, e_i/S_{j-1} - [i \le j]\, e_i/S_j)$ and
    $\partial b_j/\partial\varphi_i = \tfrac{b_j}{2}(\delta_{ij} - [i \le j]\, e_i/S_j)$ (the
    max in $e_k$ is held fixed: φ enters only through ratios, up to the 1e-12)."""
    xp = namespace(phi)
    a, b, (e, s) = resnet_coefficients(phi)
    i = xp.arange(phi.shape[0], device=device(phi))
    zero = xp.zeros_like(e)
    before, upto = xp.where(i < j, e, zero), xp.where(i <= j, e, zero)
    d_a = (a[j - 1] / 2) * (before / s[j - 1] - upto / s[j])
    d_b = (b[j - 1] / 2) * (xp.where(i == j, xp.ones_like(e), zero) - upto / s[j])
    return grad_a * d_a + grad_b * d_b


class _OwnEdgeCache(NamedTuple):
    x: Any  # [E, U, d_in] the block input, edge-major
    coupling: Any  # [E, d_in, d_slots] K_e
    slots: Any  # [E, U, d_slots] S
    weights: Any  # [E, U, d_slots] the per-slot factors Q
    path_factors: Any  # [U, P] θ'
    env_weights: Any  # [E, U, n_l]
    alpha: float


def _path_factors(layer: Layer2022, params: dict[str, Any], like: Any) -> Any:
    """θ' ``[U or 1, P]``: the factor of each (channel, path) besides the coupling: the path
    weights over √P_c (uuup, p), 1/√(P_c U) (uvvp) or 1 (uuulin)."""
    scale = as_constant(layer.path_scale, like=like)
    if layer.mode == "uuup":
        return params[f"tp.{layer.k}"] * scale
    if layer.mode == "p":
        return params[f"tp.{layer.k}"][None, :] * scale
    return scale[None, :]


def _own_edge_forward(xp, layer: Layer2022, params, x, sh, env_weights, alpha):
    r"""The product of each edge with its *own* term of the environment,
    $a_e[u, (l, m)] = \alpha\, w[e, u, l]\, Y_{lm}(\hat r_e)$, which 0.3.0 leaves out
    ($\tilde A_e = A_{c_e} - a_e$, so $T = T(A) - T(a)$). Bilinear in x and Y, so the harmonics
    are folded per edge, channel-free: $K_e[\alpha, q] = \sum_\beta C[\alpha, \beta, q]\,
    Y_e[\beta]$; then slots $S_e[u] = x_e[u] K_e$, scaled by
    $Q[e, u, q] = \alpha\, \theta'[u, p_q]\, w[e, u, s_{p_q}]$ and (except uuulin) summed into
    the output irreps. Returns ``[U, E, d_out]`` and the cache."""
    n_edges = sh.shape[0]
    own_coupling = as_constant(layer.own_coupling, like=sh)  # [d_sh, d_in · d_slots]
    d_slots = own_coupling.shape[1] // x.shape[2]
    coupling = xp.reshape(sh @ own_coupling, (n_edges, x.shape[2], d_slots))  # K_e
    x_edges = xp.permute_dims(x, (1, 0, 2))  # [E, U, d_in]
    slots = x_edges @ coupling
    factors = _path_factors(layer, params, sh)
    per_path = alpha * factors[None, :, :] * (env_weights @ xp.matrix_transpose(
        as_constant(layer.path_sh, like=sh)
    ))  # fmt: skip
    weights = per_path @ as_constant(layer.slot_paths, like=sh)
    out = slots * weights
    if layer.slot_outputs is not None:
        out = out @ as_constant(layer.slot_outputs, like=sh)
    cache = _OwnEdgeCache(x_edges, coupling, slots, weights, factors, env_weights, alpha)
    return xp.permute_dims(out, (1, 0, 2)), cache


def _own_edge_backward(xp, layer: Layer2022, c: _OwnEdgeCache, grad_out):
    """VJP of ``_own_edge_forward``: (∂L/∂x ``[U, E, d_in]``, ∂L/∂Y ``[E, d_sh]``,
    ∂L/∂w ``[E, U, n_l]``, ∂L/∂θ' ``[U, P]``)."""
    g = xp.permute_dims(grad_out, (1, 0, 2))  # [E, U, d_out]
    if layer.slot_outputs is not None:
        g = g @ xp.matrix_transpose(as_constant(layer.slot_outputs, like=g))
    grad_slots = g * c.weights
    grad_per_path = (g * c.slots) @ xp.matrix_transpose(as_constant(layer.slot_paths, like=g))
    grad_x = grad_slots @ xp.matrix_transpose(c.coupling)
    grad_coupling = xp.matrix_transpose(c.x) @ grad_slots  # [E, d_in, d_slots]
    n_edges, d_in, d_slots = grad_coupling.shape
    grad_coupling = xp.reshape(grad_coupling, (n_edges, d_in * d_slots))
    grad_sh = grad_coupling @ xp.matrix_transpose(as_constant(layer.own_coupling, like=g))
    path_sh = as_constant(layer.path_sh, like=g)
    grad_w = (c.alpha * c.path_factors[None, :, :] * grad_per_path) @ path_sh
    grad_factors = c.alpha * xp.sum(
        grad_per_path * (c.env_weights @ xp.matrix_transpose(path_sh)), axis=0
    )
    return xp.permute_dims(grad_x, (1, 0, 2)), grad_sh, grad_w, grad_factors


def _path_weight_gradient(layer: Layer2022, grad_factors: Any) -> Any:
    """∂L/∂w of the path weights ``tp.{k}`` from ∂L/∂θ' (``_path_factors``)."""
    xp = namespace(grad_factors)
    grad = grad_factors * as_constant(layer.path_scale, like=grad_factors)
    return xp.sum(grad, axis=0) if layer.mode == "p" else grad


class _ProductCache(NamedTuple):
    tensors_in: Any  # V^k [U, E, d_in]
    mixed: Any  # the block's input (V^k, or the uvvp mixture)
    density_cache: tuple
    tensor_product_cache: tuple
    own_edge_cache: _OwnEdgeCache | None
    alpha: float  # α_env


def _product_forward(xp, params, config, layer: Layer2022, tracks: Tracks, sh, graph):
    r"""Steps 1–2 of a layer: the density $A_i = \alpha \sum_{e: c_e = i} w_e Y_e$ (per atom),
    the product with it (``EnvironmentTensorProduct``, folded per atom), minus the product with
    each edge's own term (``_own_edge_forward``) unless ``self_edge_tensor_product``."""
    alpha = config.env_normalization
    density, density_cache = environment_density_forward(
        tracks.env_weights, sh, config.sh_irreps, graph.groups, graph.n_atoms
    )
    mixed = tracks.tensors
    if layer.mode == "uvvp":
        mixed = _mix_inputs(xp, layer, params[f"tp.{layer.k}"], tracks.tensors)
    product, tp_cache = layer.tensor_product.forward(
        mixed, density * alpha, graph.groups, _theta(layer, params, sh)
    )
    own_cache = None
    if not config.self_edge_tensor_product:
        own, own_cache = _own_edge_forward(xp, layer, params, mixed, sh, tracks.env_weights, alpha)
        product = product - own
    cache = _ProductCache(tracks.tensors, mixed, density_cache, tp_cache, own_cache, alpha)
    return product, cache


def _product_backward(xp, params, layer: Layer2022, c: _ProductCache, grad_product, flag):
    """VJP of ``_product_forward``: (∂L/∂V^k, ∂L/∂w ``[E, U, n_l]``, ∂L/∂Y, grads)."""
    grads = {}
    grad_mixed, grad_density, grad_theta = layer.tensor_product.backward(
        c.tensor_product_cache, grad_product
    )
    grad_env_weights, grad_sh = environment_density_backward(
        c.density_cache, grad_density * c.alpha
    )
    grad_factors = None
    if c.own_edge_cache is not None:
        grad_x, grad_sh_own, grad_w_own, grad_factors = _own_edge_backward(
            xp, layer, c.own_edge_cache, -grad_product
        )
        grad_mixed = grad_mixed + grad_x
        grad_sh = grad_sh + grad_sh_own
        grad_env_weights = grad_env_weights + grad_w_own
    if layer.mode == "uvvp":
        grad_tensors, grad_w = _mix_inputs_backward(
            xp, layer, params[f"tp.{layer.k}"], c.tensors_in, grad_mixed
        )
        if flag:
            grads[f"tp.{layer.k}"] = grad_w
        return grad_tensors, grad_env_weights, grad_sh, grads
    if flag and layer.mode in ("uuup", "p"):
        grad = grad_theta * as_constant(layer.inv_sqrt_paths, like=grad_theta)
        if grad_factors is not None:
            grad = grad + _path_weight_gradient(layer, grad_factors)
        grads[f"tp.{layer.k}"] = grad
    return grad_mixed, grad_env_weights, grad_sh, grads


class Layer2022Cache(NamedTuple):
    layer: Layer2022
    config: Allegro2022Config
    product_cache: _ProductCache
    product: Any  # the product's output T
    previous_latent: Any  # x^k (ResNet)
    update: Any  # MLP output (ResNet)
    coefficients: tuple | None  # (a, b) of this update (ResNet)
    latent_cache: tuple
    env_embed_cache: tuple | None


def _latent_update(xp, params, config, k, tracks, scalars):
    r"""x^{k+1}: ResNet $a\,x^k + b\,\mathrm{MLP}(x^k \| s)$, or
    $\mathrm{MLP}(x^0 … x^k \| s)$."""
    if config.latent_resnet:
        update, cache = _mlp_forward(
            params, f"latent.{k}", xp.concat([tracks.latents[-1], scalars], axis=-1),
            config.latent_nonlinearity,
        )  # fmt: skip
        a, b, _ = resnet_coefficients(params["latent_resnet_coefficients"])
        return a[k] * tracks.latents[-1] + b[k] * update, update, (a[k], b[k]), cache
    latent, cache = _mlp_forward(
        params, f"latent.{k}", xp.concat([*tracks.latents, scalars], axis=-1),
        config.latent_nonlinearity,
    )  # fmt: skip
    return latent, None, None, cache


def layer_2022_forward(
    params: dict[str, Any],
    config: Allegro2022Config,
    layer: Layer2022,
    tracks: Tracks,
    sh: Any,
    graph: EdgeGraph,
) -> tuple[Tracks, Layer2022Cache]:
    r"""Stage 4, layer k: ``Tracks`` k -> ``Tracks`` k+1.

    1. environment $\tilde A_e = \alpha \sum_{e' \ne e,\, c_{e'} = c_e} w_{e'} Y_{e'}$,
       $\alpha = 1/\sqrt{\bar N - 1}$; with ``self_edge_tensor_product`` the sum includes e
       and $\alpha = 1/\sqrt{\bar N}$;
    2. tensor product $T_e = V^k_e \otimes \tilde A_e$ (``Layer2022``: per mixing mode),
       computed as the product with the per-atom density $A_{c_e}$ minus the product with
       the edge's own term (``_product_forward``);
    3. scalars $s_e$: the U·n_s 0e path slots of T before the linear map (uuulin, index
       u·n_s + q), or the 0e output;
    4. uuulin: $V^{k+1} = \mathrm{Linear}(T)$ (``_linear_forward``; not computed for the last
       layer, whose output is never used), otherwise $V^{k+1} = T$;
    5. latent update (``_latent_update``) with ``latent.{k}``;
    6. next environment weights $w^{k+1} = \mathrm{MLP}_{env,k+1}(x^{k+1})$ (not after the last
       layer).

    Returns:
        ``(Tracks(V^{k+1} (T for the last layer), (x⁰ … x^{k+1}), w^{k+1} or None),
        Layer2022Cache)``.
    """
    xp = namespace(sh)
    k = layer.k
    product, product_cache = _product_forward(xp, params, config, layer, tracks, sh, graph)
    scalars = xp.permute_dims(product[:, :, : layer.n_scalars], (1, 0, 2))  # [E, U, n_s]
    scalars = _flat_channels(xp, scalars)
    tensors = product
    if layer.mode == "uuulin" and not layer.is_last:
        tensors = _linear_forward(xp, layer, params[f"linear.{k}"], product)
    latent, update, coefficients, latent_cache = _latent_update(
        xp, params, config, k, tracks, scalars
    )
    env_weights = env_embed_cache = None
    if not layer.is_last:
        w, env_embed_cache = _mlp_forward(
            params, f"env_embed.{k + 1}", latent, config.env_embed_nonlinearity
        )
        env_weights = _per_irrep(xp, w, config)
    cache = Layer2022Cache(
        layer, config, product_cache, product, tracks.latents[-1], update, coefficients,
        latent_cache, env_embed_cache,
    )  # fmt: skip
    return Tracks(tensors, (*tracks.latents, latent), env_weights), cache


def _latent_update_backward(xp, params, c: Layer2022Cache, grad_latent, parameter_gradients):
    """VJP of ``_latent_update``: (∂L/∂[MLP input], ∂L/∂x^k from the ResNet skip or None,
    grads)."""
    k = c.layer.k
    if not c.config.latent_resnet:
        grad_in, grads = _mlp_backward(
            params, f"latent.{k}", c.latent_cache, grad_latent, parameter_gradients
        )
        return grad_in, None, grads
    a, b = c.coefficients
    grad_in, grads = _mlp_backward(
        params, f"latent.{k}", c.latent_cache, grad_latent * b, parameter_gradients
    )
    if parameter_gradients:
        grad_a = xp.sum(grad_latent * c.previous_latent)
        grad_b = xp.sum(grad_latent * c.update)
        phi = params["latent_resnet_coefficients"]
        grads["latent_resnet_coefficients"] = resnet_coefficients_backward(
            phi, k + 1, grad_a, grad_b
        )
    return grad_in, grad_latent * a, grads


def _product_gradient(xp, params, c: Layer2022Cache, grad_tensors: Any, grad_scalars: Any):
    """∂L/∂T of the product output T from ∂L/∂V^{k+1} (through the uuulin linear map, whose
    weight gradient is returned too, else None) and ∂L/∂s ``[E, U·n_s]`` (the first n_s
    slots)."""
    layer = c.layer
    grad_w = None
    if layer.mode == "uuulin" and grad_tensors is not None:
        grad_tensors, grad_w = _linear_backward(
            xp, layer, params[f"linear.{layer.k}"], c.product, grad_tensors
        )
    if grad_tensors is None:
        grad_tensors = xp.zeros_like(c.product)
    U, n_edges = c.product.shape[0], c.product.shape[1]
    grad_scalars = xp.reshape(grad_scalars, (n_edges, U, layer.n_scalars))
    grad_scalars = xp.permute_dims(grad_scalars, (1, 0, 2))
    head = grad_tensors[:, :, : layer.n_scalars] + grad_scalars
    return xp.concat([head, grad_tensors[:, :, layer.n_scalars :]], axis=-1), grad_w


def layer_2022_backward(
    params: dict[str, Any],
    cache: Layer2022Cache,
    grad_tracks: Tracks,
    *,
    parameter_gradients: bool = False,
) -> tuple[tuple[Tracks, Any], dict[str, Any]]:
    """VJP of ``layer_2022_forward``: ``((grad Tracks of the input, grad_sh [E, dim]), grads)``;
    the steps in reverse order."""
    c, layer = cache, cache.layer
    k, config = layer.k, cache.config
    *grad_latents, grad_latent = grad_tracks.latents
    xp = namespace(grad_latent)
    grads: dict[str, Any] = {}
    # 6. next environment weights
    if grad_tracks.env_weights is not None:
        grad_from_env, grads = _mlp_backward(
            params, f"env_embed.{k + 1}", c.env_embed_cache,
            _per_irrep_backward(xp, grad_tracks.env_weights, config), parameter_gradients,
        )  # fmt: skip
        grad_latent = grad_latent + grad_from_env
    # 5. latent update
    grad_in, grad_skip, g = _latent_update_backward(xp, params, c, grad_latent, parameter_gradients)
    grads.update(g)
    n_previous = len(grad_latents)
    F = grad_in.shape[1] - c.product.shape[0] * layer.n_scalars
    if config.latent_resnet:
        grad_latents[-1] = grad_latents[-1] + grad_skip + grad_in[:, :F]
    else:
        widths = [0] + [g.shape[1] for g in grad_latents]
        offsets = np.cumsum(widths)
        grad_latents = [
            g + grad_in[:, offsets[j] : offsets[j + 1]] for j, g in enumerate(grad_latents)
        ]
        F = int(offsets[n_previous])
    # 4. linear map and 3. scalars
    grad_product, grad_w = _product_gradient(xp, params, c, grad_tracks.tensors, grad_in[:, F:])
    if parameter_gradients and grad_w is not None:
        grads[f"linear.{k}"] = grad_w
    # 2., 1. tensor product and environment
    grad_tensors, grad_env_weights, grad_sh, g = _product_backward(
        xp, params, layer, c.product_cache, grad_product, parameter_gradients
    )
    grads.update(g)
    return (Tracks(grad_tensors, tuple(grad_latents), grad_env_weights), grad_sh), grads


# -------------------------------------------------------------------------------------------
# 5. Readout
# -------------------------------------------------------------------------------------------
class Energies2022(NamedTuple):
    """``edge_features`` x^L [E, F], ``edge_energies`` ε [E], ``atomic_energies`` [N] float64."""

    edge_features: Any
    edge_energies: Any
    atomic_energies: Any


class Readout2022Cache(NamedTuple):
    atom_types: Any
    centers: Any
    readout_cache: tuple
    reduced: Any  # [N] Ẽ_i, float64
    scales: Any  # [N] g · scale[t_i], float64
    dtype: Any
    latent_widths: tuple[int, ...]
    config: Allegro2022Config


def readout_2022_forward(
    params: dict[str, Any], config: Allegro2022Config, tracks: Tracks, graph: EdgeGraph
) -> tuple[Energies2022, Readout2022Cache]:
    r"""Stage 5: $\varepsilon_e = \mathrm{MLP}_{edge}(x^L_e)$ (``edge_eng.*``; only the last
    latent, where today's model reads all of them), $\tilde E_i = \sum_{e: c_e = i}
    \varepsilon_e / \sqrt{\bar N}$ in the model dtype, then in float64
    $E_i = g\,(\mathrm{shift}_{t_i} + \mathrm{scale}_{t_i} \tilde E_i)$ with the global scale g
    (the stored per-type values are already divided by g)."""
    features = tracks.latents[-1]
    xp = namespace(features)
    edge_energies, readout_cache = _mlp_forward(
        params, "edge_eng", features, config.edge_eng_nonlinearity
    )
    reduced = scatter_sum(edge_energies[:, 0], graph.centers, graph.n_atoms)
    reduced = xp.astype(
        reduced * config.energy_normalization, float_dtype(xp, "float64", like=features)
    )
    g = config.global_energy_scale
    scales = g * gather(params["per_type_energy_scales"], graph.atom_types)
    atomic_energies = (
        g * gather(params["per_type_energy_shifts"], graph.atom_types) + scales * reduced
    )
    cache = Readout2022Cache(
        graph.atom_types, graph.centers, readout_cache, reduced, scales, features.dtype,
        tuple(x.shape[1] for x in tracks.latents), config,
    )  # fmt: skip
    return Energies2022(features, edge_energies[:, 0], atomic_energies), cache


def readout_2022_backward(
    params: dict[str, Any],
    cache: Readout2022Cache,
    grad_atomic_energies: Any,
    *,
    parameter_gradients: bool = False,
) -> tuple[Tracks, dict[str, Any]]:
    """VJP of ``readout_2022_forward``: ``(Tracks(None, (0, …, 0, ∂L/∂x^L), None), grads)``."""
    c = cache
    xp = namespace(grad_atomic_energies)
    grad_atomic_energies = xp.astype(grad_atomic_energies, c.reduced.dtype)
    grads = {}
    if parameter_gradients:
        g = c.config.global_energy_scale
        num_types = params["per_type_energy_shifts"].shape[0]
        grads["per_type_energy_shifts"] = g * scatter_sum(
            grad_atomic_energies, c.atom_types, num_types
        )
        grads["per_type_energy_scales"] = g * scatter_sum(
            grad_atomic_energies * c.reduced, c.atom_types, num_types
        )
    grad_reduced = (
        xp.astype(grad_atomic_energies * c.scales, c.dtype) * c.config.energy_normalization
    )
    grad_edge_energies = gather(grad_reduced, c.centers)[:, None]
    grad_features, g = _mlp_backward(
        params, "edge_eng", c.readout_cache, grad_edge_energies, parameter_gradients
    )
    grads.update(g)
    n_edges = grad_features.shape[0]
    zeros = [
        xp.zeros((n_edges, w), dtype=c.dtype, device=device(grad_features))
        for w in c.latent_widths[:-1]
    ]
    return Tracks(None, (*zeros, grad_features), None), grads


# -------------------------------------------------------------------------------------------
# The model: the stages composed
# -------------------------------------------------------------------------------------------
def _accumulate(grads: dict[str, Any], new: dict[str, Any]) -> None:
    """Add ``new`` into ``grads`` (the ResNet coefficients get a term from every layer)."""
    for name, value in new.items():
        grads[name] = grads[name] + value if name in grads else value


class Allegro2022ModelCache(NamedTuple):
    params: dict[str, Any]
    geometry: Geometry2022
    two_body: TwoBody2022
    tracks: tuple[Tracks, ...]
    energies: Energies2022
    geometry_cache: Geometry2022Cache
    two_body_cache: TwoBody2022Cache
    initial_tracks: InitialTracks2022Cache
    layers: tuple[Layer2022Cache, ...]
    readout: Readout2022Cache
    input_dtype: Any


class Allegro2022Model(ParameterPlacement):
    """A 2022-era Allegro model: a config, its parameters and the forward/backward, with the
    interface of ``AllegroModel`` (so ``Potential`` and the ASE calculator run it).

    Args:
        config: the hyperparameters (``Allegro2022Config``).
        params: name -> array, exactly ``config.parameter_shapes()``; arrays of one backend.
        dtype: ``"float64"`` or ``"float32"``: the dtype of the whole network, geometry
            included. The per-type energy scales and shifts stay float64, and so are the atomic
            energies.
    """

    _FLOAT64_PARAMS = ("per_type_energy_scales", "per_type_energy_shifts")

    def __init__(self, config: Allegro2022Config, params: dict[str, Any], dtype: str = "float64"):
        self.config = config
        self.dtype = str(dtype)
        self.params = model_parameters(config, params, self.dtype, self._FLOAT64_PARAMS)
        self.layers = [Layer2022(config, k) for k in range(config.num_layers)]
        self._inv_cutoffs = (1.0 / config.cutoff_matrix()).reshape(-1)
        self._ones = np.ones(config.num_types)

    @cached_property
    def num_parameters(self) -> int:
        return int(sum(math.prod(v.shape) for v in self.params.values()))

    @classmethod
    def init(
        cls, config: Allegro2022Config, seed: int = 0, dtype: str = "float64"
    ) -> Allegro2022Model:
        """A model with random parameters drawn from ``seed`` (NumPy), initialized as 0.3.0:
        weights U(−√3, √3), type embeddings N(0, 1), Bessel frequencies nπ/r_c (nπ for the
        normalized basis), ResNet coefficients log(c / min c), scales and shifts from the
        config."""
        rng = np.random.default_rng(seed)
        params = {}
        for name, shape in config.parameter_shapes().items():
            params[name] = _initial_value(config, name, shape, rng)
        return cls(config, params, dtype)

    def to(self, backend: str) -> Allegro2022Model:
        """The same model with its parameters moved to ``"numpy"`` or ``"cupy"``."""
        return Allegro2022Model(
            self.config, {k: to_backend(v, backend) for k, v in self.params.items()}, self.dtype
        )

    def _params_like(self, x) -> dict[str, Any]:
        """The parameters, cast to the complex dtype of their precision when ``x`` is complex
        (complex-step differentiation, ``allegro_ref.train.loss``)."""
        xp = namespace(x)
        if not xp.isdtype(x.dtype, "complex floating"):
            return self.params
        return {k: xp.astype(v, float_dtype(xp, v.dtype, like=x)) for k, v in self.params.items()}

    def edge_graph(self, edge_vectors, centers, neighbors, atom_types) -> EdgeGraph:
        """The ``EdgeGraph`` of these edges (``allegro_ref.model.allegro.edge_graph``)."""
        dtype = float_dtype(namespace(edge_vectors), self.dtype, like=edge_vectors)
        return edge_graph(
            edge_vectors, centers, neighbors, atom_types,
            inv_cutoffs=self._inv_cutoffs, inv_sqrt_nbar=self._ones, dtype=dtype,
        )  # fmt: skip

    def forward(
        self, edge_vectors: Any, centers: Any, neighbors: Any, atom_types: Any
    ) -> tuple[Any, Allegro2022ModelCache]:
        """Per-atom energies: ``(atomic_energies [N] float64 eV, cache)`` from edge vectors
        ``[E, 3]`` Å (r_e = x_j − x_i + shift·cell), ``centers``, ``neighbors`` ``[E]`` and
        ``atom_types`` ``[N]`` (indices into ``config.type_names``). Every operation is
        complex-analytic: complex edge vectors run too (complex-step derivatives)."""
        cfg, params = self.config, self._params_like(edge_vectors)
        dtype = float_dtype(namespace(edge_vectors), self.dtype, like=edge_vectors)
        graph = self.edge_graph(edge_vectors, centers, neighbors, atom_types)
        geometry, geometry_cache = geometry_2022_forward(params, cfg, edge_vectors, graph, dtype)
        two_body, two_body_cache = two_body_2022_forward(params, cfg, geometry.radial, graph)
        tracks, initial_cache = initial_tracks_2022_forward(
            params, cfg, two_body.latent, geometry.sh
        )
        all_tracks, layer_caches = [tracks], []
        for layer in self.layers:
            tracks, layer_cache = layer_2022_forward(params, cfg, layer, tracks, geometry.sh, graph)
            all_tracks.append(tracks)
            layer_caches.append(layer_cache)
        energies, readout_cache = readout_2022_forward(params, cfg, tracks, graph)
        cache = Allegro2022ModelCache(
            params, geometry, two_body, tuple(all_tracks), energies, geometry_cache,
            two_body_cache, initial_cache, tuple(layer_caches), readout_cache, edge_vectors.dtype,
        )  # fmt: skip
        return energies.atomic_energies, cache

    def backward(
        self,
        cache: Allegro2022ModelCache,
        grad_atomic_energies: Any,
        parameter_gradients: bool = False,
    ) -> Any:
        """VJP of ``forward``: ``grad_edge_vectors [E, 3]`` (∂L/∂r_e, in the dtype of the edge
        vectors), and the dict ∂L/∂θ too when ``parameter_gradients``."""
        params, grads, flag = cache.params, {}, {"parameter_gradients": parameter_gradients}
        grad_tracks, g = readout_2022_backward(params, cache.readout, grad_atomic_energies, **flag)
        _accumulate(grads, g)
        grad_sh = None
        for layer_cache in reversed(cache.layers):
            (grad_tracks, grad_sh_k), g = layer_2022_backward(
                params, layer_cache, grad_tracks, **flag
            )
            _accumulate(grads, g)
            grad_sh = grad_sh_k if grad_sh is None else grad_sh + grad_sh_k
        (grad_x0, grad_sh_0), g = initial_tracks_2022_backward(
            params, cache.initial_tracks, grad_tracks, **flag
        )
        _accumulate(grads, g)
        grad_radial, g = two_body_2022_backward(params, cache.two_body_cache, grad_x0, **flag)
        _accumulate(grads, g)
        grad_vectors, g = geometry_2022_backward(
            params, cache.geometry_cache, grad_radial, grad_sh + grad_sh_0, **flag
        )
        _accumulate(grads, g)
        grad_vectors = namespace(grad_vectors).astype(grad_vectors, cache.input_dtype)
        return (grad_vectors, grads) if parameter_gradients else grad_vectors

    def intermediates(self, cache: Allegro2022ModelCache) -> dict[str, Any]:
        """The features of every stage, by name, in forward order: ``edge_lengths`` [E],
        ``radial_basis`` [E, B], ``edge_sh`` [E, dim], ``edge_embedding`` h [E, D],
        ``two_body_latent`` x⁰ [E, F], ``initial_tensors`` V⁰ [E, U, dim], per layer k
        ``layer{k}.tensors`` V^{k+1} [E, U, dim_k] (the product's output for the last layer)
        and ``layer{k}.scalars`` x^{k+1}, ``edge_features`` x^L, ``edge_energies`` [E],
        ``atomic_energies`` [N]."""
        xp = namespace(cache.energies.atomic_energies)
        initial, *layers = cache.tracks
        stages = {
            "edge_lengths": cache.geometry.lengths,
            "radial_basis": cache.geometry.radial,
            "edge_sh": cache.geometry.sh,
            "edge_embedding": cache.two_body.edge_embedding,
            "two_body_latent": cache.two_body.latent,
            "initial_tensors": xp.permute_dims(initial.tensors, (1, 0, 2)),
        }
        for k, tracks in enumerate(layers):
            stages[f"layer{k}.tensors"] = xp.permute_dims(tracks.tensors, (1, 0, 2))
            stages[f"layer{k}.scalars"] = tracks.latents[-1]
        stages["edge_features"] = cache.energies.edge_features
        stages["edge_energies"] = cache.energies.edge_energies
        stages["atomic_energies"] = cache.energies.atomic_energies
        return stages

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Allegro2022Model({c.tensors_mixing_mode}, {c.parity}, l_max={c.l_max}, "
            f"layers={c.num_layers}, U={c.num_tensor_features}, F={c.latent_width}, "
            f"types={list(c.type_names)}, dtype={self.dtype!r})"
        )


def _initial_value(config: Allegro2022Config, name: str, shape, rng) -> np.ndarray:
    """The 0.3.0 initialization of one parameter (``Allegro2022Model.init``)."""
    n = np.arange(1.0, config.num_bessels + 1.0)
    if name == "bessel_frequencies":
        if config.normalized_basis:
            return n * np.pi
        if len(shape) == 2:
            return n[None, :] * np.pi / config.cutoff_matrix().reshape(-1)[:, None]
        return n * np.pi / config.r_max
    if name in ("center_embed", "neighbor_embed"):
        return rng.standard_normal(shape)
    if name == "latent_resnet_coefficients":
        c = config.latent_resnet_coefficients
        return np.zeros(shape) if c is None else np.log(np.asarray(c) / min(c))
    if name == "per_type_energy_scales":
        return config.energy_scales()
    if name == "per_type_energy_shifts":
        return config.energy_shifts()
    return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), shape)
