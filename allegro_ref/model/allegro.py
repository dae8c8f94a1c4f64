"""The Allegro model: edge vectors -> per-atom energies, and the hand-written backward.

Allegro (Musaelian, Batzner et al., 2022) is *strictly local*: every quantity lives on a directed
edge e = (i -> j) between a centre atom i and a neighbour j within the cutoff, and the energy of
atom i depends only on the edges centred on i. Two tracks run side by side on every edge:

- the **scalar track** x (invariant latent features, width S), grown by an MLP per layer;
- the **tensor track** V (U channels of equivariant features, irreps up to l_max), grown by a
  tensor product per layer.

They meet through the **density trick**: the environment of atom i,
A_i = (1/√N̄) Σ_{k ∈ N(i)} w_ik ⊗ Y(r̂_ik), is one sum over i's edges (weights w_ik from the
scalar track), and the tensor product V_ij ⊗ A_i couples edge ij with every edge around i at
the cost of one product per edge: many-body features in O(edges).

This module computes exactly what nequip-allegro 0.8.3 computes (see
shared/reference/allegro_official.md and docs/model.md):

1. geometry (float64): x = |r|/r_cut(t_i, t_j), Bessel basis b(x), envelope u(x), Y(r̂);
2. two-body scalar embedding: h = MLP([C[t_i] ‖ Nb[t_j]] ⊙ (b·u) W_basis);
3. initial tensor features V⁰[u,(l,m)] = (h W_env0)[u,l]·Y_lm; initial scalars and layer-0
   environment weights from one more projection of h;
4. L Allegro layers: density, channel-wise tensor product, scalar extraction, DenseNet-style
   latent MLP on [x⁰ ‖ … ‖ x^k ‖ scalars(V^{k+1})];
5. readout: ε_ij = MLP([x⁰ ‖ … ‖ x^L]); Ẽ_i = Σ_j ε_ij / √(2 N̄); E_i = shift + scale·Ẽ_i.

The backward walks the same steps in reverse with each block's VJP and returns dE/dr_e for every
edge vector (forces and stress follow in ``allegro_ref.potential``), and optionally the gradient
with respect to every parameter.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import as_constant, device, float_dtype, namespace, to_backend
from ..nn import (
    bessel_basis_backward,
    bessel_basis_forward,
    gather,
    mlp_backward,
    mlp_forward,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
    scatter_sum,
)
from ..nn.environment import (
    EnvironmentTensorProduct,
    environment_density_backward,
    environment_density_forward,
    group_edges,
)
from ..nn.irrep_weights import irrep_weighted_backward, irrep_weighted_forward
from ..o3 import spherical_harmonics_backward, spherical_harmonics_forward
from .config import AllegroConfig

__all__ = ["AllegroModel"]


class AllegroModel:
    """An Allegro model: a config, its parameters (a dict of arrays) and the forward/backward.

    Args:
        config: the hyperparameters.
        params: name -> array, exactly ``config.parameter_shapes()``; arrays of one backend.
        dtype: ``"float64"`` or ``"float32"``, the dtype of the network. Geometry (lengths,
            basis, envelope, spherical harmonics) is always float64 and cast to ``dtype``; atomic
            energies are float64 (the official dtype policy). Energy scales and shifts and
            the Bessel frequencies stay float64.

    Complex inputs: every operation of the forward and backward is complex-analytic, so both
    also run on complex edge vectors (then in complex128 geometry and the complex dtype of
    ``dtype`` for the network, parameters cast on the fly). Training uses this for exact
    mixed second derivatives by complex-step differentiation (``allegro_ref.train.loss``).
    """

    _FLOAT64_PARAMS = ("bessel_frequencies", "per_type_energy_scales", "per_type_energy_shifts")

    def __init__(self, config: AllegroConfig, params: dict[str, Any], dtype: str = "float64"):
        self.config = config
        self.dtype = str(dtype)
        float_dtype(np, self.dtype)  # validates the name
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
        self.params = {
            name: xp.astype(
                value, xp.float64 if name in self._FLOAT64_PARAMS else float_dtype(xp, self.dtype)
            )
            for name, value in params.items()
        }
        self._tensor_products = [
            EnvironmentTensorProduct(
                irreps_in,
                config.sh_irreps,
                irreps_out,
                config.num_tensor_features,
                config.tp_path_channel_coupling,
            )
            for irreps_in, irreps_out in config.layer_irreps()
        ]
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

    @property
    def namespace(self):
        """The Array-API namespace of the parameters (where the network runs)."""
        return namespace(next(iter(self.params.values())))

    @property
    def device(self):
        """The device of the parameters (``"cpu"`` for NumPy, a ``cupy.cuda.Device``, ...)."""
        return device(next(iter(self.params.values())))

    def _params_like(self, x) -> dict[str, Any]:
        """The parameters, cast to their complex dtype of the same precision when ``x`` is
        complex (complex-step differentiation, see ``allegro_ref.train.loss``)."""
        xp = namespace(x)
        if not xp.isdtype(x.dtype, "complex floating"):
            return self.params
        return {k: xp.astype(v, float_dtype(xp, v.dtype, like=x)) for k, v in self.params.items()}

    @staticmethod
    def _mlp(params: dict[str, Any], prefix: str) -> list[Any]:
        weights = []
        while f"{prefix}.{len(weights)}" in params:
            weights.append(params[f"{prefix}.{len(weights)}"])
        return weights

    # ---------------------------------------------------------------------------------------
    # Forward
    # ---------------------------------------------------------------------------------------
    def forward(
        self, edge_vectors: Any, centers: Any, neighbors: Any, atom_types: Any
    ) -> tuple[Any, dict[str, Any]]:
        """Per-atom energies of one structure (or a batch of disjoint structures).

        Args:
            edge_vectors: ``[E, 3]`` float64, Å: r_e = x_j − x_i + shift·cell for edge e = (i→j)
                (or complex128: class docstring).
            centers: ``[E]`` integer index of the centre atom i of each edge.
            neighbors: ``[E]`` integer index of the neighbour atom j of each edge.
            atom_types: ``[N]`` integer type of each atom (index into ``config.type_names``).

        Returns:
            tuple: ``(atomic_energies [N] float64 eV, cache)``; pass ``cache`` to
                :meth:`backward`. ``cache["intermediates"]`` names the features of every stage
                (for layer-by-layer comparisons with another implementation): edge_lengths
                [E], radial_basis [E, B] (Bessel × envelope), edge_sh [E, (l_max+1)²],
                edge_embedding h [E, S], initial_tensors V⁰ [E, U, dim], layer{k}.tensors
                V^{k+1}, layer{k}.scalars x^{k+1} [E, S], edge_features [E, S(L+1)],
                edge_energies ε [E], atomic_energies [N].
        """
        cfg = self.config
        xp = namespace(edge_vectors)
        p = self._params_like(edge_vectors)
        # float64 / self.dtype, or complex128 / complex64 for complex edge vectors
        geometry_dtype = float_dtype(xp, "float64", like=edge_vectors)
        dtype = float_dtype(xp, self.dtype, like=edge_vectors)
        n_atoms, n_edges = atom_types.shape[0], edge_vectors.shape[0]
        S, U, n_l = cfg.num_scalar_features, cfg.num_tensor_features, cfg.num_sh_irreps
        sh_irreps = cfg.sh_irreps
        edge_vectors = xp.astype(edge_vectors, geometry_dtype)

        # 1. Geometry, in float64.
        center_types = gather(atom_types, centers)
        neighbor_types = gather(atom_types, neighbors)
        lengths = xp.sqrt(xp.sum(edge_vectors * edge_vectors, axis=-1))
        inv_cutoff = gather(
            as_constant(self._inv_cutoffs, like=edge_vectors),
            center_types * cfg.num_types + neighbor_types,
        )
        x = lengths * inv_cutoff
        bessel, bessel_cache = bessel_basis_forward(x, p["bessel_frequencies"])
        envelope, envelope_cache = polynomial_cutoff_forward(x, cfg.polynomial_cutoff_p)
        sh, sh_cache = spherical_harmonics_forward(cfg.l_max, edge_vectors)
        radial = xp.astype(bessel * envelope[:, None], dtype)
        sh = xp.astype(sh, dtype)

        # 2. Two-body scalar embedding: h = MLP(type embedding ⊙ linear(radial basis)).
        type_embedding = xp.concat(
            [gather(p["center_embed"], center_types), gather(p["neighbor_embed"], neighbor_types)],
            axis=-1,
        )
        radial_embedding, basis_cache = mlp_forward(self._mlp(p, "basis_linear"), radial, None)
        h, embed_cache = mlp_forward(
            self._mlp(p, "scalar_embed_mlp"), type_embedding * radial_embedding
        )

        # 3. Initial tensor track V⁰ = w ⊙ Y, initial scalars x⁰ and layer-0 environment weights.
        # The tensor track is channel-major, [U, E, dim] (see allegro_ref.nn.environment).
        v0_weights, tensor_embed_cache = mlp_forward(self._mlp(p, "tensor_embed"), h, None)
        v0_weights = xp.permute_dims(xp.reshape(v0_weights, (n_edges, U, n_l)), (1, 0, 2))
        tensors_0, v0_cache = irrep_weighted_forward(v0_weights, sh, sh_irreps)
        tensors = tensors_0
        projection, projection_cache = mlp_forward(self._mlp(p, "first_projection"), h, None)
        latents = [projection[:, :S]]
        env_weights = xp.reshape(projection[:, S:], (n_edges, U, n_l))

        # 4. Allegro layers.
        inv_sqrt_nbar = xp.astype(
            gather(as_constant(self._inv_sqrt_nbar, like=edge_vectors), atom_types), dtype
        )
        groups = group_edges(centers)  # edges by centre atom, for the tensor products
        layer_caches, layer_tensors = [], []
        for k, tensor_product in enumerate(self._tensor_products):
            density, env_cache = environment_density_forward(
                env_weights, sh, sh_irreps, groups, n_atoms
            )
            density = density * inv_sqrt_nbar[:, None, None]
            new_tensors, tp_cache = tensor_product.forward(tensors, density, groups, p[f"tp.{k}"])
            scalars = xp.permute_dims(new_tensors[:, :, 0], (1, 0))  # 0e of every channel, [E, U]
            latent_out, latent_cache = mlp_forward(
                self._mlp(p, f"latent.{k}"), xp.concat([*latents, scalars], axis=-1)
            )
            latents.append(latent_out[:, :S])
            if k < cfg.num_layers - 1:
                env_weights = xp.reshape(latent_out[:, S:], (n_edges, U, n_l))
            layer_caches.append((env_cache, tp_cache, latent_cache))
            tensors = new_tensors
            layer_tensors.append(tensors)

        # 5. Readout: edge energies, summed onto the centre atoms.
        features = xp.concat(latents, axis=-1)
        edge_energies, readout_cache = mlp_forward(self._mlp(p, "readout"), features)
        energy_norm = inv_sqrt_nbar * math.sqrt(0.5)
        reduced = scatter_sum(edge_energies[:, 0], centers, n_atoms) * energy_norm
        reduced = xp.astype(reduced, geometry_dtype)
        scales = gather(p["per_type_energy_scales"], atom_types)
        atomic_energies = gather(p["per_type_energy_shifts"], atom_types) + scales * reduced

        intermediates = {
            "edge_lengths": lengths,
            "radial_basis": radial,
            "edge_sh": sh,
            "edge_embedding": h,
            "initial_tensors": xp.permute_dims(tensors_0, (1, 0, 2)),  # [E, U, dim] views
            **{
                f"layer{k}.tensors": xp.permute_dims(t, (1, 0, 2))
                for k, t in enumerate(layer_tensors)
            },
            **{f"layer{k}.scalars": x for k, x in enumerate(latents[1:])},
            "edge_features": features,
            "edge_energies": edge_energies[:, 0],
            "atomic_energies": atomic_energies,
        }
        cache = {
            "intermediates": intermediates,
            "params": p,
            "dtype": dtype,
            "geometry_dtype": geometry_dtype,
            "n_atoms": n_atoms,
            "atom_types": atom_types,
            "centers": centers,
            "center_types": center_types,
            "neighbor_types": neighbor_types,
            "edge_vectors": edge_vectors,
            "lengths": lengths,
            "inv_cutoff": inv_cutoff,
            "bessel": bessel,
            "envelope": envelope,
            "bessel_cache": bessel_cache,
            "envelope_cache": envelope_cache,
            "sh_cache": sh_cache,
            "radial_embedding": radial_embedding,
            "type_embedding": type_embedding,
            "basis_cache": basis_cache,
            "embed_cache": embed_cache,
            "tensor_embed_cache": tensor_embed_cache,
            "v0_cache": v0_cache,
            "projection_cache": projection_cache,
            "inv_sqrt_nbar": inv_sqrt_nbar,
            "layer_caches": layer_caches,
            "readout_cache": readout_cache,
            "energy_norm": energy_norm,
            "reduced": reduced,
            "scales": scales,
        }
        return atomic_energies, cache

    # ---------------------------------------------------------------------------------------
    # Backward
    # ---------------------------------------------------------------------------------------
    def backward(
        self, cache: dict[str, Any], grad_atomic_energies: Any, parameter_gradients: bool = False
    ) -> Any:
        """Vector-Jacobian product of :meth:`forward`.

        Args:
            cache: from :meth:`forward`.
            grad_atomic_energies: ``[N]`` float64, ∂L/∂E_i (all ones for the total energy);
                complex128 if the forward ran on complex edge vectors.
            parameter_gradients: also return ∂L/∂θ for every parameter.

        Returns:
            Any: ``grad_edge_vectors [E, 3]`` float64 (∂L/∂r_e), or ``(grad_edge_vectors,
                grad_params)`` when ``parameter_gradients`` is True.
        """
        cfg = self.config
        xp = namespace(grad_atomic_energies)
        c = cache
        p, dtype, geometry_dtype = c["params"], c["dtype"], c["geometry_dtype"]
        centers = c["centers"]
        n_edges = centers.shape[0]
        S, U, n_l, L = (
            cfg.num_scalar_features,
            cfg.num_tensor_features,
            cfg.num_sh_irreps,
            cfg.num_layers,
        )
        grads: dict[str, Any] = {}
        grad_atomic_energies = xp.astype(grad_atomic_energies, geometry_dtype)

        # 5. Readout.
        if parameter_gradients:
            grads["per_type_energy_shifts"] = scatter_sum(
                grad_atomic_energies, c["atom_types"], cfg.num_types
            )
            grads["per_type_energy_scales"] = scatter_sum(
                grad_atomic_energies * c["reduced"], c["atom_types"], cfg.num_types
            )
        grad_reduced = xp.astype(grad_atomic_energies * c["scales"], dtype) * c["energy_norm"]
        grad_edge_energies = gather(grad_reduced, centers)[:, None]
        grad_features, grad_w = mlp_backward(
            self._mlp(p, "readout"), c["readout_cache"], grad_edge_energies, parameter_gradients
        )
        self._store(grads, "readout", grad_w, parameter_gradients)
        grad_latents = [grad_features[:, S * k : S * (k + 1)] for k in range(L + 1)]

        # 4. Allegro layers, last to first.
        grad_sh = None
        grad_tensors = None  # ∂L/∂V^{k+1}, from the tensor product of layer k+1
        grad_env_weights = None  # ∂L/∂w^{k+1}, from the environment of layer k+1
        for k in range(L - 1, -1, -1):
            env_cache, tp_cache, latent_cache = c["layer_caches"][k]
            grad_latent_out = grad_latents[k + 1]
            if k < L - 1:
                grad_latent_out = xp.concat(
                    [grad_latent_out, xp.reshape(grad_env_weights, (n_edges, U * n_l))], axis=-1
                )
            grad_z, grad_w = mlp_backward(
                self._mlp(p, f"latent.{k}"), latent_cache, grad_latent_out, parameter_gradients
            )
            self._store(grads, f"latent.{k}", grad_w, parameter_gradients)
            for j in range(k + 1):
                grad_latents[j] = grad_latents[j] + grad_z[:, S * j : S * (j + 1)]
            grad_scalars = xp.permute_dims(grad_z[:, S * (k + 1) :], (1, 0))  # [U, E]
            # V^{k+1} feeds the next tensor product and, through its 0e component, the latent MLP
            # (grad_tensors is the tensor product's fresh output: updated in place).
            if grad_tensors is None:
                grad_new_tensors = grad_scalars[:, :, None]
            else:
                grad_tensors[:, :, 0] = grad_tensors[:, :, 0] + grad_scalars
                grad_new_tensors = grad_tensors
            grad_tensors, grad_density, grad_theta = self._tensor_products[k].backward(
                tp_cache, grad_new_tensors
            )
            if parameter_gradients:
                grads[f"tp.{k}"] = grad_theta
            grad_env_weights, grad_sh_k = environment_density_backward(
                env_cache, grad_density * c["inv_sqrt_nbar"][:, None, None]
            )
            grad_sh = grad_sh_k if grad_sh is None else grad_sh + grad_sh_k

        # 3. Initial tensor track and projection.
        grad_projection = xp.concat(
            [grad_latents[0], xp.reshape(grad_env_weights, (n_edges, U * n_l))], axis=-1
        )
        grad_h, grad_w = mlp_backward(
            self._mlp(p, "first_projection"),
            c["projection_cache"],
            grad_projection,
            parameter_gradients,
        )
        self._store(grads, "first_projection", grad_w, parameter_gradients)
        grad_v0_weights, grad_sh_0 = irrep_weighted_backward(c["v0_cache"], grad_tensors)
        grad_sh = grad_sh + grad_sh_0
        grad_v0_weights = xp.permute_dims(grad_v0_weights, (1, 0, 2))  # [E, U, n_l]
        grad_h_v0, grad_w = mlp_backward(
            self._mlp(p, "tensor_embed"),
            c["tensor_embed_cache"],
            xp.reshape(grad_v0_weights, (n_edges, U * n_l)),
            parameter_gradients,
        )
        self._store(grads, "tensor_embed", grad_w, parameter_gradients)
        grad_h = grad_h + grad_h_v0

        # 2. Two-body embedding.
        grad_h0, grad_w = mlp_backward(
            self._mlp(p, "scalar_embed_mlp"), c["embed_cache"], grad_h, parameter_gradients
        )
        self._store(grads, "scalar_embed_mlp", grad_w, parameter_gradients)
        grad_radial_embedding = grad_h0 * c["type_embedding"]
        grad_radial, grad_w = mlp_backward(
            self._mlp(p, "basis_linear"),
            c["basis_cache"],
            grad_radial_embedding,
            parameter_gradients,
        )
        self._store(grads, "basis_linear", grad_w, parameter_gradients)
        if parameter_gradients:
            grad_type_embedding = grad_h0 * c["radial_embedding"]
            half = cfg.embed_dim // 2
            grads["center_embed"] = scatter_sum(
                grad_type_embedding[:, :half], c["center_types"], cfg.num_types
            )
            grads["neighbor_embed"] = scatter_sum(
                grad_type_embedding[:, half:], c["neighbor_types"], cfg.num_types
            )

        # 1. Geometry (float64): radial basis × envelope, and the spherical harmonics.
        grad_radial = xp.astype(grad_radial, geometry_dtype)
        grad_bessel = grad_radial * c["envelope"][:, None]
        grad_envelope = xp.sum(grad_radial * c["bessel"], axis=-1)
        grad_x_bessel, grad_frequencies = bessel_basis_backward(c["bessel_cache"], grad_bessel)
        grad_x = grad_x_bessel + polynomial_cutoff_backward(c["envelope_cache"], grad_envelope)
        if parameter_gradients:
            grads["bessel_frequencies"] = grad_frequencies
        grad_lengths = grad_x * c["inv_cutoff"]
        # d|r|/dr = r/|r|; edges have |r| > 0 (the Potential refuses overlapping atoms).
        grad_vectors = (grad_lengths / c["lengths"])[:, None] * c["edge_vectors"]
        grad_vectors = grad_vectors + spherical_harmonics_backward(
            c["sh_cache"], xp.astype(grad_sh, geometry_dtype)
        )
        if parameter_gradients:
            return grad_vectors, grads
        return grad_vectors

    @staticmethod
    def _store(grads: dict, prefix: str, weight_grads: list, enabled: bool) -> None:
        if enabled:
            grads.update({f"{prefix}.{i}": g for i, g in enumerate(weight_grads)})
