"""``AllegroConfig``: every hyperparameter of an Allegro model, and what follows from them.

Defaults are those of the official implementation (nequip-allegro 0.8.3 ``AllegroModel``) where it
has one. ``avg_num_neighbors``, which the official builder requires, defaults to 20.0 here: training
(``allegro_ref.train``) replaces it by the mean number of neighbors of the training data, and a
model built only to be looked at needs *some* value.

Derived quantities live here too, because they are pure functions of the hyperparameters: the
irreps of every tensor-track layer (with the official pruning), the table of per-edge-type
cutoffs, and the shape of every parameter.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from ..o3 import Irrep, Irreps

__all__ = ["AllegroConfig", "MAX_L_MAX", "MAX_NUM_BESSELS", "MAX_NUM_LAYERS", "MAX_NUM_TYPES"]

PerType = float | dict[str, float]

#: Largest `l_max` a config accepts (both families). The tensor products' coupling tables are
#: dense, `[n_paths, (l_max+1)², (l_max+1)², (l_max+1)²]` per layer (twice the irreps with
#: parity): about 0.7 GB at l_max 6 and 6 GB at 8, growing like l_max⁷, while published Allegro
#: models use l_max 1 to 3. The bound keeps a config (e.g. one read from a small file) from
#: asking for tens of GB.
MAX_L_MAX = 6
#: Largest `num_layers` (published models use 1 to 4; the widths of today's latent MLPs grow with
#: the number of layers).
MAX_NUM_LAYERS = 32
#: Largest number of species (the periodic table has 118; the per-edge-type tables are T × T).
MAX_NUM_TYPES = 1024
#: Largest number of Bessel functions (Allegro uses 8; the 2022 family's normalized basis samples
#: every function at 4000 radii to normalize it).
MAX_NUM_BESSELS = 1024

_INT_FIELDS = (
    "l_max",
    "num_layers",
    "num_scalar_features",
    "num_tensor_features",
    "num_bessels",
    "scalar_embed_mlp_hidden_layers_depth",
    "scalar_embed_mlp_hidden_layers_width",
    "allegro_mlp_hidden_layers_depth",
    "allegro_mlp_hidden_layers_width",
    "readout_mlp_hidden_layers_depth",
    "readout_mlp_hidden_layers_width",
    "radial_chemical_embed_dim",
)
_BOOL_FIELDS = ("parity", "bessel_trainable", "tp_path_channel_coupling")
_REAL_FIELDS = ("r_max", "polynomial_cutoff_p")
_POSITIVE_FIELDS = (
    "num_layers",
    "num_scalar_features",
    "num_tensor_features",
    "num_bessels",
    "scalar_embed_mlp_hidden_layers_width",
    "allegro_mlp_hidden_layers_width",
    "readout_mlp_hidden_layers_width",
)
_DEPTH_FIELDS = (
    "scalar_embed_mlp_hidden_layers_depth",
    "allegro_mlp_hidden_layers_depth",
    "readout_mlp_hidden_layers_depth",
)


# -------------------------------------------------------------------------------------------
# Checks shared by both config families (strict types: a bool is not an int, a string is not
# a bool or a number)
# -------------------------------------------------------------------------------------------
def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_integer(value: Any, name: str) -> int:
    """``value`` as a Python int; ``ValueError`` naming ``name`` unless it is an integer (a
    bool, a float or a string is not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({_type_name(value)})")
    return int(value)


def _check_boolean(value: Any, name: str) -> bool:
    """``value`` as a Python bool; ``ValueError`` naming ``name`` unless it is a bool (the
    string ``"false"`` and the number 0 are not)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be true or false, got {value!r} ({_type_name(value)})")
    return bool(value)


def _check_real(value: Any, name: str) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless it is a real number (a bool
    or a string is not)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({_type_name(value)})")
    try:
        return float(value)
    except OverflowError:  # an int beyond float64
        raise ValueError(f"{name} must be a number within float64's range") from None


def _check_field_types(config: Any, ints=(), bools=(), reals=()) -> None:
    """Strict types of a config's fields (None passes where the default is None): integers and
    bools are stored as Python ints and bools, reals are checked and kept as given."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for names, check in ((ints, _check_integer), (bools, _check_boolean)):
        for name in names:
            value = getattr(config, name)
            if not (value is None and defaults.get(name) is None):
                object.__setattr__(config, name, check(value, name))
    for name in reals:
        value = getattr(config, name)
        if not (value is None and defaults.get(name) is None):
            _check_real(value, name)  # kept as given (an int stays an int in to_dict)


def _check_type_names(config: Any) -> None:
    """``type_names`` as a tuple of distinct non-empty strings, at most ``MAX_NUM_TYPES``."""
    given = config.type_names
    ok = isinstance(given, list | tuple) and given and len(given) <= MAX_NUM_TYPES
    if not ok or not all(isinstance(n, str) and n for n in given):
        raise ValueError(
            f"type_names must be a non-empty list of at most {MAX_NUM_TYPES} names, got "
            f"{given!r}"
        )
    names = tuple(given)
    if len(set(names)) != len(names):
        raise ValueError(f"type_names has duplicates: {list(names)}")
    object.__setattr__(config, "type_names", names)


def _check_bounds(config: Any) -> None:
    """``0 <= l_max <= MAX_L_MAX``, ``num_layers <= MAX_NUM_LAYERS`` and ``num_bessels <=
    MAX_NUM_BESSELS`` (see their notes)."""
    if not 0 <= config.l_max <= MAX_L_MAX:
        raise ValueError(
            f"l_max must be in 0..{MAX_L_MAX}, got {config.l_max} (the tensor products' "
            f"coupling tables grow like l_max⁷)"
        )
    if config.num_layers > MAX_NUM_LAYERS:
        raise ValueError(f"num_layers must be <= {MAX_NUM_LAYERS}, got {config.num_layers}")
    if config.num_bessels > MAX_NUM_BESSELS:
        raise ValueError(f"num_bessels must be <= {MAX_NUM_BESSELS}, got {config.num_bessels}")


def _config_from_dict(cls: type, data: Any) -> Any:
    """``cls(**data)`` for a mapping of field names, with ``ValueError`` naming the problem: not
    a mapping, unknown or missing fields (then each field's own check)."""
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{cls.__name__}.from_dict needs a mapping of field names, got {_type_name(data)}"
        )
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
    required = [
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"{cls.__name__} fields {missing} are required")
    return cls(**data)


@dataclass(frozen=True)
class AllegroConfig:
    r"""Hyperparameters of an Allegro model (names follow the official ``AllegroModel``).

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
        scalar_embed_mlp_hidden_layers_depth: hidden layers of the MLP that maps the two-body
            embedding to the first scalar features.
        scalar_embed_mlp_hidden_layers_width: width of those hidden layers.
        allegro_mlp_hidden_layers_depth: hidden layers of the latent MLP of every layer.
        allegro_mlp_hidden_layers_width: width of those hidden layers.
        readout_mlp_hidden_layers_depth: hidden layers of the MLP giving the edge energies.
        readout_mlp_hidden_layers_width: width of those hidden layers.
        tp_path_channel_coupling: one tensor-product weight per (channel, path) if True, per path
            if False.
        avg_num_neighbors: $\bar N$ in the $1/\sqrt{\bar N}$ normalizations; a number or a
            mapping type name -> number (then $\bar N$ of the center atom's type is used).
        per_type_energy_scales: $s_t$ in $E_i = b_{t_i} + s_{t_i} \tilde E_i$: a number (all
            types), a mapping type name -> number, or None (1).
        per_type_energy_shifts: $b_t$ in the same formula, eV: a number, a mapping, or None (0).
        per_edge_type_cutoff: optional smaller cutoffs: a mapping center type -> number, or
            center type -> {neighbor type -> number}; every value <= r_max; pairs not listed use
            r_max.

    Integers and bools are strict: `"false"` is not a bool, `True` and `2.0` are not integers
    (`ValueError` naming the field). `l_max` is at most `MAX_L_MAX` (6), `num_layers` at most
    `MAX_NUM_LAYERS`, `num_bessels` at most `MAX_NUM_BESSELS`, the species at most
    `MAX_NUM_TYPES` (the notes beside these constants say why).
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
        _check_type_names(self)
        _check_field_types(self, ints=_INT_FIELDS, bools=_BOOL_FIELDS, reals=_REAL_FIELDS)
        self._check_sizes()
        self._check_per_type()

    def _check_sizes(self) -> None:
        """Positive widths and counts, and the bounds of `_check_bounds`."""
        if not (math.isfinite(self.r_max) and self.r_max > 0):
            raise ValueError(f"r_max must be a positive number of Å, got {self.r_max!r}")
        for name in _POSITIVE_FIELDS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in _DEPTH_FIELDS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _check_bounds(self)
        if not (math.isfinite(self.polynomial_cutoff_p) and self.polynomial_cutoff_p > 0):
            raise ValueError(f"polynomial_cutoff_p must be > 0, got {self.polynomial_cutoff_p}")
        if self.embed_dim < 2 or self.embed_dim % 2:
            raise ValueError(
                f"radial_chemical_embed_dim must be even and positive (two halves: center and "
                f"neighbor type embeddings), got {self.embed_dim}"
            )

    def _check_per_type(self) -> None:
        """N̄ > 0, finite scales and shifts, and a valid table of per-edge-type cutoffs."""
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
        """A number or a {type name: number} mapping as a float64 array [T] in type order;
        ``ValueError`` naming ``name`` for anything else (a list, a string, a non-finite
        number, keys other than the type names)."""
        if value is None:
            if default is None:
                raise ValueError(f"{name} is required")
            value = default
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in self.type_names]
            missing = [t for t in self.type_names if t not in value]
            if unknown or missing:
                raise ValueError(
                    f"{name}: keys must be exactly the type_names {list(self.type_names)}; "
                    f"unknown {unknown}, missing {missing}"
                )
            out = np.array([_check_real(value[t], f"{name}[{t!r}]") for t in self.type_names])
        elif isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            raise ValueError(
                f"{name} must be a number or a mapping type name -> number, got {value!r}"
            )
        else:
            out = np.full(self.num_types, _check_real(value, name))
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return out

    def cutoff_matrix(self) -> np.ndarray:
        """r_cut(t_i, t_j) as a float64 array [T, T] in Å (center type i, neighbor type j)."""
        table = np.full((self.num_types, self.num_types), float(self.r_max))
        spec = self.per_edge_type_cutoff
        if spec is not None and not isinstance(spec, Mapping):
            raise ValueError(
                f"per_edge_type_cutoff must be a mapping center type -> number or -> "
                f"{{neighbor type -> number}}, got {spec!r}"
            )
        for center, given in (spec or {}).items():
            if center not in self.type_names:
                raise ValueError(
                    f"per_edge_type_cutoff: unknown center type {center!r}; "
                    f"type_names are {list(self.type_names)}"
                )
            targets = given if isinstance(given, Mapping) else dict.fromkeys(self.type_names, given)
            for neighbor, r_cut in targets.items():
                table[self.type_names.index(center), self._neighbor_index(center, neighbor)] = (
                    self._pair_cutoff(center, neighbor, r_cut)
                )
        return table

    def _neighbor_index(self, center: str, neighbor: Any) -> int:
        if neighbor not in self.type_names:
            raise ValueError(
                f"per_edge_type_cutoff[{center!r}]: unknown neighbor type {neighbor!r}; "
                f"type_names are {list(self.type_names)}"
            )
        return self.type_names.index(neighbor)

    def _pair_cutoff(self, center: str, neighbor: str, r_cut: Any) -> float:
        name = f"per_edge_type_cutoff[{center!r}][{neighbor!r}]"
        value = _check_real(r_cut, name)
        if not 0 < value <= self.r_max:
            raise ValueError(f"{name} = {r_cut} must be in (0, r_max = {self.r_max}]")
        return value

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
    def from_dict(cls, data: Mapping[str, Any]) -> AllegroConfig:
        """The config of a dict such as ``to_dict`` gives (e.g. read from JSON or YAML).

        Raises:
            ValueError: naming the field: ``data`` not a mapping, an unknown or missing field, a
                value of the wrong type (``"false"`` for a bool, ``2.0`` or ``True`` for an
                integer, a list where a mapping belongs) or out of range.
        """
        return _config_from_dict(cls, data)

