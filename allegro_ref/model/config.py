"""``AllegroConfig``: every hyperparameter of an Allegro model, and what follows from them.

Defaults are those of the official implementation (nequip-allegro 0.8.3 ``AllegroModel``) where it
has one. ``avg_num_neighbors``, which the official builder requires, defaults to 20.0 here: training
(``allegro_ref.train``) replaces it by the mean number of neighbours of the training data, and a
model built only to be looked at needs *some* value.

Derived quantities live here too, because they are pure functions of the hyperparameters: the
irreps of every tensor-track layer (with the official pruning), the table of per-edge-type
cutoffs, and the shape of every parameter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from ..o3 import Irrep, Irreps

__all__ = ["AllegroConfig"]

PerType = float | dict[str, float]


@dataclass(frozen=True)
class AllegroConfig:
    """Hyperparameters of an Allegro model (names follow the official ``AllegroModel``).

    Attributes:
        type_names: species names, e.g. ``["H", "C", "O"]``; type index = position in this list.
        r_max: cutoff radius in Å.
        l_max: largest spherical-harmonic degree on the tensor track.
        parity: if True the tensor track carries both parities of every l (e.g. 1e and 1o);
            if False only the spherical-harmonic irreps 0e, 1o, 2e, ...
        num_layers: number of Allegro layers (tensor products) L.
        num_scalar_features: width S of the scalar (latent) track.
        num_tensor_features: number of channels U of the tensor track.
        num_bessels: number B of Bessel radial basis functions.
        bessel_trainable: whether the Bessel frequencies are trained.
        polynomial_cutoff_p: exponent p of the polynomial cutoff envelope.
        radial_chemical_embed_dim: width D of the two-body embedding (default S; must be even).
        scalar_embed_mlp_hidden_layers_depth / _width: the MLP that maps the two-body embedding
            to the first scalar features.
        allegro_mlp_hidden_layers_depth / _width: the latent MLP of every layer.
        readout_mlp_hidden_layers_depth / _width: the MLP giving the edge energies.
        tp_path_channel_coupling: one tensor-product weight per (channel, path) if True, per path
            if False.
        avg_num_neighbors: N̄ in the 1/√N̄ normalizations; a float or a dict type name -> float
            (then N̄ of the centre atom's type is used).
        per_type_energy_scales / per_type_energy_shifts: E_i = shift[t_i] + scale[t_i]·Ẽ_i;
            a float (all types), a dict type name -> float, or None (scale 1, shift 0).
        per_edge_type_cutoff: optional smaller cutoffs: dict centre type -> float, or centre
            type -> {neighbour type -> float}; every value <= r_max; pairs not listed use r_max.
    """

    type_names: tuple[str, ...]
    r_max: float
    l_max: int = 2
    parity: bool = True
    num_layers: int = 2
    num_scalar_features: int = 64
    num_tensor_features: int = 16
    num_bessels: int = 8
    bessel_trainable: bool = False
    polynomial_cutoff_p: float = 6.0
    radial_chemical_embed_dim: int | None = None
    scalar_embed_mlp_hidden_layers_depth: int = 1
    scalar_embed_mlp_hidden_layers_width: int = 64
    allegro_mlp_hidden_layers_depth: int = 1
    allegro_mlp_hidden_layers_width: int = 64
    readout_mlp_hidden_layers_depth: int = 1
    readout_mlp_hidden_layers_width: int = 32
    tp_path_channel_coupling: bool = True
    avg_num_neighbors: PerType = 20.0
    per_type_energy_scales: PerType | None = None
    per_type_energy_shifts: PerType | None = None
    per_edge_type_cutoff: dict[str, Any] | None = field(default=None)

    def __post_init__(self):
        names = tuple(self.type_names) if not isinstance(self.type_names, str) else ()
        object.__setattr__(self, "type_names", names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                f"type_names must be a non-empty list of names, got {self.type_names!r}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"type_names has duplicates: {list(names)}")
        if not (math.isfinite(self.r_max) and self.r_max > 0):
            raise ValueError(f"r_max must be a positive number of Å, got {self.r_max!r}")
        if self.l_max < 0:
            raise ValueError(f"l_max must be >= 0, got {self.l_max}")
        for name in (
            "num_layers",
            "num_scalar_features",
            "num_tensor_features",
            "num_bessels",
            "scalar_embed_mlp_hidden_layers_width",
            "allegro_mlp_hidden_layers_width",
            "readout_mlp_hidden_layers_width",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "scalar_embed_mlp_hidden_layers_depth",
            "allegro_mlp_hidden_layers_depth",
            "readout_mlp_hidden_layers_depth",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.polynomial_cutoff_p <= 0:
            raise ValueError(f"polynomial_cutoff_p must be > 0, got {self.polynomial_cutoff_p}")
        if self.embed_dim % 2:
            raise ValueError(
                f"radial_chemical_embed_dim must be even (two halves: centre and neighbour "
                f"type embeddings), got {self.embed_dim}"
            )
        if np.any(self.per_type_values(self.avg_num_neighbors, "avg_num_neighbors") <= 0):
            raise ValueError(f"avg_num_neighbors must be > 0, got {self.avg_num_neighbors!r}")
        self.per_type_values(self.per_type_energy_scales, "per_type_energy_scales", 1.0)
        self.per_type_values(self.per_type_energy_shifts, "per_type_energy_shifts", 0.0)
        self.cutoff_matrix()

    # ---------------------------------------------------------------------------------------
    # Sizes
    # ---------------------------------------------------------------------------------------
    @property
    def num_types(self) -> int:
        return len(self.type_names)

    @property
    def embed_dim(self) -> int:
        """D, the width of the two-body (radial x chemical) embedding."""
        if self.radial_chemical_embed_dim is None:
            return self.num_scalar_features
        return self.radial_chemical_embed_dim

    @property
    def sh_irreps(self) -> Irreps:
        """Irreps of the spherical harmonics and of every environment: 0e + 1o + 2e + ..."""
        return Irreps.spherical_harmonics(self.l_max)

    @property
    def num_sh_irreps(self) -> int:
        """n_l = l_max + 1: one environment weight per (channel, degree l)."""
        return self.l_max + 1

    # ---------------------------------------------------------------------------------------
    # Per-type values and cutoffs
    # ---------------------------------------------------------------------------------------
    def per_type_values(self, value: PerType | None, name: str, default=None) -> np.ndarray:
        """A float or a {type name: float} dict as a float64 array [T] in type order."""
        if value is None:
            if default is None:
                raise ValueError(f"{name} is required")
            value = default
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(self.type_names))
            missing = [t for t in self.type_names if t not in value]
            if unknown or missing:
                raise ValueError(
                    f"{name}: keys must be exactly the type_names {list(self.type_names)}; "
                    f"unknown {unknown}, missing {missing}"
                )
            out = np.array([float(value[t]) for t in self.type_names])
        else:
            out = np.full(self.num_types, float(value))
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return out

    def cutoff_matrix(self) -> np.ndarray:
        """r_cut(t_i, t_j) as a float64 array [T, T] in Å (centre type i, neighbour type j)."""
        table = np.full((self.num_types, self.num_types), float(self.r_max))
        for centre, spec in (self.per_edge_type_cutoff or {}).items():
            if centre not in self.type_names:
                raise ValueError(
                    f"per_edge_type_cutoff: unknown centre type {centre!r}; "
                    f"type_names are {list(self.type_names)}"
                )
            i = self.type_names.index(centre)
            targets = spec if isinstance(spec, dict) else dict.fromkeys(self.type_names, spec)
            for neighbour, r_cut in targets.items():
                if neighbour not in self.type_names:
                    raise ValueError(
                        f"per_edge_type_cutoff[{centre!r}]: unknown neighbour type "
                        f"{neighbour!r}; type_names are {list(self.type_names)}"
                    )
                if not (0 < float(r_cut) <= self.r_max):
                    raise ValueError(
                        f"per_edge_type_cutoff[{centre!r}][{neighbour!r}] = {r_cut} must be in "
                        f"(0, r_max = {self.r_max}]"
                    )
                table[i, self.type_names.index(neighbour)] = float(r_cut)
        return table

    # ---------------------------------------------------------------------------------------
    # Tensor track irreps
    # ---------------------------------------------------------------------------------------
    def allowed_tensor_irreps(self) -> list[Irrep]:
        """Irreps the tensor track may carry: all (l, p) with l <= l_max (both parities if
        ``parity``, else only those of the spherical harmonics), l ascending, even first."""
        if not self.parity:
            return [ir for _, ir in self.sh_irreps]
        return [Irrep(l, p) for l in range(self.l_max + 1) for p in (1, -1)]

    def layer_irreps(self) -> list[tuple[Irreps, Irreps]]:
        """(input irreps, output irreps) of the tensor product of every layer.

        Forward: layer k outputs every allowed irrep reachable from (its input) x (the
        environment's spherical-harmonic irreps); the last layer outputs only 0e. Backward: an
        irrep is pruned if no path leads from it to an irrep kept in the next layer. Layer 0's
        input is the spherical-harmonic irreps of the initial tensor features.
        """
        sh = [ir for _, ir in self.sh_irreps]
        allowed = self.allowed_tensor_irreps()

        def reachable(inputs: list[Irrep]) -> list[Irrep]:
            return [c for c in allowed if any(c in a * b for a in inputs for b in sh)]

        outputs: list[list[Irrep]] = []
        inputs = sh
        for k in range(self.num_layers):
            out = [Irrep(0, 1)] if k == self.num_layers - 1 else reachable(inputs)
            outputs.append(out)
            inputs = out
        for k in range(self.num_layers - 2, -1, -1):
            keep = outputs[k + 1]
            outputs[k] = [c for c in outputs[k] if any(d in c * b for b in sh for d in keep)]
        inputs_per_layer = [sh] + outputs[:-1]
        return [
            (Irreps([(1, ir) for ir in i]), Irreps([(1, ir) for ir in o]))
            for i, o in zip(inputs_per_layer, outputs, strict=True)
        ]

    # ---------------------------------------------------------------------------------------
    # Parameters
    # ---------------------------------------------------------------------------------------
    def mlp_dims(self, d_in: int, depth: int, width: int, d_out: int) -> list[int]:
        """Layer widths ``[d_in, width (depth times), d_out]`` of an MLP with ``depth`` hidden
        layers."""
        return [d_in] + [width] * depth + [d_out]

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter array (the contents of a weight file)."""
        from ..nn import EnvironmentTensorProduct

        S, U, B, T, D = (
            self.num_scalar_features,
            self.num_tensor_features,
            self.num_bessels,
            self.num_types,
            self.embed_dim,
        )
        n_l = self.num_sh_irreps
        shapes: dict[str, tuple[int, ...]] = {
            "bessel_frequencies": (B,),
            "center_embed": (T, D // 2),
            "neighbor_embed": (T, D // 2),
            "basis_linear.0": (B, D),
        }
        dims = self.mlp_dims(
            D,
            self.scalar_embed_mlp_hidden_layers_depth,
            self.scalar_embed_mlp_hidden_layers_width,
            S,
        )
        shapes.update({f"scalar_embed_mlp.{i}": (a, b) for i, (a, b) in enumerate(pairwise(dims))})
        shapes["tensor_embed.0"] = (S, U * n_l)
        shapes["first_projection.0"] = (S, S + U * n_l)
        for k, (irreps_in, irreps_out) in enumerate(self.layer_irreps()):
            tp = EnvironmentTensorProduct(
                irreps_in, self.sh_irreps, irreps_out, U, self.tp_path_channel_coupling
            )
            shapes[f"tp.{k}"] = tuple(tp.weight_shape)
            last = k == self.num_layers - 1
            dims = self.mlp_dims(
                S * (k + 1) + U,
                self.allegro_mlp_hidden_layers_depth,
                self.allegro_mlp_hidden_layers_width,
                S if last else S + U * n_l,
            )
            shapes.update({f"latent.{k}.{i}": (a, b) for i, (a, b) in enumerate(pairwise(dims))})
        dims = self.mlp_dims(
            S * (self.num_layers + 1),
            self.readout_mlp_hidden_layers_depth,
            self.readout_mlp_hidden_layers_width,
            1,
        )
        shapes.update({f"readout.{i}": (a, b) for i, (a, b) in enumerate(pairwise(dims))})
        shapes["per_type_energy_scales"] = (T,)
        shapes["per_type_energy_shifts"] = (T,)
        return shapes

    # ---------------------------------------------------------------------------------------
    # Serialization
    # ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``AllegroConfig.from_dict(config.to_dict()) == config``."""
        out = dataclasses.asdict(self)
        out["type_names"] = list(self.type_names)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AllegroConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown AllegroConfig fields {unknown}; known fields: {sorted(known)}"
            )
        return cls(**data)

