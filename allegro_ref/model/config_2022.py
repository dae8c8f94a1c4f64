"""``Allegro2022Config``: every hyperparameter of the 2022-era Allegro model, and what follows.

The 2022-era architecture is the one of the Allegro paper (Musaelian, Batzner et al., arXiv
2204.05249) as released in nequip-allegro 0.3.0 (run through nequip 0.6.2): a two-body latent
MLP, env-embed MLPs, a ResNet-style latent update, and a tensor product followed by an
equivariant linear map. Defaults are those of that code's ``Allegro_Module`` where it has one;
the names follow its YAML keys, without their prefixes (``two_body_latent_mlp_latent_dimensions``
is ``two_body_latent_dims`` here).

Derived quantities live here too, as pure functions of the hyperparameters: the irreps of every
tensor-track layer (with the official pruning), the paths of every tensor product, the table of
per-edge-type cutoffs and the shape of every parameter.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from ..o3 import Irrep, Irreps
from .config import (
    AllegroConfig,
    _check_bounds,
    _check_field_types,
    _check_integer,
    _check_real,
    _check_type_names,
    _config_from_dict,
)

__all__ = [
    "Allegro2022Config",
    "SILU_NORMALIZATION_2022",
    "MIXING_MODES",
    "PARITIES",
    "MAX_L_MAX_2022",
    "MAX_NUM_LAYERS_2022",
]

#: e3nn 0.5.9's ``normalize2mom(silu).cst``: E[silu(z)^2]^(-1/2), estimated by Monte Carlo over
#: 10^6 normal numbers of torch's generator seeded with 0. The exact value is 1.6765324703; the
#: 2022-era models multiply every post-activation layer by this estimate (1.6e-3 larger).
SILU_NORMALIZATION_2022 = 1.6791767923989418

MIXING_MODES = ("uuulin", "uuup", "uvvp", "p")
PARITIES = ("o3_full", "o3_restricted", "so3")
_NONLINEARITIES = ("silu", None)

PerType = float | dict[str, float]

#: Largest `l_max` and `num_layers` of the 2022 family, tighter than today's (`MAX_L_MAX`,
#: `MAX_NUM_LAYERS`): its model builds dense per-layer constants when it is constructed (the
#: own-edge couplings, `[d_sh, d_in · d_slots]` with one slot per path), about 0.1 GB per layer
#: at l_max 4 with `"uvvp"` and ten times that at 6. At these bounds a model is built in about a
#: second, with under 1 GB of constants; nequip-allegro 0.3.0 models use l_max 1 to 3 and 1 to 3
#: layers.
MAX_L_MAX_2022 = 4
MAX_NUM_LAYERS_2022 = 8


_INT_FIELDS = ("l_max", "num_layers", "num_tensor_features", "num_bessels")
_OPTIONAL_INT_FIELDS = ("initial_scalar_embedding_dim",)
_BOOL_FIELDS = (
    "bessel_trainable",
    "normalized_basis",
    "weight_individual_irreps",
    "self_edge_tensor_product",
    "latent_resnet",
    "latent_resnet_coefficients_learnable",
    "normalize_edge_energy_sum",
)
_REAL_FIELDS = ("r_max", "polynomial_cutoff_p", "avg_num_neighbors", "global_energy_scale")
_WIDTH_LISTS = ("two_body_latent_dims", "latent_dims", "env_embed_dims", "edge_eng_dims")
_NUMBER_LISTS = ("normalized_basis_inv_std", "latent_resnet_coefficients")


def _sequence(value: Any, name: str) -> list:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list, got {value!r}")
    return list(value)


def _ints(value: Any, name: str) -> tuple[int, ...]:
    out = tuple(_check_integer(v, f"{name}[{i}]") for i, v in enumerate(_sequence(value, name)))
    if any(v < 1 for v in out):
        raise ValueError(f"{name} must be positive widths, got {list(value)}")
    return out


def _reals(value: Any, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(_check_real(v, f"{name}[{i}]") for i, v in enumerate(_sequence(value, name)))


@dataclass(frozen=True)
class Allegro2022Config:
    """Hyperparameters of a 2022-era Allegro model (nequip-allegro 0.3.0 ``Allegro_Module``).

    Attributes:
        type_names: species names; type index = position in this list (a model imported from
            nequip 0.6 lists them by increasing atomic number, as nequip orders them).
        r_max: cutoff radius in Å (of the neighbor list, and of every edge type by default).
        l_max: largest spherical-harmonic degree (at most `MAX_L_MAX_2022`, 4; `num_layers` at
            most `MAX_NUM_LAYERS_2022`, 8: the notes beside these constants say why).
        parity: ``"o3_full"`` (the tensor track carries both parities of every l),
            ``"o3_restricted"`` (only the irreps of the harmonics, 0e, 1o, 2e, …) or ``"so3"``
            (the harmonics labelled 0e, 1e, 2e, …: not mirror-symmetric).
        num_layers: number of tensor-product layers L.
        num_tensor_features: channels U of the tensor track.
        num_bessels: number B of Bessel functions (nequip's ``num_bessels_per_basis``, or
            ceil(r_max · f / π) for ``bessel_frequency_cutoff`` f).
        bessel_trainable: whether the Bessel frequencies are trained (0.3.0's default: yes).
        polynomial_cutoff_p: exponent p of the polynomial envelope.
        normalized_basis: nequip's ``NormalizedBasis`` instead of the Bessel basis × envelope
            (``use_original_normalized_basis``): b_n = (2/r_max) sin(ω_n r / r_max) / r · s_n,
            no envelope.
        normalized_basis_inv_std: s_n, ``[B]`` (default: 1/RMS of each function over
            r = linspace(0, r_max, 4001)[1:], as nequip computes it at build time).
        initial_scalar_embedding_dim: D, width of the two-body type × radial embedding (even;
            default ``two_body_latent_dims[0]``).
        two_body_latent_dims: widths of the two-body latent MLP D -> … (the last is F, the
            width of the scalar track).
        latent_dims: widths of every later latent MLP (the last must be F with
            ``latent_resnet``).
        env_embed_dims: hidden widths of the env-embed MLPs (usually empty: one linear map).
        edge_eng_dims: hidden widths of the edge-energy MLP (its output width 1 is added).
        two_body_latent_nonlinearity / latent_nonlinearity / env_embed_nonlinearity /
            edge_eng_nonlinearity: ``"silu"`` or ``None``.
        tensors_mixing_mode: ``"uuulin"`` (tensor product, then an equivariant linear map; the
            paper's), ``"uuup"``, ``"uvvp"`` or ``"p"`` (weighted paths summed per irrep).
        weight_individual_irreps: one environment weight per (channel, l) (True) or per
            channel.
        self_edge_tensor_product: whether edge ij's own term is in the environment it meets.
        latent_resnet: ResNet latent update (True) or a latent MLP of all previous latents.
        latent_resnet_coefficients: L+1 positive ratios of the ResNet update (None: equal).
        latent_resnet_coefficients_learnable: whether those are trained.
        avg_num_neighbors: N̄ of the normalizations (None: no normalization).
        normalize_edge_energy_sum: multiply the sum of edge energies by 1/√N̄.
        per_type_energy_scales / per_type_energy_shifts: E_i = g (shift[t_i] + scale[t_i] Ẽ_i)
            with g = ``global_energy_scale``: the values as nequip stores them, already divided
            by g. A float, a {type name: float} dict, or None (scale 1, shift 0).
        global_energy_scale: g, nequip's ``global_rescale_scale`` (applied in evaluation).
        per_edge_type_cutoff: smaller cutoffs per (center type, neighbor type), as in
            ``AllegroConfig``; each pair's Bessel frequencies are then their own parameters.
    """

    type_names: tuple[str, ...]
    r_max: float
    l_max: int = 2
    parity: str = "o3_full"
    num_layers: int = 2
    num_tensor_features: int = 8
    num_bessels: int = 8
    bessel_trainable: bool = True
    polynomial_cutoff_p: float = 6.0
    normalized_basis: bool = False
    normalized_basis_inv_std: tuple[float, ...] | None = None
    initial_scalar_embedding_dim: int | None = None
    two_body_latent_dims: tuple[int, ...] = (32, 64)
    latent_dims: tuple[int, ...] = (64,)
    env_embed_dims: tuple[int, ...] = ()
    edge_eng_dims: tuple[int, ...] = (32,)
    two_body_latent_nonlinearity: str | None = "silu"
    latent_nonlinearity: str | None = "silu"
    env_embed_nonlinearity: str | None = "silu"
    edge_eng_nonlinearity: str | None = "silu"
    tensors_mixing_mode: str = "uuulin"
    weight_individual_irreps: bool = True
    self_edge_tensor_product: bool = False
    latent_resnet: bool = True
    latent_resnet_coefficients: tuple[float, ...] | None = None
    latent_resnet_coefficients_learnable: bool = False
    avg_num_neighbors: float | None = 20.0
    normalize_edge_energy_sum: bool = True
    per_type_energy_scales: PerType | None = None
    per_type_energy_shifts: PerType | None = None
    global_energy_scale: float = 1.0
    per_edge_type_cutoff: dict[str, Any] | None = field(default=None)

    def __post_init__(self):
        _check_type_names(self)
        _check_field_types(
            self, ints=_INT_FIELDS + _OPTIONAL_INT_FIELDS, bools=_BOOL_FIELDS, reals=_REAL_FIELDS
        )
        for name in _WIDTH_LISTS:
            object.__setattr__(self, name, _ints(getattr(self, name), name))
        for name in _NUMBER_LISTS:
            object.__setattr__(self, name, _reals(getattr(self, name), name))
        self._check_choices()
        self._check_sizes()
        self._check_lists()
        # type names, per-type values and cutoffs are checked as in AllegroConfig
        self._shared().cutoff_matrix()
        self.energy_scales()
        self.energy_shifts()

    def _check_choices(self) -> None:
        if self.parity not in PARITIES:
            raise ValueError(f"parity must be one of {list(PARITIES)}, got {self.parity!r}")
        if self.tensors_mixing_mode not in MIXING_MODES:
            raise ValueError(
                f"tensors_mixing_mode must be one of {list(MIXING_MODES)}, got "
                f"{self.tensors_mixing_mode!r}"
            )
        for name in (
            "two_body_latent_nonlinearity",
            "latent_nonlinearity",
            "env_embed_nonlinearity",
            "edge_eng_nonlinearity",
        ):
            if getattr(self, name) not in _NONLINEARITIES:
                raise ValueError(
                    f"{name} must be one of {list(_NONLINEARITIES)}, got {getattr(self, name)!r} "
                    "(ssp cannot be built by nequip-allegro 0.3.0 either)"
                )
        if self.normalized_basis and self.per_edge_type_cutoff:
            raise ValueError("normalized_basis cannot be combined with per_edge_type_cutoff")
        nbar = self.avg_num_neighbors
        if nbar is not None and not (math.isfinite(nbar) and nbar > 1.0):
            raise ValueError(f"avg_num_neighbors must be > 1, got {self.avg_num_neighbors!r}")
        if not (math.isfinite(self.global_energy_scale) and self.global_energy_scale != 0):
            raise ValueError(
                f"global_energy_scale must be finite, non-zero: {self.global_energy_scale}"
            )

    def _check_sizes(self) -> None:
        for name in ("num_layers", "num_tensor_features", "num_bessels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        _check_bounds(self)
        if self.l_max > MAX_L_MAX_2022 or self.num_layers > MAX_NUM_LAYERS_2022:
            raise ValueError(
                f"the 2022 family supports l_max <= {MAX_L_MAX_2022} and num_layers <= "
                f"{MAX_NUM_LAYERS_2022} (its per-layer constants grow fast), got l_max "
                f"{self.l_max} and num_layers {self.num_layers}"
            )
        if not (math.isfinite(self.polynomial_cutoff_p) and self.polynomial_cutoff_p > 0):
            raise ValueError(f"polynomial_cutoff_p must be > 0, got {self.polynomial_cutoff_p}")
        if not self.two_body_latent_dims or not self.latent_dims:
            raise ValueError("two_body_latent_dims and latent_dims need at least one width")
        if self.embed_dim < 2 or self.embed_dim % 2:
            raise ValueError(
                f"initial_scalar_embedding_dim must be even and positive, got {self.embed_dim}"
            )
        if self.latent_resnet and self.latent_dims[-1] != self.latent_width:
            raise ValueError(
                f"with latent_resnet the latent MLP must output the two-body latent width "
                f"{self.latent_width}, got latent_dims {list(self.latent_dims)}"
            )

    def _check_lists(self) -> None:
        coefficients = self.latent_resnet_coefficients
        if coefficients is not None and (
            len(coefficients) != self.num_layers + 1 or min(coefficients) <= 0
        ):
            raise ValueError(
                f"latent_resnet_coefficients must be {self.num_layers + 1} positive numbers, "
                f"got {list(coefficients)}"
            )
        if self.normalized_basis_inv_std is not None and (
            len(self.normalized_basis_inv_std) != self.num_bessels
        ):
            raise ValueError(f"normalized_basis_inv_std must have {self.num_bessels} values")
        for k, paths in enumerate(self.layer_paths()):
            if self.tensors_mixing_mode == "p" and len(paths) < 2:
                raise ValueError(
                    f"tensors_mixing_mode 'p' needs more than one path; layer {k} has {len(paths)}"
                )

    def _shared(self) -> AllegroConfig:
        """Today's config with the same species, cutoffs and N̄: its per-type value and cutoff
        logic (and checks) are shared by both families."""
        return AllegroConfig(
            type_names=self.type_names,
            r_max=self.r_max,
            l_max=self.l_max,
            per_edge_type_cutoff=self.per_edge_type_cutoff,
        )

    # ---------------------------------------------------------------------------------------
    # Sizes
    # ---------------------------------------------------------------------------------------
    @property
    def num_types(self) -> int:
        return len(self.type_names)

    @property
    def embed_dim(self) -> int:
        """D, the width of the two-body type × radial embedding."""
        if self.initial_scalar_embedding_dim is None:
            return self.two_body_latent_dims[0]
        return int(self.initial_scalar_embedding_dim)

    @property
    def latent_width(self) -> int:
        """F, the width of the two-body latent x⁰ (and of every x^k with ``latent_resnet``)."""
        return self.two_body_latent_dims[-1]

    @property
    def sh_irreps(self) -> Irreps:
        """Irreps of the spherical harmonics: 0e + 1o + 2e + … (0e + 1e + 2e + … for so3)."""
        return Irreps.spherical_harmonics(self.l_max, 1 if self.parity == "so3" else -1)

    @property
    def num_sh_irreps(self) -> int:
        """n_l = l_max + 1."""
        return self.l_max + 1

    @property
    def num_env_weights(self) -> int:
        """Environment weights per edge: U·n_l (``weight_individual_irreps``) or U."""
        n = self.num_sh_irreps if self.weight_individual_irreps else 1
        return self.num_tensor_features * n

    @property
    def tensor_track_dim(self) -> int:
        """The widest tensor-track feature per channel: every layer's input, output and (uuulin)
        product slots, one per path (Potential sizes its chunks with it)."""
        widest = self.sh_irreps.dim
        for (irreps_in, irreps_out), paths in zip(
            self.layer_irreps(), self.layer_paths(), strict=True
        ):
            slots = sum(irreps_out[c].ir.dim for *_, c in paths)
            widest = max(widest, irreps_in.dim, irreps_out.dim, slots)
        return widest

    # Names Potential reads to size its chunks (shared with AllegroConfig)
    @property
    def num_scalar_features(self) -> int:
        return self.latent_width

    @property
    def allegro_mlp_hidden_layers_width(self) -> int:
        return max(self.latent_dims)

    @property
    def readout_mlp_hidden_layers_width(self) -> int:
        return max(self.edge_eng_dims, default=1)

    @property
    def scalar_embed_mlp_hidden_layers_width(self) -> int:
        return max(self.two_body_latent_dims + (self.embed_dim,))

    # ---------------------------------------------------------------------------------------
    # Per-type values, cutoffs, normalizations
    # ---------------------------------------------------------------------------------------
    def per_type_values(self, value: PerType | None, name: str, default=None) -> np.ndarray:
        """A float or a {type name: float} dict as a float64 array [T] in type order."""
        return self._shared().per_type_values(value, name, default)

    def energy_scales(self) -> np.ndarray:
        """The stored per-type scales [T] (already divided by g)."""
        return self.per_type_values(self.per_type_energy_scales, "per_type_energy_scales", 1.0)

    def energy_shifts(self) -> np.ndarray:
        """The stored per-type shifts [T] (already divided by g)."""
        return self.per_type_values(self.per_type_energy_shifts, "per_type_energy_shifts", 0.0)

    def cutoff_matrix(self) -> np.ndarray:
        """r_cut(t_i, t_j) as a float64 array [T, T] in Å (center type i, neighbor type j)."""
        return self._shared().cutoff_matrix()

    @property
    def env_normalization(self) -> float:
        """α_env = 1/√(N̄ − 1) (own edge excluded), 1/√N̄ (included) or 1 (N̄ None)."""
        if self.avg_num_neighbors is None:
            return 1.0
        n = self.avg_num_neighbors - (0.0 if self.self_edge_tensor_product else 1.0)
        return 1.0 / math.sqrt(n)

    @property
    def energy_normalization(self) -> float:
        """1/√N̄ on the sum of edge energies (1 without N̄ or ``normalize_edge_energy_sum``)."""
        if self.avg_num_neighbors is None or not self.normalize_edge_energy_sum:
            return 1.0
        return 1.0 / math.sqrt(self.avg_num_neighbors)

    def basis_inv_std(self) -> np.ndarray:
        """s_n ``[B]`` of the normalized basis: the stored values, or 1/RMS of
        (2/r_max) sin(nπ r/r_max)/r over r = linspace(0, r_max, 4001)[1:]."""
        if self.normalized_basis_inv_std is not None:
            return np.asarray(self.normalized_basis_inv_std, dtype=np.float64)
        r = np.linspace(0.0, self.r_max, 4001)[1:, None]
        n = np.arange(1.0, self.num_bessels + 1.0)
        basis = (2.0 / self.r_max) * np.sin(n * np.pi * r / self.r_max) / r
        return 1.0 / np.sqrt(np.mean(basis * basis, axis=0))

    # ---------------------------------------------------------------------------------------
    # Tensor track irreps and paths
    # ---------------------------------------------------------------------------------------
    def allowed_tensor_irreps(self) -> list[Irrep]:
        """o3_full: (l, p) for l <= l_max, p = +1, −1 (0e, 0o, 1e, 1o, …); otherwise the
        spherical-harmonic irreps."""
        if self.parity == "o3_full":
            return [Irrep(l, p) for l in range(self.l_max + 1) for p in (1, -1)]  # noqa: E741
        return [ir for _, ir in self.sh_irreps]

    def layer_irreps(self) -> list[tuple[Irreps, Irreps]]:
        """(input irreps, output irreps) of the tensor product of every layer, pruned.

        Computed once per config (a frozen dataclass: the result is kept beside its fields).
        """
        return list(self._memo("layer_irreps", self._layer_irreps))

    def layer_paths(self) -> list[list[tuple[int, int, int]]]:
        """The paths ``(i_in, i_sh, i_out)`` of every layer's tensor product: for each output
        irrep, each input irrep, each harmonic irrep (in that nesting) that couple."""
        return [list(p) for p in self._memo("layer_paths", self._layer_paths)]

    def _memo(self, name: str, compute) -> Any:
        """``compute()``, kept in the instance's ``__dict__`` (not a field: equality,
        ``to_dict`` and ``dataclasses.replace`` ignore it). Layer irreps and paths are asked
        for once per layer by the model and the parameter shapes."""
        key = f"_memo_{name}"
        if key not in self.__dict__:
            self.__dict__[key] = compute()
        return self.__dict__[key]

    def _layer_irreps(self) -> list[tuple[Irreps, Irreps]]:
        """`layer_irreps`, computed.

        Forward: layer k outputs every allowed irrep (only 0e for the last layer) reachable
        from its input ⊗ the harmonics. Backward: an input irrep from which no path reaches a
        kept output is dropped, and layer k−1 outputs the kept inputs of layer k.
        """
        sh = [ir for _, ir in self.sh_irreps]
        allowed = self.allowed_tensor_irreps()
        inputs, outputs = [sh], []
        for k in range(self.num_layers):
            candidates = [Irrep(0, 1)] if k == self.num_layers - 1 else allowed
            outputs.append(
                [c for c in candidates if any(c in a * s for a in inputs[k] for s in sh)]
            )
            inputs.append(outputs[k])
        keep = outputs[-1]
        for k in range(self.num_layers - 1, -1, -1):
            inputs[k] = [a for a in inputs[k] if any(c in keep for s in sh for c in a * s)]
            if k > 0:
                outputs[k - 1] = inputs[k]
            keep = inputs[k]
        if inputs[0] != sh:
            raise ValueError(f"unsupported: the pruned first layer drops harmonics ({inputs[0]})")
        return [
            (Irreps([(1, ir) for ir in i]), Irreps([(1, ir) for ir in o]))
            for i, o in zip(inputs[:-1], outputs, strict=True)
        ]

    def _layer_paths(self) -> list[list[tuple[int, int, int]]]:
        """`layer_paths`, computed."""
        from ..nn import allowed_paths

        return [allowed_paths(i, self.sh_irreps, o) for i, o in self.layer_irreps()]

    def num_scalars(self, k: int) -> int:
        """n_s(k), the scalars per channel layer k passes to its latent MLP: its number of 0e
        paths (uuulin) or 1 (the 0e output)."""
        if self.tensors_mixing_mode != "uuulin":
            return 1
        irreps_out = self.layer_irreps()[k][1]
        return sum(1 for *_, c in self.layer_paths()[k] if irreps_out[c].ir == Irrep(0, 1))

    # ---------------------------------------------------------------------------------------
    # Parameters
    # ---------------------------------------------------------------------------------------
    def latent_input_widths(self) -> list[int]:
        """Input width of the latent MLP of every layer k = 0 … L−1 (it makes x^{k+1})."""
        U, F, widths = self.num_tensor_features, self.latent_width, []
        for k in range(self.num_layers):
            if self.latent_resnet:
                widths.append(F + U * self.num_scalars(k))
            else:
                widths.append(F + k * self.latent_dims[-1] + U * self.num_scalars(k))
        return widths

    def _latent_out_width(self, k: int) -> int:
        """Width of x^k."""
        return self.latent_width if k == 0 else self.latent_dims[-1]

    def _tensor_product_shapes(self) -> dict[str, tuple[int, ...]]:
        U, shapes = self.num_tensor_features, {}
        for k, ((_, irreps_out), paths) in enumerate(
            zip(self.layer_irreps(), self.layer_paths(), strict=True)
        ):
            P, mode = len(paths), self.tensors_mixing_mode
            if mode == "uuup":
                shapes[f"tp.{k}"] = (U, P)
            elif mode == "p":
                shapes[f"tp.{k}"] = (P,)
            elif mode == "uvvp":
                shapes[f"tp.{k}"] = (U, U, P)
            elif k < self.num_layers - 1:  # uuulin: the linear map after the product
                counts = [sum(1 for *_, c in paths if c == i) for i in range(len(irreps_out))]
                shapes[f"linear.{k}"] = (U * U * sum(counts),)
        return shapes

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter array."""
        B, T, D = self.num_bessels, self.num_types, self.embed_dim
        n_env = self.num_env_weights

        def mlp(prefix: str, dims: list[int]) -> dict[str, tuple[int, int]]:
            return {f"{prefix}.{i}": (a, b) for i, (a, b) in enumerate(pairwise(dims))}

        shapes: dict[str, tuple[int, ...]] = {
            "bessel_frequencies": (T * T, B) if self.per_edge_type_cutoff else (B,),
            "center_embed": (T, D // 2),
            "neighbor_embed": (T, D // 2),
            "basis_linear.0": (B, D),
        }
        shapes.update(mlp("two_body_latent", [D, *self.two_body_latent_dims]))
        for k in range(self.num_layers):
            n_out = 2 * n_env if k == 0 else n_env
            shapes.update(
                mlp(f"env_embed.{k}", [self._latent_out_width(k), *self.env_embed_dims, n_out])
            )
        shapes.update(self._tensor_product_shapes())
        for k, width in enumerate(self.latent_input_widths()):
            shapes.update(mlp(f"latent.{k}", [width, *self.latent_dims]))
        shapes.update(mlp("edge_eng", [self.latent_dims[-1], *self.edge_eng_dims, 1]))
        if self.latent_resnet:
            shapes["latent_resnet_coefficients"] = (self.num_layers + 1,)
        shapes["per_type_energy_scales"] = (T,)
        shapes["per_type_energy_shifts"] = (T,)
        return shapes

    # ---------------------------------------------------------------------------------------
    # Serialization
    # ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; ``Allegro2022Config.from_dict(config.to_dict()) == config``."""
        out = dataclasses.asdict(self)
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Allegro2022Config:
        """The config of a dict such as ``to_dict`` gives (e.g. read from JSON).

        Raises:
            ValueError: naming the field, as ``AllegroConfig.from_dict``: not a mapping, unknown
                or missing fields, values of the wrong type (strict bools and integers) or out
                of range.
        """
        return _config_from_dict(cls, data)
