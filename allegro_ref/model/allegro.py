r"""The Allegro model: edge vectors -> per-atom energies, and the hand-written backward.

Allegro (Musaelian, Batzner et al., *Learning local equivariant representations for large-scale
atomistic dynamics*, arXiv:2204.05249) is *strictly local*: every quantity lives on a directed
edge $e = (i \to j)$ between a center atom $i$ and a neighbor $j$ within the cutoff, and the
energy of atom $i$ depends only on the edges centered on $i$. Two tracks run side by side on
every edge:

- the **scalar track** $x$ (invariant latent features, width $S$), grown by an MLP per layer;
- the **tensor track** $V$ ($U$ channels of equivariant features, irreps up to $l_{max}$), grown
  by a tensor product per layer.

They meet through the **density trick**: the environment of atom $i$,
$A_i = \frac{1}{\sqrt{\bar N}} \sum_{k \in N(i)} w_{ik} \otimes Y(\hat r_{ik})$, is one sum over
$i$'s edges (weights $w$ from the scalar track), and the tensor product $V_{ij} \otimes A_i$
couples edge $ij$ with every edge around $i$ at the cost of one product per edge.

The model is a chain of **stages**, in the order of the paper and of the page
[The Allegro model](../model.md). Each is a module-level forward with its backward right below it
and a typed cache:

| stage | forward / backward | maps |
|---|---|---|
| 1. geometry | `geometry_*` | $r_e \to \|r_e\|,\ b(x)\, u(x),\ Y(\hat r_e)$ |
| 2. two-body embedding | `two_body_*` | $b\, u$, types $\to h$ |
| 3. initial tracks | `initial_tracks_*` | $h, Y \to V^0, x^0, w^0$ |
| 4. layer $k$ | `layer_*` | $V^k, x^{\le k}, w^k \to V^{k+1}, x^{k+1}, w^{k+1}$ |
| 5. readout | `readout_*` | $x^0 \dots x^L \to \varepsilon_e \to E_i$ |

One convention for all of them ([Design](../design.md#the-forwardbackward-pattern)):

```python
outputs, cache = stage_forward(params, config, inputs...)
grad_inputs, grad_params = stage_backward(params, cache, grad_outputs,
                                          parameter_gradients=False)
```

`params` is the model's parameter dict (the stage reads the entries it owns), `grad_params` the
dict of $\partial L/\partial \theta$ for exactly those entries (empty without
`parameter_gradients`). Between stages 3 to 5 the features travel as `Tracks`, and their
gradients as a `Tracks` of gradients. `AllegroModel` composes the stages, and
`AllegroModel.intermediates` names the features of every stage (for layer-by-layer comparisons
with another implementation). The result is exactly what nequip-allegro 0.8.3 computes.

**Forward-over-reverse.** Each stage also has a `stage_jvp` (the tangent of its outputs from
tangent inputs, with a typed tangent cache) and a `stage_backward_jvp` (its backward and the
tangent of that backward, side by side), right below its backward:

```python
tangent_outputs, tangent = stage_jvp(params, ..., cache, tangent_inputs)
(grad_inputs, grad_inputs_dot), grad_params_dot = stage_backward_jvp(
    params, cache, tangent, grad_outputs, grad_outputs_dot)
```

(`grad_params_dot`: the tangents of $\partial L/\partial \theta$ of the entries the stage owns;
the geometry stage returns only those, as nothing trainable lies below it).

`AllegroModel.backward_jvp` composes them: the exact mixed second derivatives that training
needs for the force and stress losses (`allegro_ref.train.loss`), in real arithmetic.

Complex inputs: every operation of every stage is complex-analytic, so both directions also run
on complex edge vectors (complex128 geometry, the complex dtype of the model's precision for
the network): complex-step differentiation, the independent check of `backward_jvp`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, as_constant, device, float_dtype, namespace, to_backend
from ..nn import (
    BesselCache,
    EdgeGroups,
    EnvironmentTensorProduct,
    EnvironmentTensorProductCotangents,
    MlpCotangents,
    bessel_basis_backward,
    bessel_basis_backward_jvp,
    bessel_basis_forward,
    bessel_basis_jvp,
    environment_density_backward,
    environment_density_backward_jvp,
    environment_density_forward,
    environment_density_jvp,
    gather,
    group_edges,
    mlp_backward,
    mlp_backward_jvp,
    mlp_forward,
    mlp_jvp,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
    polynomial_cutoff_jvp,
    scatter_sum,
)
from ..nn.irrep_weights import (
    irrep_weighted_backward,
    irrep_weighted_backward_jvp,
    irrep_weighted_forward,
    irrep_weighted_jvp,
)
from ..o3 import (
    spherical_harmonics_backward,
    spherical_harmonics_forward,
    spherical_harmonics_jvp,
)
from .config import AllegroConfig

__all__ = [
    "AllegroModel",
    "EdgeGraph",
    "edge_graph",
    "Geometry",
    "geometry_forward",
    "geometry_backward",
    "geometry_jvp",
    "geometry_backward_jvp",
    "GeometryTangent",
    "GeometryCotangents",
    "two_body_forward",
    "two_body_backward",
    "two_body_jvp",
    "two_body_backward_jvp",
    "TwoBodyTangent",
    "TwoBodyCotangents",
    "Tracks",
    "initial_tracks_forward",
    "initial_tracks_backward",
    "initial_tracks_jvp",
    "initial_tracks_backward_jvp",
    "InitialTracksTangent",
    "InitialTracksCotangents",
    "layer_forward",
    "layer_backward",
    "layer_jvp",
    "layer_backward_jvp",
    "LayerTangent",
    "LayerCotangents",
    "Energies",
    "readout_forward",
    "readout_backward",
    "readout_jvp",
    "readout_backward_jvp",
    "ReadoutTangent",
    "ReadoutCotangents",
    "ModelCache",
    "ModelCotangents",
    "GeometryCache",
    "TwoBodyCache",
    "InitialTracksCache",
    "LayerCache",
    "ReadoutCache",
]


def _mlp_weights(params: dict[str, Array], prefix: str) -> list[Array]:
    """The weight list ``[prefix.0, prefix.1, ...]`` of one MLP of the parameter dict."""
    weights = []
    while f"{prefix}.{len(weights)}" in params:
        weights.append(params[f"{prefix}.{len(weights)}"])
    return weights


def _flat_channels(xp, a: Array) -> Array:
    """``[E, U, n_l]`` -> ``[E, U·n_l]`` (explicit sizes: also for E = 0)."""
    return xp.reshape(a, (a.shape[0], a.shape[1] * a.shape[2]))


def _named(prefix: str, weight_grads: list[Array] | None) -> dict[str, Array]:
    """``{prefix.i: ∂L/∂W_i}`` from ``mlp_backward``'s list (empty when it is None)."""
    return {f"{prefix}.{i}": g for i, g in enumerate(weight_grads or [])}


# -------------------------------------------------------------------------------------------
# The edges of one evaluation
# -------------------------------------------------------------------------------------------
class EdgeGraph(NamedTuple):
    r"""Who is connected to whom, computed once per forward and read by every stage.

    ``n_atoms`` N; ``atom_types`` [N]; ``centers``, ``neighbors`` [E] atom indices i, j of edge
    e = (i -> j); ``center_types``, ``neighbor_types`` [E]; ``groups`` the edges grouped by
    center atom (``group_edges``, for the environment and the tensor products);
    ``inv_cutoff`` [E] float64, 1/r_cut(t_i, t_j) in 1/Å; ``inv_sqrt_nbar`` [N] model dtype,
    $1/\sqrt{\bar N(t_i)}$.
    """

    n_atoms: int
    atom_types: Array
    centers: Array
    neighbors: Array
    center_types: Array
    neighbor_types: Array
    groups: EdgeGroups
    inv_cutoff: Array
    inv_sqrt_nbar: Array


def edge_graph(
    edge_vectors: Array,
    centers: Array,
    neighbors: Array,
    atom_types: Array,
    *,
    inv_cutoffs: np.ndarray,
    inv_sqrt_nbar: np.ndarray,
    dtype: Any,
) -> EdgeGraph:
    r"""The ``EdgeGraph`` of a structure's edges.

    Args:
        edge_vectors: ``[E, 3]`` Å (only its namespace, device and precision are read).
        centers: ``[E]`` integer index of the center atom i of every edge.
        neighbors: ``[E]`` integer index of the neighbor atom j of every edge.
        atom_types: ``[N]`` integer type of every atom.
        inv_cutoffs: ``[T·T]`` float64 NumPy, 1/r_cut(t_i, t_j) at ``t_i·T + t_j``; a constant
            the caller keeps (``backend.as_constant`` caches it by identity).
        inv_sqrt_nbar: ``[T]`` float64 NumPy, $1/\sqrt{\bar N}$ per center type; a kept
            constant too.
        dtype: the dtype of the network (model dtype, or its complex counterpart).
    """
    xp = namespace(edge_vectors)
    num_types = inv_sqrt_nbar.shape[0]
    geometry_dtype = float_dtype(xp, "float64", like=edge_vectors)
    center_types = gather(atom_types, centers)
    neighbor_types = gather(atom_types, neighbors)
    inv_cutoff = gather(
        as_constant(inv_cutoffs, like=edge_vectors, dtype=geometry_dtype),
        center_types * num_types + neighbor_types,
    )
    per_atom = gather(
        as_constant(inv_sqrt_nbar, like=edge_vectors, dtype=geometry_dtype), atom_types
    )
    return EdgeGraph(
        n_atoms=atom_types.shape[0],
        atom_types=atom_types,
        centers=centers,
        neighbors=neighbors,
        center_types=center_types,
        neighbor_types=neighbor_types,
        groups=group_edges(centers),
        inv_cutoff=inv_cutoff,
        inv_sqrt_nbar=xp.astype(per_atom, dtype),
    )


# -------------------------------------------------------------------------------------------
# 1. Geometry
# -------------------------------------------------------------------------------------------
class Geometry(NamedTuple):
    """Outputs of the geometry stage: ``lengths`` [E] float64 Å, ``radial`` [E, B] b(x)·u(x)
    and ``sh`` [E, (l_max+1)²] Y(r̂), both in the model dtype."""

    lengths: Array
    radial: Array
    sh: Array


class GeometryCache(NamedTuple):
    """What ``geometry_backward`` needs: the float64 geometry and the blocks' caches."""

    edge_vectors: Array  # [E, 3] float64
    lengths: Array  # [E]
    inv_cutoff: Array  # [E]
    bessel: Array  # [E, B]
    envelope: Array  # [E]
    bessel_cache: BesselCache
    envelope_cache: tuple
    sh_cache: Array


def geometry_forward(
    params: dict[str, Array],
    config: AllegroConfig,
    edge_vectors: Array,
    graph: EdgeGraph,
    dtype: Any,
) -> tuple[Geometry, GeometryCache]:
    r"""Stage 1, edge geometry, in float64 (complex128 for complex edge vectors).

    $x_e = |r_e| / r_{cut}(t_i, t_j)$, the Bessel basis $b_n(x) = \sin(\pi \omega_n x)/(\pi x)$
    (``params["bessel_frequencies"]`` ω), the polynomial envelope u(x) and the real spherical
    harmonics $Y(\hat r_e)$ of degrees 0 … l_max. The radial basis $b(x)\,u(x)$ and Y are cast
    to the network's ``dtype``.

    Args:
        params: the model's parameters (reads ``bessel_frequencies``).
        config: reads ``l_max`` and ``polynomial_cutoff_p``.
        edge_vectors: ``[E, 3]`` Å, $r_e = x_j - x_i$ (+ a lattice shift).
        graph: the ``EdgeGraph`` (reads ``inv_cutoff``).
        dtype: the network's dtype.

    Returns:
        ``(Geometry, GeometryCache)``.
    """
    xp = namespace(edge_vectors)
    edge_vectors = xp.astype(edge_vectors, float_dtype(xp, "float64", like=edge_vectors))
    lengths = xp.sqrt(xp.sum(edge_vectors * edge_vectors, axis=-1))
    x = lengths * graph.inv_cutoff
    bessel, bessel_cache = bessel_basis_forward(x, params["bessel_frequencies"])
    envelope, envelope_cache = polynomial_cutoff_forward(x, config.polynomial_cutoff_p)
    sh, sh_cache = spherical_harmonics_forward(config.l_max, edge_vectors)
    geometry = Geometry(
        lengths=lengths,
        radial=xp.astype(bessel * envelope[:, None], dtype),
        sh=xp.astype(sh, dtype),
    )
    cache = GeometryCache(
        edge_vectors, lengths, graph.inv_cutoff, bessel, envelope, bessel_cache, envelope_cache,
        sh_cache,
    )  # fmt: skip
    return geometry, cache


def geometry_backward(
    params: dict[str, Array],
    cache: GeometryCache,
    grad_radial: Array,
    grad_sh: Array,
    *,
    parameter_gradients: bool = False,
    keep_cotangents: bool = False,
) -> tuple:
    r"""VJP of `geometry_forward`: `(grad_edge_vectors [E, 3], {"bessel_frequencies": …})`
    from $\partial L/\partial R$ `[E, B]` (the radial basis $R = b\, u$) and
    $\partial L/\partial Y$ `[E, dim]` (`params` unused: the cache holds $\omega$); then the
    `GeometryCotangents` if `keep_cotangents`.

    Chain rule: $\partial L/\partial b = \partial L/\partial R \cdot u$,
    $\partial L/\partial u = \sum_n \partial L/\partial R_n\, b_n$, then

    $$\frac{\partial L}{\partial r_e} = \frac{1}{r_{cut}} \frac{\partial L}{\partial x_e}\,
      \hat r_e + \frac{\partial L}{\partial r_e}\Big|_Y$$

    (edges have $|r| > 0$: the Potential refuses overlapping atoms).
    """
    c = cache
    xp = namespace(grad_radial, grad_sh)
    grad_radial = xp.astype(grad_radial, c.edge_vectors.dtype)
    grad_bessel = grad_radial * c.envelope[:, None]
    grad_envelope = xp.sum(grad_radial * c.bessel, axis=-1)
    grad_x_bessel, grad_frequencies = bessel_basis_backward(c.bessel_cache, grad_bessel)
    grad_x = grad_x_bessel + polynomial_cutoff_backward(c.envelope_cache, grad_envelope)
    grad_lengths = grad_x * c.inv_cutoff
    grad_vectors = (grad_lengths / c.lengths)[:, None] * c.edge_vectors  # d|r|/dr = r/|r|
    grad_vectors = grad_vectors + spherical_harmonics_backward(
        c.sh_cache, xp.astype(grad_sh, c.edge_vectors.dtype)
    )
    grads = {"bessel_frequencies": grad_frequencies} if parameter_gradients else {}
    if keep_cotangents:
        return grad_vectors, grads, GeometryCotangents(grad_radial)
    return grad_vectors, grads


class GeometryCotangents(NamedTuple):
    """What ``geometry_backward`` keeps for ``geometry_backward_jvp``: ``radial`` ∂L/∂R
    [E, B] float64."""

    radial: Array


class GeometryTangent(NamedTuple):
    """Tangents of the geometry stage along edge-vector tangents ``ṙ`` (``geometry_jvp``):
    ``x`` [E] float64 ẋ, ``envelope`` [E] float64 u̇, ``radial`` [E, B] and ``sh`` [E, dim] in
    the network dtype."""

    x: Array
    envelope: Array
    radial: Array
    sh: Array


def geometry_jvp(cache: GeometryCache, edge_vectors_dot: Array, dtype: Any) -> GeometryTangent:
    r"""Jacobian-vector product of `geometry_forward` along `edge_vectors_dot` `[E, 3]` Å:
    $\dot x = (\hat r \cdot \dot r) / r_{cut}$, $\dot R = \dot b\, u + b\, \dot u$ and
    $\dot Y$ (`spherical_harmonics_jvp`), cast to the network's `dtype`."""
    c = cache
    xp = namespace(edge_vectors_dot)
    v_dot = xp.astype(edge_vectors_dot, c.edge_vectors.dtype)
    x_dot = xp.sum(c.edge_vectors * v_dot, axis=-1) / c.lengths * c.inv_cutoff
    bessel_dot = bessel_basis_jvp(c.bessel_cache, x_dot)
    envelope_dot = polynomial_cutoff_jvp(c.envelope_cache, x_dot)
    radial_dot = bessel_dot * c.envelope[:, None] + c.bessel * envelope_dot[:, None]
    sh_dot = spherical_harmonics_jvp(c.sh_cache, v_dot)
    return GeometryTangent(
        x_dot, envelope_dot, xp.astype(radial_dot, dtype), xp.astype(sh_dot, dtype)
    )


def geometry_backward_jvp(
    params: dict[str, Array],
    cache: GeometryCache,
    tangent: GeometryTangent,
    cotangents: GeometryCotangents,
    grad_radial_dot: Array,
) -> dict[str, Array]:
    r"""Tangent of `geometry_backward`'s parameter gradient (forward-over-reverse), from the
    tangent of $\partial L/\partial R$ `[E, B]`: with $\bar b = \bar R\, u$,
    $\dot{\bar b} = \dot{\bar R}\, u + \bar R\, \dot u$ (`bessel_basis_backward_jvp`; $\bar R$
    from `cotangents`). The tangent of $\partial L/\partial r$ is not formed: the edge vectors
    hold no parameter.
    """
    c = cache
    xp = namespace(grad_radial_dot)
    grad_radial = cotangents.radial
    grad_radial_dot = xp.astype(grad_radial_dot, c.edge_vectors.dtype)
    grad_bessel = grad_radial * c.envelope[:, None]
    grad_bessel_dot = (
        grad_radial_dot * c.envelope[:, None] + grad_radial * tangent.envelope[:, None]
    )
    return {
        "bessel_frequencies": bessel_basis_backward_jvp(
            c.bessel_cache, tangent.x, grad_bessel, grad_bessel_dot
        )
    }


# -------------------------------------------------------------------------------------------
# 2. Two-body embedding
# -------------------------------------------------------------------------------------------
class TwoBodyCache(NamedTuple):
    """What ``two_body_backward`` needs: both factors of the product and the MLP caches."""

    center_types: Array  # [E]
    neighbor_types: Array  # [E]
    type_embedding: Array  # [E, D]
    radial_embedding: Array  # [E, D]
    basis_cache: tuple
    embed_cache: tuple


def two_body_forward(
    params: dict[str, Array], config: AllegroConfig, radial: Array, graph: EdgeGraph
) -> tuple[Array, TwoBodyCache]:
    r"""Stage 2, the two-body scalar embedding $h = \mathrm{MLP}([C_{t_i} \| N_{t_j}] \odot
    (b\,u)\, W_{basis})$.

    Args:
        params: reads ``center_embed`` [T, D/2], ``neighbor_embed`` [T, D/2],
            ``basis_linear.*`` (one linear map B -> D) and ``scalar_embed_mlp.*`` (D -> S).
        config: unused (the widths are the parameters' shapes).
        radial: ``[E, B]`` the radial basis b(x)·u(x) of ``geometry_forward``.
        graph: reads ``center_types`` and ``neighbor_types``.

    Returns:
        ``(h [E, S], TwoBodyCache)``.
    """
    type_embedding, radial_embedding, basis_cache = _type_and_radial_embeddings(
        params, radial, graph
    )
    h, embed_cache = mlp_forward(
        _mlp_weights(params, "scalar_embed_mlp"), type_embedding * radial_embedding
    )
    cache = TwoBodyCache(
        graph.center_types, graph.neighbor_types, type_embedding, radial_embedding, basis_cache,
        embed_cache,
    )  # fmt: skip
    return h, cache


def two_body_backward(
    params: dict[str, Array],
    cache: TwoBodyCache,
    grad_h: Array,
    *,
    parameter_gradients: bool = False,
    keep_cotangents: bool = False,
) -> tuple:
    r"""VJP of `two_body_forward`: `(grad_radial [E, B], grads)` from $\partial L/\partial h$
    `[E, S]`; then the `TwoBodyCotangents` if `keep_cotangents`.

    With $z = t \odot \rho$ (type embedding $t$, radial embedding $\rho$):
    $\partial L/\partial \rho = \partial L/\partial z \odot t$ and
    $\partial L/\partial t = \partial L/\partial z \odot \rho$, scattered onto the types of each
    edge.
    """
    c, keep = cache, {"keep_cotangents": keep_cotangents}
    grad_z, grad_w, *embed = mlp_backward(
        _mlp_weights(params, "scalar_embed_mlp"),
        c.embed_cache,
        grad_h,
        weight_gradients=parameter_gradients,
        **keep,
    )
    grads = _named("scalar_embed_mlp", grad_w)
    grad_radial, embedding_grads, *basis = _type_and_radial_embeddings_backward(
        params, c, grad_z, parameter_gradients=parameter_gradients, **keep
    )
    grads.update(embedding_grads)
    if keep_cotangents:
        return grad_radial, grads, TwoBodyCotangents(embed[0], grad_z, basis[0])
    return grad_radial, grads


class TwoBodyCotangents(NamedTuple):
    """What ``two_body_backward`` keeps for ``two_body_backward_jvp``: the two MLPs'
    cotangents and ∂L/∂z [E, D] (z = t ⊙ ρ)."""

    embed: MlpCotangents
    z: Array
    basis: MlpCotangents


def _type_and_radial_embeddings(
    params: dict[str, Array], radial: Array, graph: EdgeGraph
) -> tuple[Array, Array, tuple]:
    r"""The two factors of the two-body input $z = t \odot \rho$ (both families): the type
    embedding $t = [C_{t_i} \| N_{t_j}]$ `[E, D]` and the radial embedding
    $\rho = R\, W_{basis} / \sqrt B$ `[E, D]`, with the linear map's cache."""
    xp = namespace(radial)
    type_embedding = xp.concat(
        [
            gather(params["center_embed"], graph.center_types),
            gather(params["neighbor_embed"], graph.neighbor_types),
        ],
        axis=-1,
    )
    radial_embedding, basis_cache = mlp_forward(
        _mlp_weights(params, "basis_linear"), radial, nonlinearity=None
    )
    return type_embedding, radial_embedding, basis_cache


def _type_and_radial_embeddings_backward(
    params: dict[str, Array],
    cache: Any,
    grad_z: Array,
    *,
    parameter_gradients: bool,
    keep_cotangents: bool = False,
) -> tuple:
    r"""VJP of `_type_and_radial_embeddings` through $z = t \odot \rho$: ∂L/∂R `[E, B]` from
    $\partial L/\partial z$ `[E, D]` ($\partial L/\partial \rho = \bar z \odot t$), and the
    gradients of ``basis_linear.*``, ``center_embed`` and ``neighbor_embed``
    ($\partial L/\partial t = \bar z \odot \rho$) when asked. ``cache`` is either family's
    two-body cache (fields ``type_embedding``, ``radial_embedding``, ``basis_cache``,
    ``center_types``, ``neighbor_types``). With ``keep_cotangents``, the linear map's
    `MlpCotangents` come third."""
    grad_radial, grad_w, *kept = mlp_backward(
        _mlp_weights(params, "basis_linear"),
        cache.basis_cache,
        grad_z * cache.type_embedding,
        weight_gradients=parameter_gradients,
        keep_cotangents=keep_cotangents,
    )
    grads = _named("basis_linear", grad_w)
    if parameter_gradients:
        grads.update(_type_embedding_gradients(params, cache, grad_z * cache.radial_embedding))
    return grad_radial, grads, *kept


def _type_embedding_gradients(
    params: dict[str, Array], cache: TwoBodyCache, grad_type_embedding: Array
) -> dict[str, Array]:
    """∂L/∂(center_embed, neighbor_embed) from ∂L/∂t [E, D]: each half scattered onto the
    types of the edges' centers or neighbors."""
    num_types, half = params["center_embed"].shape
    return {
        "center_embed": scatter_sum(grad_type_embedding[:, :half], cache.center_types, num_types),
        "neighbor_embed": scatter_sum(
            grad_type_embedding[:, half:], cache.neighbor_types, num_types
        ),
    }


class TwoBodyTangent(NamedTuple):
    """Tangents of the two-body stage (``two_body_jvp``): the radial embedding ρ̇ [E, D] and
    the tangent caches of the two MLPs."""

    radial_embedding: Array
    basis: tuple
    embed: tuple


def two_body_jvp(
    params: dict[str, Array], cache: TwoBodyCache, radial_dot: Array
) -> tuple[Array, TwoBodyTangent]:
    r"""Jacobian-vector product of `two_body_forward`: $\dot h$ `[E, S]` from $\dot R$
    `[E, B]` ($\dot z = t \odot \dot\rho$: the type embedding does not move)."""
    c = cache
    rho_dot, basis = mlp_jvp(_mlp_weights(params, "basis_linear"), c.basis_cache, radial_dot)
    h_dot, embed = mlp_jvp(
        _mlp_weights(params, "scalar_embed_mlp"), c.embed_cache, c.type_embedding * rho_dot
    )
    return h_dot, TwoBodyTangent(rho_dot, basis, embed)


def two_body_backward_jvp(
    params: dict[str, Array],
    cache: TwoBodyCache,
    tangent: TwoBodyTangent,
    cotangents: TwoBodyCotangents,
    grad_h_dot: Array,
) -> tuple[Array, dict[str, Array]]:
    r"""Tangent of `two_body_backward`: `(grad_radial_dot, grads_dot)`;
    $\dot{\bar t} = \dot{\bar z} \odot \rho + \bar z \odot \dot\rho$ for the type embeddings."""
    c, t, kept = cache, tangent, cotangents
    grad_z_dot, grad_w = mlp_backward_jvp(
        _mlp_weights(params, "scalar_embed_mlp"), c.embed_cache, t.embed, kept.embed, grad_h_dot
    )
    grads = _named("scalar_embed_mlp", grad_w)
    grad_radial_dot, grad_w = mlp_backward_jvp(
        _mlp_weights(params, "basis_linear"), c.basis_cache, t.basis, kept.basis,
        grad_z_dot * c.type_embedding,
    )  # fmt: skip
    grads.update(_named("basis_linear", grad_w))
    grad_type_embedding = grad_z_dot * c.radial_embedding + kept.z * t.radial_embedding
    grads.update(_type_embedding_gradients(params, c, grad_type_embedding))
    return grad_radial_dot, grads


# -------------------------------------------------------------------------------------------
# 3. The two tracks start
# -------------------------------------------------------------------------------------------
class Tracks(NamedTuple):
    """The features on every edge between stages 3 and 5 (or their gradients, same shapes).

    ``tensors``: the tensor track V^k ``[U, E, dim_k]``, channel-major (docs/design.md);
    ``latents``: the scalar track so far, ``(x⁰, …, x^k)``, each ``[E, S]`` (every layer's
    latent MLP reads all of them, DenseNet-style); ``env_weights``: w^k ``[E, U, l_max+1]``,
    the weights of the next layer's environment (None after the last layer).
    In a gradient, ``tensors`` and ``env_weights`` are None where nothing depends on them.
    """

    tensors: Array
    latents: tuple[Array, ...]
    env_weights: Array


class InitialTracksCache(NamedTuple):
    """What ``initial_tracks_backward`` needs: the caches of its two linear maps and of V⁰."""

    tensor_embed_cache: tuple
    irrep_weights_cache: tuple
    projection_cache: tuple


def initial_tracks_forward(
    params: dict[str, Array], config: AllegroConfig, h: Array, sh: Array
) -> tuple[Tracks, InitialTracksCache]:
    r"""Stage 3, the start of both tracks from the edge embedding h.

    Tensor track $V^0_e[u, (l, m)] = w_e[u, l]\, Y_{lm}(\hat r_e)$ with $w = h\, W_{tensor}$;
    scalar track $x^0_e$ and the layer-0 environment weights $w^0_e$ from one more linear map
    $[x^0 \| w^0] = h\, W_{proj}$.

    Args:
        params: reads ``tensor_embed.*`` (S -> U·(l_max+1)) and ``first_projection.*``
            (S -> S + U·(l_max+1)).
        config: reads ``num_scalar_features``, ``num_tensor_features``, ``l_max``.
        h: ``[E, S]`` from ``two_body_forward``.
        sh: ``[E, dim]`` spherical harmonics, model dtype.

    Returns:
        ``(Tracks(V⁰ [U, E, dim], (x⁰,), w⁰), InitialTracksCache)``.
    """
    xp = namespace(h, sh)
    n_edges = h.shape[0]
    S, U, n_l = config.num_scalar_features, config.num_tensor_features, config.num_sh_irreps
    weights, tensor_embed_cache = mlp_forward(
        _mlp_weights(params, "tensor_embed"), h, nonlinearity=None
    )
    weights = xp.permute_dims(xp.reshape(weights, (n_edges, U, n_l)), (1, 0, 2))  # [U, E, n_l]
    tensors, irrep_weights_cache = irrep_weighted_forward(weights, sh, config.sh_irreps)
    projection, projection_cache = mlp_forward(
        _mlp_weights(params, "first_projection"), h, nonlinearity=None
    )
    tracks = Tracks(
        tensors=tensors,
        latents=(projection[:, :S],),
        env_weights=xp.reshape(projection[:, S:], (n_edges, U, n_l)),
    )
    return tracks, InitialTracksCache(tensor_embed_cache, irrep_weights_cache, projection_cache)


def initial_tracks_backward(
    params: dict[str, Array],
    cache: InitialTracksCache,
    grad_tracks: Tracks,
    *,
    parameter_gradients: bool = False,
    keep_cotangents: bool = False,
) -> tuple:
    r"""VJP of `initial_tracks_forward`: `((grad_h [E, S], grad_sh [E, dim]), grads)` from
    the gradient `Tracks` $(\partial L/\partial V^0, (\partial L/\partial x^0,), \partial
    L/\partial w^0)$; then the `InitialTracksCotangents` if `keep_cotangents`.

    $h$ feeds two linear maps, so $\partial L/\partial h$ is the sum of their backwards;
    $V^0 = w \odot Y$ is bilinear (`irrep_weighted_backward`).
    """
    c, keep = cache, {"keep_cotangents": keep_cotangents}
    xp = namespace(grad_tracks.tensors)
    (grad_x0,) = grad_tracks.latents
    grad_projection = xp.concat([grad_x0, _flat_channels(xp, grad_tracks.env_weights)], axis=-1)
    grad_h, grad_w, *projection = mlp_backward(
        _mlp_weights(params, "first_projection"),
        c.projection_cache,
        grad_projection,
        weight_gradients=parameter_gradients,
        **keep,
    )
    grads = _named("first_projection", grad_w)
    grad_weights, grad_sh = irrep_weighted_backward(c.irrep_weights_cache, grad_tracks.tensors)
    grad_weights = xp.permute_dims(grad_weights, (1, 0, 2))  # [E, U, n_l]
    grad_h_tensors, grad_w, *tensor_embed = mlp_backward(
        _mlp_weights(params, "tensor_embed"),
        c.tensor_embed_cache,
        _flat_channels(xp, grad_weights),
        weight_gradients=parameter_gradients,
        **keep,
    )
    grads.update(_named("tensor_embed", grad_w))
    outputs = ((grad_h + grad_h_tensors, grad_sh), grads)
    if keep_cotangents:
        kept = InitialTracksCotangents(projection[0], grad_tracks.tensors, tensor_embed[0])
        return (*outputs, kept)
    return outputs


class InitialTracksCotangents(NamedTuple):
    """What ``initial_tracks_backward`` keeps for ``initial_tracks_backward_jvp``: the two
    linear maps' cotangents and ∂L/∂V⁰ [U, E, dim]."""

    projection: MlpCotangents
    tensors: Array
    tensor_embed: MlpCotangents


class InitialTracksTangent(NamedTuple):
    """Tangents of stage 3 (``initial_tracks_jvp``): the MLP tangent caches and Ẏ."""

    tensor_embed: tuple
    sh: Array  # [E, dim]
    projection: tuple


def initial_tracks_jvp(
    params: dict[str, Array], config: AllegroConfig, cache: InitialTracksCache, h_dot: Array,
    sh_dot: Array,
) -> tuple[Tracks, InitialTracksTangent]:  # fmt: skip
    r"""Jacobian-vector product of `initial_tracks_forward`: the tangent `Tracks`
    $(\dot V^0, (\dot x^0,), \dot w^0)$ from $\dot h$ `[E, S]` and $\dot Y$ `[E, dim]`."""
    c = cache
    xp = namespace(h_dot)
    n_edges = h_dot.shape[0]
    S, U, n_l = config.num_scalar_features, config.num_tensor_features, config.num_sh_irreps
    weights_dot, tensor_embed = mlp_jvp(
        _mlp_weights(params, "tensor_embed"), c.tensor_embed_cache, h_dot
    )
    weights_dot = xp.permute_dims(xp.reshape(weights_dot, (n_edges, U, n_l)), (1, 0, 2))
    tensors_dot = irrep_weighted_jvp(c.irrep_weights_cache, weights_dot, sh_dot)
    projection_dot, projection = mlp_jvp(
        _mlp_weights(params, "first_projection"), c.projection_cache, h_dot
    )
    tracks_dot = Tracks(
        tensors_dot,
        (projection_dot[:, :S],),
        xp.reshape(projection_dot[:, S:], (n_edges, U, n_l)),
    )
    return tracks_dot, InitialTracksTangent(tensor_embed, sh_dot, projection)


def initial_tracks_backward_jvp(
    params: dict[str, Array],
    cache: InitialTracksCache,
    tangent: InitialTracksTangent,
    cotangents: InitialTracksCotangents,
    grad_tracks_dot: Tracks,
) -> tuple[Array, dict[str, Array]]:
    r"""Tangent of `initial_tracks_backward`: `(grad_h_dot, grads_dot)` (the tangent of
    $\partial L/\partial Y$ is not formed)."""
    c, t, kept = cache, tangent, cotangents
    xp = namespace(grad_tracks_dot.tensors)
    g = grad_tracks_dot
    grad_projection_dot = xp.concat([g.latents[0], _flat_channels(xp, g.env_weights)], axis=-1)
    grad_h_dot, grad_w = mlp_backward_jvp(
        _mlp_weights(params, "first_projection"), c.projection_cache, t.projection,
        kept.projection, grad_projection_dot,
    )  # fmt: skip
    grads = _named("first_projection", grad_w)
    grad_weights_dot = irrep_weighted_backward_jvp(
        c.irrep_weights_cache, t.sh, kept.tensors, g.tensors
    )
    grad_h_tensors_dot, grad_w = mlp_backward_jvp(
        _mlp_weights(params, "tensor_embed"), c.tensor_embed_cache, t.tensor_embed,
        kept.tensor_embed, _flat_channels(xp, xp.permute_dims(grad_weights_dot, (1, 0, 2))),
    )  # fmt: skip
    grads.update(_named("tensor_embed", grad_w))
    return grad_h_dot + grad_h_tensors_dot, grads


# -------------------------------------------------------------------------------------------
# 4. One Allegro layer
# -------------------------------------------------------------------------------------------
class LayerCache(NamedTuple):
    """What ``layer_backward`` needs: the layer index, its tensor product, 1/√N̄ and the
    caches of the density, the tensor product and the latent MLP."""

    k: int  # the layer index (parameters tp.{k}, latent.{k}.*)
    tensor_product: EnvironmentTensorProduct
    inv_sqrt_nbar: Array  # [N]
    density_cache: tuple
    tensor_product_cache: tuple
    latent_cache: tuple


def layer_forward(
    params: dict[str, Array],
    config: AllegroConfig,
    k: int,
    tensor_product: EnvironmentTensorProduct,
    tracks: Tracks,
    sh: Array,
    graph: EdgeGraph,
) -> tuple[Tracks, LayerCache]:
    r"""Stage 4, Allegro layer k: ``Tracks`` k -> ``Tracks`` k+1, in four steps.

    1. density: $A_i[u, (l, m)] = \frac{1}{\sqrt{\bar N}} \sum_{e: c_e = i} w^k_e[u, l]\,
       Y_{lm}(\hat r_e)$, ``[N, U, dim]`` (``environment_density_forward``);
    2. tensor product: $V^{k+1}_e[u] = \sum_p \theta_k[u, p]\, C_p(V^k_e[u], A_{c_e}[u])$,
       ``[U, E, dim_out]`` (``tensor_product``, the model's ``tensor_products[k]``);
    3. scalar extraction: $s_e[u] = V^{k+1}_e[u, 0e]$, ``[E, U]``;
    4. latent MLP: $[x^{k+1} \| w^{k+1}] = \mathrm{MLP}([x^0 \| \dots \| x^k \| s])$
       (the last layer outputs only $x^{k+1}$).

    Args:
        params: reads ``tp.{k}`` and ``latent.{k}.*``.
        config: reads ``num_scalar_features``, ``num_tensor_features``, ``l_max``,
            ``num_layers``.
        k: the layer index, 0 … L−1.
        tensor_product: layer k's ``EnvironmentTensorProduct`` (V^k irreps ⊗ Y irreps ->
            V^{k+1} irreps); any object with its ``forward``/``backward`` works (a profiler
            can pass a timed wrapper).
        tracks: the ``Tracks`` after layer k−1 (or ``initial_tracks_forward``).
        sh: ``[E, dim]`` spherical harmonics, model dtype.
        graph: reads ``groups``, ``n_atoms``, ``inv_sqrt_nbar``.

    Returns:
        ``(Tracks(V^{k+1}, (x⁰, …, x^{k+1}), w^{k+1} or None), LayerCache)``.
    """
    xp = namespace(sh)
    n_edges = sh.shape[0]
    S, U, n_l = config.num_scalar_features, config.num_tensor_features, config.num_sh_irreps
    # 1. density
    density, density_cache = environment_density_forward(
        tracks.env_weights, sh, config.sh_irreps, graph.groups, graph.n_atoms
    )
    density = density * graph.inv_sqrt_nbar[:, None, None]
    # 2. tensor product
    tensors, tp_cache = tensor_product.forward(
        tracks.tensors, density, graph.groups, params[f"tp.{k}"]
    )
    # 3. scalar extraction
    scalars = xp.permute_dims(tensors[:, :, 0], (1, 0))  # 0e of every channel, [E, U]
    # 4. latent MLP
    latent_out, latent_cache = mlp_forward(
        _mlp_weights(params, f"latent.{k}"), xp.concat([*tracks.latents, scalars], axis=-1)
    )
    env_weights = None
    if k < config.num_layers - 1:
        env_weights = xp.reshape(latent_out[:, S:], (n_edges, U, n_l))
    new_tracks = Tracks(tensors, (*tracks.latents, latent_out[:, :S]), env_weights)
    cache = LayerCache(
        k, tensor_product, graph.inv_sqrt_nbar, density_cache, tp_cache, latent_cache
    )
    return new_tracks, cache


def layer_backward(
    params: dict[str, Array],
    cache: LayerCache,
    grad_tracks: Tracks,
    *,
    parameter_gradients: bool = False,
    keep_cotangents: bool = False,
) -> tuple:
    r"""VJP of `layer_forward`: `((grad Tracks of layer k's input, grad_sh [E, dim]), grads)`
    from the gradient `Tracks` of its output; then the `LayerCotangents` if `keep_cotangents`.

    The four steps in reverse: the latent MLP gives $\partial L/\partial [x^0 \dots x^k \| s]$,
    added to the incoming $\partial L/\partial x^j$; $\partial L/\partial s$ joins the 0e column
    of $\partial L/\partial V^{k+1}$ (in place: `grad_tracks.tensors`, the next layer's fresh
    $\partial L/\partial V^{k+1}$, is consumed); the tensor product and the density backward give
    $\partial L/\partial V^k$, $\partial L/\partial w^k$ and this layer's part of
    $\partial L/\partial Y$.
    """
    c, keep = cache, {"keep_cotangents": keep_cotangents}
    # 4. latent MLP
    grad_z, grad_w, *latent = mlp_backward(
        _mlp_weights(params, f"latent.{c.k}"),
        c.latent_cache,
        _latent_output_gradient(grad_tracks),
        weight_gradients=parameter_gradients,
        **keep,
    )
    grads = _named(f"latent.{c.k}", grad_w)
    # 3. scalar extraction
    grad_latents, grad_tensors = _latent_input_gradients(grad_tracks, grad_z)
    # 2. tensor product
    grad_tensors_in, grad_density, grad_theta, *tensor_product = c.tensor_product.backward(
        c.tensor_product_cache, grad_tensors, weight_gradients=parameter_gradients, **keep
    )
    if parameter_gradients:
        grads[f"tp.{c.k}"] = grad_theta
    # 1. density
    grad_density = grad_density * c.inv_sqrt_nbar[:, None, None]
    grad_env_weights, grad_sh = environment_density_backward(c.density_cache, grad_density)
    outputs = ((Tracks(grad_tensors_in, grad_latents, grad_env_weights), grad_sh), grads)
    if keep_cotangents:
        return (*outputs, LayerCotangents(latent[0], tensor_product[0], grad_density))
    return outputs


class LayerCotangents(NamedTuple):
    """What ``layer_backward`` keeps for ``layer_backward_jvp``: the latent MLP's and the
    tensor product's cotangents and ∂L/∂A [N, U, dim] (after the 1/√N̄)."""

    latent: MlpCotangents
    tensor_product: EnvironmentTensorProductCotangents
    density: Array


class LayerTangent(NamedTuple):
    """Tangents of layer k (``layer_jvp``): the tangent caches of the density, the tensor
    product and the latent MLP."""

    density: Any
    tensor_product: Any
    latent: tuple


def layer_jvp(
    params: dict[str, Array], config: AllegroConfig, cache: LayerCache, tracks_dot: Tracks,
    sh_dot: Array,
) -> tuple[Tracks, LayerTangent]:  # fmt: skip
    r"""Jacobian-vector product of `layer_forward`: the tangent `Tracks` of layer k's output
    from those of its input and $\dot Y$ `[E, dim]`, the four steps in order (each linear or
    bilinear in what moves: the blocks' `*_jvp`)."""
    c = cache
    xp = namespace(sh_dot)
    n_edges, n_atoms = sh_dot.shape[0], c.tensor_product_cache.n_atoms
    S, U, n_l = config.num_scalar_features, config.num_tensor_features, config.num_sh_irreps
    density_dot, density = environment_density_jvp(
        c.density_cache, tracks_dot.env_weights, sh_dot, n_atoms
    )
    density_dot = density_dot * c.inv_sqrt_nbar[:, None, None]
    tensors_dot, tensor_product = c.tensor_product.jvp(
        c.tensor_product_cache, tracks_dot.tensors, density_dot
    )
    scalars_dot = xp.permute_dims(tensors_dot[:, :, 0], (1, 0))
    latent_dot, latent = mlp_jvp(
        _mlp_weights(params, f"latent.{c.k}"),
        c.latent_cache,
        xp.concat([*tracks_dot.latents, scalars_dot], axis=-1),
    )
    env_weights_dot = None
    if c.k < config.num_layers - 1:
        env_weights_dot = xp.reshape(latent_dot[:, S:], (n_edges, U, n_l))
    tracks = Tracks(tensors_dot, (*tracks_dot.latents, latent_dot[:, :S]), env_weights_dot)
    return tracks, LayerTangent(density, tensor_product, latent)


def _latent_output_gradient(grad_tracks: Tracks) -> Array:
    """∂L/∂(latent MLP output) `[E, S (+ U (l_max+1))]`: that of the new latent x^{k+1}, then
    that of the next layer's environment weights (none after the last layer). Linear: the
    same on tangents."""
    grad = grad_tracks.latents[-1]
    if grad_tracks.env_weights is None:
        return grad
    xp = namespace(grad)
    return xp.concat([grad, _flat_channels(xp, grad_tracks.env_weights)], axis=-1)


def _latent_input_gradients(grad_tracks: Tracks, grad_z: Array) -> tuple[tuple, Array]:
    """Steps 4 and 3 of `layer_backward` from ∂L/∂[x⁰ … x^k ‖ s] `[E, S (k+1) + U]`:
    (the ∂L/∂x^j, added to the incoming ones, and ∂L/∂V^{k+1}), ∂L/∂s joining the 0e column of
    ``grad_tracks.tensors`` (in place; a fresh ``[U, E, 1]`` after the last layer). Linear:
    the same on tangents."""
    xp = namespace(grad_z)
    *inputs, latest = grad_tracks.latents
    S = latest.shape[1]
    latents = tuple(a + grad_z[:, S * j : S * (j + 1)] for j, a in enumerate(inputs))
    grad_scalars = xp.permute_dims(grad_z[:, S * len(inputs) :], (1, 0))  # [U, E]
    if grad_tracks.tensors is None:  # the last layer: V^L reaches the loss only through s
        return latents, grad_scalars[:, :, None]
    tensors = grad_tracks.tensors
    tensors[:, :, 0] = tensors[:, :, 0] + grad_scalars
    return latents, tensors


def _latent_backward_jvp(
    params, cache: LayerCache, tangent: LayerTangent, cotangents: LayerCotangents,
    grad_tracks_dot: Tracks,
):  # fmt: skip
    """Step 4 of `layer_backward_jvp`: the latent MLP and the scalar extraction for the
    tangent gradient `Tracks`; returns the tangents of ∂L/∂x^j and ∂L/∂V^{k+1} and of the
    MLP's weight gradients."""
    grad_z_dot, grad_w = mlp_backward_jvp(
        _mlp_weights(params, f"latent.{cache.k}"), cache.latent_cache, tangent.latent,
        cotangents.latent, _latent_output_gradient(grad_tracks_dot),
    )  # fmt: skip
    return (*_latent_input_gradients(grad_tracks_dot, grad_z_dot), grad_w)


def layer_backward_jvp(
    params: dict[str, Array],
    cache: LayerCache,
    tangent: LayerTangent,
    cotangents: LayerCotangents,
    grad_tracks_dot: Tracks,
) -> tuple[Tracks, dict[str, Array]]:
    r"""Tangent of `layer_backward` (forward-over-reverse): `(tangent grad Tracks of the
    input, grads_dot)`, the four steps in reverse, each block's `backward_jvp` about the
    cotangents the backward kept (the tangent of $\partial L/\partial Y$ is not formed)."""
    c = cache
    latents, tensors, grad_w = _latent_backward_jvp(params, c, tangent, cotangents, grad_tracks_dot)
    grads = _named(f"latent.{c.k}", grad_w)
    grad_x_dot, grad_env_dot, grads[f"tp.{c.k}"] = c.tensor_product.backward_jvp(
        c.tensor_product_cache, tangent.tensor_product, cotangents.tensor_product, tensors
    )
    grad_w_dot = environment_density_backward_jvp(
        c.density_cache, tangent.density, cotangents.density,
        grad_env_dot * c.inv_sqrt_nbar[:, None, None],
    )  # fmt: skip
    return Tracks(grad_x_dot, latents, grad_w_dot), grads


# -------------------------------------------------------------------------------------------
# 5. Readout and energies
# -------------------------------------------------------------------------------------------
class Energies(NamedTuple):
    """Outputs of the readout: ``edge_features`` [E, S(L+1)] (the readout input),
    ``edge_energies`` ε [E], ``atomic_energies`` E_i [N] float64 eV."""

    edge_features: Array
    edge_energies: Array
    atomic_energies: Array


class ReadoutCache(NamedTuple):
    """What ``readout_backward`` needs: the indices, the MLP cache and the energy factors."""

    atom_types: Array  # [N]
    centers: Array  # [E]
    readout_cache: tuple
    energy_norm: Array  # [N] 1/√(2 N̄)
    reduced: Array  # [N] Ẽ_i, float64
    scales: Array  # [N]
    num_latents: int


def readout_forward(
    params: dict[str, Array], config: AllegroConfig, tracks: Tracks, graph: EdgeGraph
) -> tuple[Energies, ReadoutCache]:
    r"""Stage 5, edge energies and their sum onto the center atoms.

    $\varepsilon_e = \mathrm{MLP}([x^0 \| \dots \| x^L])$,
    $\tilde E_i = \sum_{e: c_e = i} \varepsilon_e / \sqrt{2 \bar N}$ (accumulated in the model
    dtype, then float64) and $E_i = \mathrm{shift}(t_i) + \mathrm{scale}(t_i)\, \tilde E_i$.

    Args:
        params: reads ``readout.*``, ``per_type_energy_scales``, ``per_type_energy_shifts``.
        config: unused (the widths are the parameters' shapes).
        tracks: the ``Tracks`` after the last layer (reads ``latents``).
        graph: reads ``centers``, ``atom_types``, ``n_atoms``, ``inv_sqrt_nbar``.

    Returns:
        ``(Energies, ReadoutCache)``.
    """
    xp = namespace(*tracks.latents)
    features = xp.concat(tracks.latents, axis=-1)
    edge_energies, readout_cache = mlp_forward(_mlp_weights(params, "readout"), features)
    energy_norm = graph.inv_sqrt_nbar * math.sqrt(0.5)
    reduced = scatter_sum(edge_energies[:, 0], graph.centers, graph.n_atoms) * energy_norm
    reduced = xp.astype(reduced, float_dtype(xp, "float64", like=features))
    scales = gather(params["per_type_energy_scales"], graph.atom_types)
    atomic_energies = gather(params["per_type_energy_shifts"], graph.atom_types) + scales * reduced
    energies = Energies(features, edge_energies[:, 0], atomic_energies)
    cache = ReadoutCache(
        graph.atom_types, graph.centers, readout_cache, energy_norm, reduced, scales,
        len(tracks.latents),
    )  # fmt: skip
    return energies, cache


def readout_backward(
    params: dict[str, Array],
    cache: ReadoutCache,
    grad_atomic_energies: Array,
    *,
    parameter_gradients: bool = False,
    keep_cotangents: bool = False,
) -> tuple:
    r"""VJP of `readout_forward`: `(Tracks(None, (grad x⁰, …, grad x^L), None), grads)` from
    $\partial L/\partial E_i$ `[N]`; then the `ReadoutCotangents` if `keep_cotangents`.

    $\partial L/\partial \varepsilon_e = \mathrm{scale}(t_{c_e})\, \partial L/\partial E_{c_e}
    / \sqrt{2 \bar N}$ (a gather, the transpose of the sum onto atoms), then the readout MLP's
    backward; $\partial L/\partial \mathrm{shift}_t$ and $\partial L/\partial \mathrm{scale}_t$
    sum over the atoms of type $t$.
    """
    c = cache
    xp = namespace(grad_atomic_energies)
    grad_atomic_energies = xp.astype(grad_atomic_energies, c.reduced.dtype)
    grads = {}
    if parameter_gradients:
        num_types = params["per_type_energy_shifts"].shape[0]
        grads["per_type_energy_shifts"] = scatter_sum(grad_atomic_energies, c.atom_types, num_types)
        grads["per_type_energy_scales"] = scatter_sum(
            grad_atomic_energies * c.reduced, c.atom_types, num_types
        )
    dtype = c.energy_norm.dtype
    grad_reduced = xp.astype(grad_atomic_energies * c.scales, dtype) * c.energy_norm
    grad_edge_energies = gather(grad_reduced, c.centers)[:, None]
    grad_features, grad_w, *readout = mlp_backward(
        _mlp_weights(params, "readout"),
        c.readout_cache,
        grad_edge_energies,
        weight_gradients=parameter_gradients,
        keep_cotangents=keep_cotangents,
    )
    grads.update(_named("readout", grad_w))
    outputs = (_split_latents(grad_features, c.num_latents), grads)
    if keep_cotangents:
        return (*outputs, ReadoutCotangents(grad_atomic_energies, readout[0]))
    return outputs


def _split_latents(features: Array, num_latents: int) -> Tracks:
    """`Tracks(None, (x⁰, …, x^L), None)` from their concatenation `[E, S (L + 1)]` (or its
    gradient)."""
    S = features.shape[1] // num_latents
    return Tracks(None, tuple(features[:, S * k : S * (k + 1)] for k in range(num_latents)), None)


class ReadoutCotangents(NamedTuple):
    """What ``readout_backward`` keeps for ``readout_backward_jvp``: ∂L/∂E_i [N] float64 and
    the readout MLP's cotangents."""

    atomic_energies: Array
    readout: MlpCotangents


class ReadoutTangent(NamedTuple):
    """Tangents of the readout (``readout_jvp``): the MLP's tangent cache and the tangent of
    Ẽ_i [N] float64."""

    readout: tuple
    reduced: Array


def readout_jvp(
    params: dict[str, Array], cache: ReadoutCache, tracks_dot: Tracks
) -> ReadoutTangent:
    r"""Jacobian-vector product of `readout_forward`: $\dot\varepsilon$ from the tangent
    latents, then $\dot{\tilde E}_i = \sum_{e: c_e = i} \dot\varepsilon_e / \sqrt{2 \bar N}$."""
    c = cache
    xp = namespace(*tracks_dot.latents)
    features_dot = xp.concat(tracks_dot.latents, axis=-1)
    edge_energies_dot, readout = mlp_jvp(
        _mlp_weights(params, "readout"), c.readout_cache, features_dot
    )
    reduced_dot = scatter_sum(edge_energies_dot[:, 0], c.centers, c.atom_types.shape[0])
    reduced_dot = xp.astype(reduced_dot * c.energy_norm, c.reduced.dtype)
    return ReadoutTangent(readout, reduced_dot)


def readout_backward_jvp(
    params: dict[str, Array],
    cache: ReadoutCache,
    tangent: ReadoutTangent,
    cotangents: ReadoutCotangents,
    grad_atomic_energies_dot: Array,
) -> tuple[Tracks, dict[str, Array]]:
    r"""Tangent of `readout_backward`: `(tangent grad Tracks, grads_dot)`; for the scales
    $\dot{\overline{\mathrm{scale}}}_t = \sum_{i: t_i = t} (\dot{\bar E}_i \tilde E_i +
    \bar E_i \dot{\tilde E}_i)$ ($\bar E$ from `cotangents`)."""
    c = cache
    xp = namespace(grad_atomic_energies_dot)
    grad = cotangents.atomic_energies
    grad_dot = xp.astype(grad_atomic_energies_dot, c.reduced.dtype)
    num_types = params["per_type_energy_shifts"].shape[0]
    grads = {
        "per_type_energy_shifts": scatter_sum(grad_dot, c.atom_types, num_types),
        "per_type_energy_scales": scatter_sum(
            grad_dot * c.reduced + grad * tangent.reduced, c.atom_types, num_types
        ),
    }
    grad_reduced_dot = xp.astype(grad_dot * c.scales, c.energy_norm.dtype) * c.energy_norm
    grad_features_dot, grad_w = mlp_backward_jvp(
        _mlp_weights(params, "readout"), c.readout_cache, tangent.readout, cotangents.readout,
        gather(grad_reduced_dot, c.centers)[:, None],
    )  # fmt: skip
    grads.update(_named("readout", grad_w))
    return _split_latents(grad_features_dot, c.num_latents), grads


# -------------------------------------------------------------------------------------------
# The model: the stages composed
# -------------------------------------------------------------------------------------------
def model_parameters(
    config: Any, params: dict[str, Array], dtype: str, float64_names: tuple[str, ...]
) -> dict[str, Array]:
    """The parameters of a model (either family), checked and cast: exactly the names of
    ``config.parameter_shapes()``, each with its shape (else a ValueError listing what is
    missing, unknown or of the wrong shape), in ``dtype`` (``"float32"`` or ``"float64"``)
    except ``float64_names``, which stay float64."""
    float_dtype(np, dtype)  # validates the name
    expected = config.parameter_shapes()
    missing = sorted(set(expected) - set(params))
    unknown = sorted(set(params) - set(expected))
    if missing or unknown:
        raise ValueError(
            f"parameters do not match the config: missing {missing}, unknown {unknown}"
        )
    wrong = {
        name: (tuple(params[name].shape), shape)
        for name, shape in expected.items()
        if tuple(params[name].shape) != shape
    }
    if wrong:
        details = ", ".join(f"{n}: got {g}, expected {e}" for n, (g, e) in wrong.items())
        raise ValueError(f"parameters have wrong shapes: {details}")
    xp = namespace(*params.values())
    return {
        name: xp.astype(value, xp.float64 if name in float64_names else float_dtype(xp, dtype))
        for name, value in params.items()
    }


class ParameterPlacement:
    """Where a model (either family) lives: the namespace and device of its ``params``."""

    params: dict[str, Array]

    @property
    def namespace(self):
        """The array namespace the parameters live in (NumPy, CuPy, array-api-strict, …)."""
        return namespace(next(iter(self.params.values())))

    @property
    def device(self) -> Any:
        """The device the parameters live on (``"cpu"`` for NumPy)."""
        return device(next(iter(self.params.values())))


class AllegroModel(ParameterPlacement):
    """An Allegro model: a config, its parameters (a dict of arrays) and the forward/backward.

    Args:
        config: the hyperparameters.
        params: name -> array, exactly ``config.parameter_shapes()``; arrays of one backend.
        dtype: ``"float64"`` or ``"float32"``, the dtype of the network. Geometry (lengths,
            basis, envelope, spherical harmonics) is always float64 and cast to ``dtype``; atomic
            energies are float64 (the official dtype policy). Energy scales and shifts and
            the Bessel frequencies stay float64.

    Attributes:
        config: the hyperparameters.
        params: name -> array, in the model dtype (``bessel_frequencies`` and the energy scales
            and shifts in float64).
        dtype: ``"float64"`` or ``"float32"``.
        namespace: the array namespace the parameters live in (NumPy, CuPy, …).
        device: the device they live on.
        tensor_products: the ``EnvironmentTensorProduct`` of every layer (its paths and
            weight shape; ``layer_forward`` runs it).

    ``forward`` and ``backward`` compose the stage functions of this module; complex edge
    vectors run too (module docstring), with the parameters cast to complex on the fly.
    """

    _FLOAT64_PARAMS = ("bessel_frequencies", "per_type_energy_scales", "per_type_energy_shifts")

    def __init__(self, config: AllegroConfig, params: dict[str, Array], dtype: str = "float64"):
        self.config = config
        self.dtype = str(dtype)
        self.params = model_parameters(config, params, self.dtype, self._FLOAT64_PARAMS)
        self.tensor_products = [
            EnvironmentTensorProduct(
                irreps_in,
                config.sh_irreps,
                irreps_out,
                config.num_tensor_features,
                path_channel_coupling=config.tp_path_channel_coupling,
            )
            for irreps_in, irreps_out in config.layer_irreps()
        ]
        # float64 NumPy constants, kept for backend.as_constant's cache (keyed by identity)
        self._inv_cutoffs = (1.0 / config.cutoff_matrix()).reshape(-1)
        nbar = config.per_type_values(config.avg_num_neighbors, "avg_num_neighbors")
        self._inv_sqrt_nbar = 1.0 / np.sqrt(nbar)

    # ---------------------------------------------------------------------------------------
    # Construction
    # ---------------------------------------------------------------------------------------
    @classmethod
    def init(cls, config: AllegroConfig, seed: int = 0, dtype: str = "float64") -> AllegroModel:
        """A model with random parameters drawn from ``seed`` (NumPy arrays).

        Initialization as the official one: linear weights U(−√3, √3) with the run-time
        1/√fan_in factors inside ``mlp_forward``; type embeddings N(0, 1); tensor-product path
        weights U(−√3, √3); Bessel frequencies 1..B; scales and shifts from the config. Weights are
        drawn in float64 and then cast, so float32 and float64 models of one seed hold the same
        numbers (unlike the official builder).
        """
        rng = np.random.default_rng(seed)
        params: dict[str, np.ndarray] = {}
        for name, shape in config.parameter_shapes().items():
            if name == "bessel_frequencies":
                params[name] = np.arange(1.0, config.num_bessels + 1.0)
            elif name in ("center_embed", "neighbor_embed"):
                params[name] = rng.standard_normal(shape)
            elif name == "per_type_energy_scales":
                params[name] = config.per_type_values(config.per_type_energy_scales, name, 1.0)
            elif name == "per_type_energy_shifts":
                params[name] = config.per_type_values(config.per_type_energy_shifts, name, 0.0)
            else:  # linear weights and tensor-product path weights
                params[name] = rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), shape)
        return cls(config, params, dtype)

    def to(self, backend: str) -> AllegroModel:
        """The same model with its parameters moved to ``"numpy"`` or ``"cupy"``."""
        return AllegroModel(
            self.config, {k: to_backend(v, backend) for k, v in self.params.items()}, self.dtype
        )

    def _params_like(self, x) -> dict[str, Array]:
        """The parameters, cast to their complex dtype of the same precision when ``x`` is
        complex (complex-step differentiation, see ``allegro_ref.train.loss``)."""
        xp = namespace(x)
        if not xp.isdtype(x.dtype, "complex floating"):
            return self.params
        return {k: xp.astype(v, float_dtype(xp, v.dtype, like=x)) for k, v in self.params.items()}

    def edge_graph(
        self, edge_vectors: Array, centers: Array, neighbors: Array, atom_types: Array
    ) -> EdgeGraph:
        """The ``EdgeGraph`` of these edges with this model's cutoffs and N̄ (``edge_graph``)."""
        dtype = float_dtype(namespace(edge_vectors), self.dtype, like=edge_vectors)
        return edge_graph(
            edge_vectors, centers, neighbors, atom_types,
            inv_cutoffs=self._inv_cutoffs, inv_sqrt_nbar=self._inv_sqrt_nbar, dtype=dtype,
        )  # fmt: skip

    # ---------------------------------------------------------------------------------------
    # Forward and backward: the stages in order, and in reverse
    # ---------------------------------------------------------------------------------------
    def forward(
        self, edge_vectors: Array, centers: Array, neighbors: Array, atom_types: Array
    ) -> tuple[Array, ModelCache]:
        """Per-atom energies of one structure (or a batch of disjoint structures).

        Args:
            edge_vectors: ``[E, 3]`` float64, Å: r_e = x_j − x_i + shift·cell for edge e = (i→j)
                (or complex128: module docstring).
            centers: ``[E]`` integer index of the center atom i of each edge.
            neighbors: ``[E]`` integer index of the neighbor atom j of each edge.
            atom_types: ``[N]`` integer type of each atom (index into ``config.type_names``).

        Returns:
            ``(atomic_energies [N] float64 eV, cache)``; pass ``cache`` to ``backward``, or to
                ``intermediates`` for the features of every stage.
        """
        cfg, params = self.config, self._params_like(edge_vectors)
        # the network dtype: self.dtype, or its complex counterpart for complex edge vectors
        dtype = float_dtype(namespace(edge_vectors), self.dtype, like=edge_vectors)
        graph = self.edge_graph(edge_vectors, centers, neighbors, atom_types)
        geometry, geometry_cache = geometry_forward(params, cfg, edge_vectors, graph, dtype)
        h, two_body_cache = two_body_forward(params, cfg, geometry.radial, graph)
        tracks, initial_cache = initial_tracks_forward(params, cfg, h, geometry.sh)
        all_tracks, layer_caches = [tracks], []
        for k, tensor_product in enumerate(self.tensor_products):
            tracks, layer_cache = layer_forward(
                params, cfg, k, tensor_product, tracks, geometry.sh, graph
            )
            all_tracks.append(tracks)
            layer_caches.append(layer_cache)
        energies, readout_cache = readout_forward(params, cfg, tracks, graph)
        cache = ModelCache(
            params, geometry, h, tuple(all_tracks), energies,
            geometry_cache, two_body_cache, initial_cache, tuple(layer_caches), readout_cache,
        )  # fmt: skip
        return energies.atomic_energies, cache

    def backward(
        self,
        cache: ModelCache,
        grad_atomic_energies: Array,
        parameter_gradients: bool = False,
        keep_cotangents: bool = False,
    ) -> Any:
        """Vector-Jacobian product of ``forward``: the stages' backwards in reverse order.

        Args:
            cache: from ``forward``.
            grad_atomic_energies: ``[N]`` float64, ∂L/∂E_i (all ones for the total energy);
                complex128 if the forward ran on complex edge vectors.
            parameter_gradients: also return ∂L/∂θ for every parameter.
            keep_cotangents: also return the ``ModelCotangents``, what ``backward_jvp`` reads.

        Returns:
            ``grad_edge_vectors [E, 3]`` float64 (∂L/∂r_e), alone or followed by ``grad_params``
                (``parameter_gradients``) and then the ``ModelCotangents``
                (``keep_cotangents``), as a tuple.
        """
        params, grads = cache.params, {}
        flags = {"parameter_gradients": parameter_gradients, "keep_cotangents": keep_cotangents}
        grad_tracks, g, *readout = readout_backward(
            params, cache.readout, grad_atomic_energies, **flags
        )
        grads.update(g)
        grad_sh, layers = None, []  # ∂L/∂Y, summed over the layers' environments and V⁰
        for layer_cache in reversed(cache.layers):
            (grad_tracks, grad_sh_k), g, *kept = layer_backward(
                params, layer_cache, grad_tracks, **flags
            )
            grads.update(g)
            layers[:0] = kept
            grad_sh = grad_sh_k if grad_sh is None else grad_sh + grad_sh_k
        (grad_h, grad_sh_0), g, *initial = initial_tracks_backward(
            params, cache.initial_tracks, grad_tracks, **flags
        )
        grads.update(g)
        grad_radial, g, *two_body = two_body_backward(params, cache.two_body, grad_h, **flags)
        grads.update(g)
        grad_vectors, g, *geometry = geometry_backward(
            params, cache.geometry_cache, grad_radial, grad_sh + grad_sh_0, **flags
        )
        grads.update(g)
        outputs = (grad_vectors, grads) if parameter_gradients else (grad_vectors,)
        if keep_cotangents:
            kept = ModelCotangents(*geometry, *two_body, *initial, tuple(layers), *readout)
            outputs = (*outputs, kept)
        return outputs if len(outputs) > 1 else grad_vectors

    def backward_jvp(
        self,
        cache: ModelCache,
        cotangents: ModelCotangents,
        edge_vectors_dot: Array,
        grad_atomic_energies_dot: Array,
    ) -> dict[str, Array]:
        r"""Forward-over-reverse: the tangent of `backward`'s parameter gradients as the edge
        vectors move along `edge_vectors_dot` and the cotangent along
        `grad_atomic_energies_dot`, about the backward that kept `cotangents` (cotangent $c$),

        $$\frac{d}{d\epsilon} \sum_i (c_i + \epsilon \dot c_i)\,
          \frac{\partial E_i}{\partial \theta}(r + \epsilon \dot r)\Big|_{\epsilon = 0}
          = \frac{\partial}{\partial \theta}\Big[\sum_i \dot c_i E_i
            + \sum_e \dot r_e \cdot \sum_i c_i \frac{\partial E_i}{\partial r_e}\Big],$$

        the mixed second derivative that the force and stress losses need
        (`allegro_ref.train.loss`). The stages' `*_jvp` carry the tangents forward, then their
        `*_backward_jvp` carry the tangent cotangents back, reading the primal cotangents
        from `cotangents` instead of recomputing them. Real arithmetic, about the cost of one
        more forward and backward.

        Args:
            cache: from `forward` (real edge vectors).
            cotangents: from `backward(cache, c, keep_cotangents=True)`.
            edge_vectors_dot: `[E, 3]` Å, the edge-vector tangent $\dot r$.
            grad_atomic_energies_dot: `[N]` float64, the tangent $\dot c$ of the cotangent.

        Returns:
            name -> array shaped like the parameter, for every parameter.
        """
        geometry, two_body, initial, layers, readout = self._tangents_forward(
            cache, edge_vectors_dot
        )
        params, kept = cache.params, cotangents
        grad_dot, grads = readout_backward_jvp(
            params, cache.readout, readout, kept.readout, grad_atomic_energies_dot
        )
        for layer_cache, layer, layer_kept in zip(
            reversed(cache.layers), reversed(layers), reversed(kept.layers), strict=True
        ):
            grad_dot, g = layer_backward_jvp(params, layer_cache, layer, layer_kept, grad_dot)
            grads.update(g)
        grad_dot, g = initial_tracks_backward_jvp(
            params, cache.initial_tracks, initial, kept.initial_tracks, grad_dot
        )
        grads.update(g)
        grad_dot, g = two_body_backward_jvp(
            params, cache.two_body, two_body, kept.two_body, grad_dot
        )
        grads.update(g)
        grads.update(
            geometry_backward_jvp(params, cache.geometry_cache, geometry, kept.geometry, grad_dot)
        )
        return grads

    def _tangents_forward(self, cache: ModelCache, edge_vectors_dot: Array) -> tuple:
        """The stages' `*_jvp` in order: (geometry, two-body, initial, (layers…), readout)
        tangents."""
        cfg, params = self.config, cache.params
        geometry = geometry_jvp(cache.geometry_cache, edge_vectors_dot, cache.geometry.radial.dtype)
        h_dot, two_body = two_body_jvp(params, cache.two_body, geometry.radial)
        tracks_dot, initial = initial_tracks_jvp(
            params, cfg, cache.initial_tracks, h_dot, geometry.sh
        )
        layers = []
        for layer_cache in cache.layers:
            tracks_dot, layer = layer_jvp(params, cfg, layer_cache, tracks_dot, geometry.sh)
            layers.append(layer)
        readout = readout_jvp(params, cache.readout, tracks_dot)
        return geometry, two_body, initial, tuple(layers), readout

    def intermediates(self, cache: ModelCache) -> dict[str, Array]:
        """The features of every stage of the forward that made ``cache``, by name, in forward
        order (views, no copies): for layer-by-layer comparisons with another implementation
        (``allegro_ref.io.compare``).

        Names and shapes: ``edge_lengths`` [E] Å, ``radial_basis`` [E, B] (Bessel ×
        envelope), ``edge_sh`` [E, (l_max+1)²], ``edge_embedding`` h [E, S],
        ``initial_tensors`` V⁰ [E, U, dim], then for every layer k ``layer{k}.tensors``
        V^{k+1} [E, U, dim_k] and ``layer{k}.scalars`` x^{k+1} [E, S], ``edge_features``
        [E, S(L+1)], ``edge_energies`` ε [E], ``atomic_energies`` [N] eV. The tensor track is
        handed out edge-major, ``[E, U, dim]``.
        """
        xp = namespace(cache.energies.atomic_energies)
        initial, *layers = cache.tracks
        stages = {
            "edge_lengths": cache.geometry.lengths,
            "radial_basis": cache.geometry.radial,
            "edge_sh": cache.geometry.sh,
            "edge_embedding": cache.edge_embedding,
            "initial_tensors": xp.permute_dims(initial.tensors, (1, 0, 2)),
        }
        for k, tracks in enumerate(layers):
            stages[f"layer{k}.tensors"] = xp.permute_dims(tracks.tensors, (1, 0, 2))
            stages[f"layer{k}.scalars"] = tracks.latents[-1]
        stages["edge_features"] = cache.energies.edge_features
        stages["edge_energies"] = cache.energies.edge_energies
        stages["atomic_energies"] = cache.energies.atomic_energies
        return stages


class ModelCotangents(NamedTuple):
    """What ``AllegroModel.backward`` keeps for ``backward_jvp`` (``keep_cotangents``): every
    stage's primal cotangents, in the order of the stages."""

    geometry: GeometryCotangents
    two_body: TwoBodyCotangents
    initial_tracks: InitialTracksCotangents
    layers: tuple[LayerCotangents, ...]
    readout: ReadoutCotangents


class ModelCache(NamedTuple):
    """What ``AllegroModel.forward`` keeps for ``backward`` and ``intermediates``: the
    parameters it ran with (complex for complex edge vectors), every stage's outputs
    (``geometry``, ``edge_embedding`` h, the ``tracks`` after stage 3 and after every layer,
    ``energies``) and every stage's cache."""

    params: dict[str, Array]
    geometry: Geometry
    edge_embedding: Array
    tracks: tuple[Tracks, ...]
    energies: Energies
    geometry_cache: GeometryCache
    two_body: TwoBodyCache
    initial_tracks: InitialTracksCache
    layers: tuple[LayerCache, ...]
    readout: ReadoutCache
