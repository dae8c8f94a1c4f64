"""Import 2022-era Allegro models: nequip 0.6 (nequip-allegro 0.3.0) configs and weights.

The models of the Allegro paper (arXiv 2204.05249) and most Allegro models trained in 2022–2024
were made with nequip 0.6.x and nequip-allegro ≤ 0.3.0. Their files:

- a **training directory** of ``nequip-train``: ``config.yaml`` (the YAML config) and
  ``best_model.pth`` (``torch.save`` of the model's ``state_dict``);
- a **deployed model** of ``nequip-deploy build``: a TorchScript archive whose ``extra/config``
  record holds the YAML config and whose pickled module tree holds the weights.

``load_nequip_2022(path)`` reads either with NumPy only (the restricted unpickler of
``allegro_ref.io._torch_archive``: nothing from the file runs, torch is not needed), and
``model_from_nequip_2022(config, state_dict)`` turns a config dict (recognised by its
``model_builders`` entry ``allegro.model.Allegro``) and the state_dict of the model it built
(torch key names -> arrays) into an ``Allegro2022Model``.

Sizes (widths, numbers of Bessel functions, type names) are read from the weights where they
are stored, and options from the config with nequip's key resolution (``name``, overridden by
``<module>_name``). Options allegro_ref does not implement are refused with a ``ValueError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._validation import CHEMICAL_SYMBOLS
from ..model.allegro_2022 import Allegro2022Model
from ..model.config_2022 import Allegro2022Config
from ._torch_archive import Opaque, TorchArchive

__all__ = ["is_nequip_2022_config", "load_nequip_2022", "model_from_nequip_2022"]

_ALLEGRO_BUILDER = "allegro.model.Allegro"
_OTHER_BUILDERS = {"PerSpeciesRescale", "StressForceOutput", "ForceOutput", "RescaleEnergyEtc"}
_NONLINEARITIES = {"silu": "silu", None: None, "null": None}


def is_nequip_2022_config(config: Any) -> bool:
    """Whether ``config`` is a nequip 0.6 config of an Allegro 0.3 model."""
    if not isinstance(config, Mapping):
        return False
    builders = config.get("model_builders")
    return isinstance(builders, (list, tuple)) and _ALLEGRO_BUILDER in builders


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def load_nequip_2022(path: str | os.PathLike) -> Allegro2022Model:
    """An ``Allegro2022Model`` (NumPy) from a nequip 0.6 training directory (``config.yaml`` +
    ``best_model.pth``) or a ``nequip-deploy build`` file of an Allegro 0.3 model."""
    name = os.fspath(path)
    if os.path.isdir(name):
        config = _read_yaml_file(os.path.join(name, "config.yaml"))
        weights = os.path.join(name, "best_model.pth")
        if not os.path.isfile(weights):
            raise ValueError(f"{name!r} has no best_model.pth (a nequip-train directory has one)")
        state = TorchArchive(weights).load()
        if not isinstance(state, Mapping):
            raise ValueError(f"{weights!r} is not a state_dict")
        return model_from_nequip_2022(config, dict(state))
    if not os.path.isfile(name):
        raise ValueError(f"no such file or directory: {name!r}")
    config, state = read_deployed_2022(name)
    return model_from_nequip_2022(config, state)


def is_nequip_2022_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a nequip 0.6 training directory or a deployed 0.3.0 Allegro model."""
    name = os.fspath(path)
    if os.path.isdir(name):
        return os.path.isfile(os.path.join(name, "config.yaml")) and os.path.isfile(
            os.path.join(name, "best_model.pth")
        )
    try:
        archive = TorchArchive(name)
        return "extra/config" in archive.names() and is_nequip_2022_config(
            _parse_yaml(archive.read_text("extra/config"))
        )
    except (ValueError, OSError):
        return False


def read_deployed_2022(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(config, state_dict) of a ``nequip-deploy build`` TorchScript file: the config from
    its ``extra/config`` record, the weights from the pickled module tree (``data.pkl``)."""
    archive = TorchArchive(path)
    if "extra/config" not in archive.names():
        raise ValueError(f"{path!r} is not a nequip-deploy file (no extra/config record)")
    config = _parse_yaml(archive.read_text("extra/config"))
    return config, _script_state_dict(archive.load("data.pkl"))


def _script_state_dict(module: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a pickled TorchScript module tree, by dotted attribute path (the names
    ``state_dict()`` gives: a TorchScript module pickles its parameters, buffers and
    submodules as plain attributes)."""
    if not isinstance(module, Opaque) or not isinstance(module.state, dict):
        return {}
    out: dict[str, np.ndarray] = {}
    for name, value in module.state.items():
        if isinstance(value, np.ndarray):
            out[prefix + name] = value
        elif isinstance(value, Opaque):
            out.update(_script_state_dict(value, f"{prefix}{name}."))
    return out


def _parse_yaml(text: str) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - PyYAML ships with the nequip extra
        raise ImportError("reading nequip 0.6 configs needs PyYAML (pip install pyyaml)") from error

    class Loader(yaml.SafeLoader):
        """Safe YAML that reads the ``!!python/...`` tags of nequip's saved configs without
        constructing anything: a tuple becomes a tuple, any other object an inert
        ``{"python": tag}`` record (its keys, e.g. e3nn irreps, are derived quantities)."""

    def python_tag(loader, suffix, node):
        if suffix == "tuple":
            return tuple(loader.construct_sequence(node))
        return {"python": suffix}

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", python_tag)
    config = yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    if not isinstance(config, dict):
        raise ValueError("the nequip config is not a YAML mapping")
    return config


def _read_yaml_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    with open(path, encoding="utf-8") as handle:
        return _parse_yaml(handle.read())


# ---------------------------------------------------------------------------------------------
# Config and weights -> model
# ---------------------------------------------------------------------------------------------
def model_from_nequip_2022(
    config: Mapping[str, Any], state_dict: Mapping[str, Any]
) -> Allegro2022Model:
    """An ``Allegro2022Model`` from a nequip 0.6 config (dict) and its model's state_dict.

    Args:
        config: the YAML config as a dict (``model_builders`` must contain
            ``allegro.model.Allegro``).
        state_dict: torch key -> array (NumPy arrays or anything ``np.asarray`` takes), the
            ``state_dict()`` of the model nequip built from ``config`` (``best_model.pth``).

    Returns:
        the model, in the weights' dtype (nequip's ``model_dtype``), with the species in
        nequip's type order (by atomic number) named by their chemical symbols.
    """
    if not is_nequip_2022_config(config):
        raise ValueError(
            f"not a nequip 0.6 Allegro config: model_builders must contain {_ALLEGRO_BUILDER!r}"
        )
    _check_builders(config)
    state = {k: np.asarray(v) for k, v in state_dict.items()}
    weights = _Weights(state)
    allegro_config = _config_from_nequip(config, weights)
    params = _params_from_state(allegro_config, weights)
    return Allegro2022Model(allegro_config, params, weights.dtype)


def _check_builders(config: Mapping[str, Any]) -> None:
    unknown = [b for b in config["model_builders"] if b not in _OTHER_BUILDERS | {_ALLEGRO_BUILDER}]
    if unknown:
        raise ValueError(
            f"unsupported nequip model builders {unknown}; supported: "
            f"{[_ALLEGRO_BUILDER, *sorted(_OTHER_BUILDERS)]}"
        )


class _Weights:
    """The state_dict with its nesting prefix (``model.model.func.`` or shorter) removed."""

    def __init__(self, state: dict[str, np.ndarray]):
        anchors = [k for k in state if k.endswith("typeembed.type_embeddings")]
        if len(anchors) != 1:
            raise ValueError("the state_dict is not that of an Allegro 0.3 model (no typeembed)")
        self.prefix = anchors[0][: -len("typeembed.type_embeddings")]
        self.state = state
        self.root = self.prefix.split("model.", 1)[0] if self.prefix.startswith("model.") else None
        self.dtype = str(self["allegro.latents.0._forward._weight_0"].dtype)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"unsupported model dtype {self.dtype}")

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.state

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self:
            raise ValueError(f"the state_dict has no {self.prefix + key!r}")
        return self.state[self.prefix + key]

    def mlp(self, prefix: str) -> list[np.ndarray]:
        out = []
        while f"{prefix}._forward._weight_{len(out)}" in self:
            out.append(self[f"{prefix}._forward._weight_{len(out)}"])
        if not out:
            raise ValueError(f"the state_dict has no MLP {self.prefix + prefix!r}")
        return out

    def global_scale(self) -> float:
        """g of RescaleOutput (``model.scale_by``; 1 when absent), refusing a global shift."""
        scale, shift = self.state.get("model.scale_by"), self.state.get("model.shift_by")
        if shift is not None and shift.size:
            raise ValueError("a global energy shift (global_rescale_shift) is not supported")
        return float(scale.reshape(-1)[0]) if scale is not None and scale.size else 1.0


def _option(config: Mapping[str, Any], name: str, default: Any, *prefixes: str) -> Any:
    """nequip's key resolution: ``<prefix>_name`` (most specific first), then ``name``."""
    for prefix in prefixes:
        if f"{prefix}_{name}" in config:
            return config[f"{prefix}_{name}"]
    return config.get(name, default)


def _nonlinearity(config: Mapping[str, Any], mlp: str) -> str | None:
    """``<mlp>_mlp_nonlinearity`` (``allegro_<mlp>_...`` first for Allegro's own MLPs)."""
    value = _option(config, "mlp_nonlinearity", "silu", f"allegro_{mlp}", mlp)
    if value not in _NONLINEARITIES:
        raise ValueError(f"{mlp}_mlp_nonlinearity {value!r} is not supported (silu or null)")
    return _NONLINEARITIES[value]


def _type_names(config: Mapping[str, Any]) -> list[str]:
    """nequip's type names: as built, or the chemical symbols sorted by atomic number."""
    if "type_names" in config:
        return [str(t) for t in config["type_names"]]
    symbols = config.get("chemical_symbols")
    if not symbols:
        raise ValueError("the config names no species (type_names or chemical_symbols)")
    return sorted((str(s) for s in symbols), key=CHEMICAL_SYMBOLS.index)


_REFUSED = {
    "norm_basis_mean_shift": False,
    "typeembed_radial_basis_mlp_latent_dimensions": [],
}


def _check_refused(config: Mapping[str, Any], weights: _Weights) -> None:
    for key, supported in _REFUSED.items():
        if key in config and config[key] != supported and config[key] is not None:
            raise ValueError(f"{key}: {config[key]!r} is not supported (only {supported!r})")
    if "typeembed.basis_mlp._forward._weight_1" in weights:
        raise ValueError("a radial basis MLP with hidden layers is not supported")
    if "radial_basis._mean" in weights and weights["radial_basis._mean"].size:
        raise ValueError("norm_basis_mean_shift is not supported")


def _bessel_options(config: Mapping[str, Any], weights: _Weights, type_names) -> dict[str, Any]:
    normalized = bool(config.get("use_original_normalized_basis", False))
    if normalized:
        inv_std = weights["radial_basis._inv_std"].astype(np.float64).reshape(-1)
        return {
            "normalized_basis": True,
            "num_bessels": int(inv_std.shape[0]),
            "normalized_basis_inv_std": tuple(inv_std.tolist()),
            "bessel_trainable": bool(_option(config, "trainable", True, "BesselBasis")),
        }
    omega = weights["radial_basis.bessel_weights"]
    options = {
        "num_bessels": int(omega.shape[-1]),
        "polynomial_cutoff_p": float(config.get("PolynomialCutoff_p", 6.0)),
        "bessel_trainable": bool(config.get("AllegroBesselBasis_trainable", True)),
    }
    if "radial_basis.per_edge_type_cutoff" in weights:
        table = weights["radial_basis.per_edge_type_cutoff"].astype(np.float64)
        options["per_edge_type_cutoff"] = {
            c: {n: float(table[i, j]) for j, n in enumerate(type_names)}
            for i, c in enumerate(type_names)
        }
    return options


def _energy_options(config: Mapping[str, Any], weights: _Weights, type_names) -> dict[str, Any]:
    options: dict[str, Any] = {"global_energy_scale": weights.global_scale()}
    for name, key in (("scales", "per_type_energy_scales"), ("shifts", "per_type_energy_shifts")):
        stored = f"per_species_rescale.{name}"
        if stored in weights and weights[stored].size:
            values = weights[stored].astype(np.float64).reshape(-1)
            if values.size == 1:
                values = np.full(len(type_names), values[0])
            options[key] = dict(zip(type_names, map(float, values), strict=True))
    return options


def _latent_options(config: Mapping[str, Any], weights: _Weights, num_layers: int):
    two_body = weights.mlp("allegro.latents.0")
    latent = weights.mlp("allegro.final_latent")
    env = weights.mlp("allegro.env_embed_mlps.0")
    edge = weights.mlp(_edge_eng_prefix(weights))
    coefficients = _option(config, "latent_resnet_coefficients", None, "allegro")
    return {
        "initial_scalar_embedding_dim": int(two_body[0].shape[0]),
        "two_body_latent_dims": tuple(int(w.shape[1]) for w in two_body),
        "latent_dims": tuple(int(w.shape[1]) for w in latent),
        "env_embed_dims": tuple(int(w.shape[1]) for w in env[:-1]),
        "edge_eng_dims": tuple(int(w.shape[1]) for w in edge[:-1]),
        "two_body_latent_nonlinearity": _nonlinearity(config, "two_body_latent"),
        "latent_nonlinearity": _nonlinearity(config, "latent"),
        "env_embed_nonlinearity": _nonlinearity(config, "env_embed"),
        "edge_eng_nonlinearity": _nonlinearity(config, "edge_eng"),
        "latent_resnet": bool(_option(config, "latent_resnet", True, "allegro")),
        "latent_resnet_coefficients": None if coefficients is None else tuple(coefficients),
        "latent_resnet_coefficients_learnable": bool(
            _option(config, "latent_resnet_coefficients_learnable", False, "allegro")
        ),
    }


def _edge_eng_prefix(weights: _Weights) -> str:
    return "edge_eng._module" if "edge_eng._module._forward._weight_0" in weights else "edge_eng"


def _avg_num_neighbors(config: Mapping[str, Any]) -> float | None:
    value = _option(config, "avg_num_neighbors", "auto", "allegro")
    if value == "auto":
        raise ValueError(
            "avg_num_neighbors is 'auto' in this config: the value nequip computed from the "
            "training set is not in it; pass the config nequip-train saved after building"
        )
    return None if value is None else float(value)


def _config_from_nequip(config: Mapping[str, Any], weights: _Weights) -> Allegro2022Config:
    _check_refused(config, weights)
    type_names = _type_names(config)
    num_layers = int(_option(config, "num_layers", None, "allegro"))
    return Allegro2022Config(
        type_names=tuple(type_names),
        r_max=float(config["r_max"]),
        l_max=int(config["l_max"]),
        parity=str(config["parity"]),
        num_layers=num_layers,
        num_tensor_features=int(_option(config, "num_tensor_features", None, "allegro")),
        tensors_mixing_mode=str(_option(config, "tensors_mixing_mode", "uuulin", "allegro")),
        weight_individual_irreps=bool(_option(config, "weight_individual_irreps", True, "allegro")),
        self_edge_tensor_product=bool(
            _option(config, "self_edge_tensor_product", False, "allegro")
        ),
        avg_num_neighbors=_avg_num_neighbors(config),
        normalize_edge_energy_sum=bool(
            _option(config, "normalize_edge_energy_sum", True, "edge_eng_sum")
        ),
        **_bessel_options(config, weights, type_names),
        **_latent_options(config, weights, num_layers),
        **_energy_options(config, weights, type_names),
    )


def _params_from_state(config: Allegro2022Config, weights: _Weights) -> dict[str, np.ndarray]:
    """allegro_ref's parameter names from the torch keys (docs: the 0.3.0 layout)."""
    L, shapes = config.num_layers, config.parameter_shapes()
    embeddings = weights["typeembed.type_embeddings"]
    omega_key = (
        "radial_basis.basis.bessel_weights"
        if config.normalized_basis
        else ("radial_basis.bessel_weights")
    )
    params = {
        "bessel_frequencies": weights[omega_key],
        "center_embed": embeddings[0],
        "neighbor_embed": embeddings[1],
        "basis_linear.0": weights["typeembed.basis_mlp._forward._weight_0"],
    }

    def mlp(name: str, key: str) -> None:
        params.update({f"{name}.{i}": w for i, w in enumerate(weights.mlp(key))})

    mlp("two_body_latent", "allegro.latents.0")
    for k in range(L):
        mlp(f"env_embed.{k}", f"allegro.env_embed_mlps.{k}")
        mlp(f"latent.{k}", "allegro.final_latent" if k == L - 1 else f"allegro.latents.{k + 1}")
        if f"tp.{k}" in shapes:
            params[f"tp.{k}"] = weights[f"allegro.tps.{k}.w"].reshape(shapes[f"tp.{k}"])
        if f"linear.{k}" in shapes:
            params[f"linear.{k}"] = weights[f"allegro.linears.{k}.w"]
    mlp("edge_eng", _edge_eng_prefix(weights))
    if config.latent_resnet:
        params["latent_resnet_coefficients"] = weights["allegro._latent_resnet_coefficients_params"]
    params["per_type_energy_scales"] = config.energy_scales()
    params["per_type_energy_shifts"] = config.energy_shifts()
    _check_w3j(config, weights)
    return params


def _check_w3j(config: Allegro2022Config, weights: _Weights) -> None:
    """The stored coupling buffers must have the sizes of the paths allegro_ref derived."""
    for k, ((irreps_in, irreps_out), paths) in enumerate(
        zip(config.layer_irreps(), config.layer_paths(), strict=True)
    ):
        key = f"allegro.tps.{k}._big_w3j"
        if key not in weights:
            continue
        buffer = weights[key]
        if config.tensors_mixing_mode == "uuulin":
            slots = sum(irreps_out[c].ir.dim for *_, c in paths)
            expected = {slots * irreps_in.dim * config.sh_irreps.dim, slots * irreps_in.dim}
        else:
            full = len(paths) * irreps_out.dim * irreps_in.dim
            expected = {full * config.sh_irreps.dim, full}
        if buffer.size not in expected:
            raise ValueError(
                f"layer {k}'s stored couplings {key} {buffer.shape} do not match the "
                f"{len(paths)} paths {irreps_in} x {config.sh_irreps} -> {irreps_out}"
            )
