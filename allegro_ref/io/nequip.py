"""Import of official nequip-allegro models (nequip 0.19 + nequip-allegro 0.8) into allegro_ref.

The official model is built by ``allegro.model.AllegroModel(**builder_kwargs)`` (the ``model:``
section of a training config) and holds its weights in a PyTorch ``state_dict``. This module
turns both into an `AllegroModel`:

- `load_nequip` reads a file written by the official tools: a Lightning training
  checkpoint (``.ckpt``) or a package (``.nequip.zip`` from ``nequip-package build``). Both are
  read with NumPy alone and without running any code from the file
  (`allegro_ref.io._torch_archive`); torch is not needed. Compiled models (``.nequip.pt2``
  from AOTInductor, ``.nequip.pth`` TorchScript) are refused: they hold compiled code, and the
  only way to evaluate them is to run it.
- `model_from_nequip` does the conversion from builder arguments and a state_dict (as
  NumPy arrays), e.g. of a model built in memory;
- `config_from_nequip` and `params_from_nequip_state_dict` are its two halves.

Every option allegro_ref does not implement (a ZBL pair potential, another nonlinearity, another
radial embedding, ...) is refused with a ``ValueError`` naming it, never ignored. Layouts:
official linear weights are stored (in, out) and used as ``x @ (α W)``, as allegro_ref stores
them, so no transpose is needed; the run-time constants α are stored by neither code. The
official buffers that are pure functions of the config (``w3j``: √(2l+1)·3j per path;
``_rmax_recip``: the per-edge-type cutoff table) are compared with allegro_ref's own as a check
of conventions.

Versions: files record the versions of the code that wrote them; anything other than
nequip 0.19.x with nequip-allegro 0.8.x triggers a `NequipVersionWarning` (the import is
verified only against those; older or newer releases may compute something else even when the
weights have the same names and shapes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..model import AllegroConfig, AllegroModel
from ..model.allegro_2022 import Allegro2022Model
from ..nn import coupling_tensor
from ._torch_archive import TorchArchive, module_state_dict

__all__ = [
    "SUPPORTED_NEQUIP_VERSIONS",
    "NequipFileError",
    "NequipVersionWarning",
    "load_nequip",
    "model_from_nequip",
    "config_from_nequip",
    "params_from_nequip_state_dict",
    "check_nequip_versions",
]

#: Package -> "major.minor" series the import is verified against (tests/fixtures).
SUPPORTED_NEQUIP_VERSIONS = {"nequip": "0.19", "allegro": "0.8"}

_BUILDER = "allegro.model.AllegroModel"
_EMBED_TARGET = "allegro.nn.TwoBodyBesselScalarEmbed"

# Builder arguments that map one-to-one onto AllegroConfig fields.
_SAME_NAME = (
    "type_names",
    "r_max",
    "l_max",
    "parity",
    "num_layers",
    "num_scalar_features",
    "num_tensor_features",
    "radial_chemical_embed_dim",
    "scalar_embed_mlp_hidden_layers_depth",
    "scalar_embed_mlp_hidden_layers_width",
    "allegro_mlp_hidden_layers_depth",
    "allegro_mlp_hidden_layers_width",
    "readout_mlp_hidden_layers_depth",
    "readout_mlp_hidden_layers_width",
    "tp_path_channel_coupling",
    "avg_num_neighbors",
    "per_type_energy_scales",
    "per_type_energy_shifts",
    "per_edge_type_cutoff",
)
# Builder arguments that allegro_ref accepts only at their official default value.
_FIXED = {
    "scalar_embed_mlp_nonlinearity": "silu",
    "allegro_mlp_nonlinearity": "silu",
    "readout_mlp_nonlinearity": "silu",
    "weight_individual_irreps": True,
    "forward_normalize": True,
    "pair_potential": None,
}
# Builder arguments that do not change the function the model computes: the seed of the initial
# weights (the weights come from the state_dict), the dtype (an argument of AllegroModel), the
# torch compile mode, whether the official model also differentiates (allegro_ref always can),
# and whether scales/shifts were trained (their values come from the state_dict).
_IGNORED = (
    "seed",
    "model_dtype",
    "compile_mode",
    "do_derivatives",
    "per_type_energy_scales_trainable",
    "per_type_energy_shifts_trainable",
)

# Lightning training modules whose evaluation weights are the checkpoint's "model.*" tensors
# (or, with EMA, its "ema.ema_weight_{i}" tensors), by class name.
_PLAIN_TRAINING_MODULES = ("NequIPLightningModule", "ConFIGLightningModule")
_EMA_TRAINING_MODULES = ("EMALightningModule", "EMAConFIGLightningModule")


class NequipFileError(ValueError):
    """An official file that cannot be imported: missing, damaged (truncated, flipped bytes),
    not an official Allegro model, or holding entries of the wrong type, size or value
    (non-finite weights). The message names the file and the entry."""


# Builder arguments whose type is checked before conversion: name -> (types, description).
_INTEGER_ARGUMENTS = (
    "l_max",
    "num_layers",
    "num_scalar_features",
    "num_tensor_features",
    "radial_chemical_embed_dim",
    "scalar_embed_mlp_hidden_layers_depth",
    "scalar_embed_mlp_hidden_layers_width",
    "allegro_mlp_hidden_layers_depth",
    "allegro_mlp_hidden_layers_width",
    "readout_mlp_hidden_layers_depth",
    "readout_mlp_hidden_layers_width",
)
_BOOLEAN_ARGUMENTS = ("parity", "weight_individual_irreps", "forward_normalize")
# Bounds far above any official model (l_max <= 6, widths <= 1024): a file may not make the
# import build coupling tables or weights of gigabytes from a few bytes of config.
_MAX_L = 12
_MAX_WIDTH = 1 << 16


class NequipVersionWarning(UserWarning):
    """A file written by nequip / nequip-allegro versions the import was not verified with."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def load_nequip(path: str | os.PathLike, model_key: str = "sole_model") -> AllegroModel:
    """An `AllegroModel` (NumPy parameters) from an official nequip-allegro file.

    Args:
        path: a training checkpoint ``*.ckpt`` (Lightning; the evaluation weights are taken:
            the EMA weights when the run used ``EMALightningModule``) or a package
            ``*.nequip.zip`` (``nequip-package build``).
        model_key: which model of the file (nequip files hold a dict of models; single-model
            runs name theirs ``"sole_model"``).

    Returns:
        the model, in the file's ``model_dtype``, with the file's type names, cutoffs,
            avg_num_neighbors, scales and shifts and every weight.

    Raises:
        NequipFileError: (a ``ValueError``) a missing or damaged file, a file that is not an
            official Allegro model, entries of the wrong type or size, non-finite weights;
            the message names the file and the entry.
        ValueError: a compiled model (``.nequip.pt2`` / ``.nequip.pth``) or options allegro_ref
            does not implement.
    """
    name = os.fspath(path)
    from .nequip_2022 import is_nequip_2022_path, load_nequip_2022

    if is_nequip_2022_path(name):  # nequip 0.6 training dir or nequip-deploy file (allegro 0.3)
        return load_nequip_2022(name)
    if name.endswith((".pt2", ".pth")):
        raise ValueError(
            f"{name!r} is a compiled nequip model (AOTInductor .nequip.pt2 or TorchScript "
            ".nequip.pth): it holds compiled code and can only be evaluated by running it. Load "
            "the training checkpoint (.ckpt) or the package (.nequip.zip) it was compiled from."
        )
    if not os.path.isfile(name):
        raise NequipFileError(f"no such file: {name!r}")
    if name.endswith(".nequip.zip"):
        read = _read_package
    elif name.endswith(".ckpt"):
        read = _read_checkpoint
    else:
        raise ValueError(
            f"{name!r}: expected a nequip training checkpoint (.ckpt) or a package (.nequip.zip)"
        )
    with _file_errors(name):
        builder_kwargs, state, versions = read(name, model_key)
        _check_entries(name, builder_kwargs, state, versions)
    check_nequip_versions(versions, repr(name))
    with _file_errors(name):
        return model_from_nequip(builder_kwargs, state)


@contextlib.contextmanager
def _file_errors(name: str) -> Iterator[None]:
    """Every error reading or converting the file ``name`` as a ``NequipFileError`` that names
    it: a ``ValueError`` (an unsupported option, a wrong shape, a damaged record) keeps its
    message; a ``TypeError`` and the like (an entry of the wrong type deep in the model
    description) says so."""
    try:
        yield
    except NequipFileError:
        raise
    except ValueError as error:
        message = str(error)
        raise NequipFileError(message if name in message else f"{name!r}: {message}") from error
    except (TypeError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as e:
        raise NequipFileError(
            f"{name!r}: its model description is malformed ({type(e).__name__}: {e!s:.200})"
        ) from e


def _check_entries(path: str, builder_kwargs: Any, state: Any, versions: Any) -> None:
    """Types, bounds and finiteness of what a file gave, before anything is built from it."""
    if not isinstance(builder_kwargs, Mapping):
        raise NequipFileError(
            f"{path!r}: the model builder arguments are {type(builder_kwargs).__name__}, "
            "not a mapping"
        )
    if versions is not None and not (
        isinstance(versions, Mapping) and all(isinstance(k, str) for k in versions)
    ):
        raise NequipFileError(f"{path!r}: versions is {versions!r:.80}, not a mapping")
    _check_builder_arguments(path, builder_kwargs)
    _check_weights(path, state)


def _check_builder_arguments(path: str, builder_kwargs: Mapping) -> None:
    """Integers within bounds, booleans that are bools, a list of type names, a positive
    finite ``r_max``."""
    for key in _INTEGER_ARGUMENTS:
        value = builder_kwargs.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_WIDTH
        ):
            raise NequipFileError(
                f"{path!r}: model argument {key} = {value!r:.80} is not an integer in "
                f"[0, {_MAX_WIDTH}]"
            )
    if isinstance(builder_kwargs.get("l_max"), int) and builder_kwargs["l_max"] > _MAX_L:
        raise NequipFileError(
            f"{path!r}: model argument l_max = {builder_kwargs['l_max']} is above {_MAX_L}"
        )
    for key in _BOOLEAN_ARGUMENTS:
        value = builder_kwargs.get(key)
        if value is not None and not isinstance(value, bool):
            raise NequipFileError(f"{path!r}: model argument {key} = {value!r:.80} is not a bool")
    names = builder_kwargs.get("type_names")
    if not (isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names)):
        raise NequipFileError(
            f"{path!r}: model argument type_names = {names!r:.80} is not a list of names"
        )
    r_max = builder_kwargs.get("r_max")
    if isinstance(r_max, bool) or not isinstance(r_max, int | float) or not 0 < r_max < np.inf:
        raise NequipFileError(
            f"{path!r}: model argument r_max = {r_max!r:.80} is not a positive number"
        )


def _check_weights(path: str, state: Any) -> None:
    """A mapping of names to finite numeric arrays."""
    if not isinstance(state, Mapping):
        raise NequipFileError(f"{path!r}: the weights are {type(state).__name__}, not a mapping")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise NequipFileError(
                f"{path!r}: weight {key!r:.80} is {type(value).__name__}, not a tensor"
            )
        if value.dtype.kind not in "fiub":
            raise NequipFileError(f"{path!r}: weight {key} has dtype {value.dtype}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise NequipFileError(f"{path!r}: weight {key} holds non-finite values (NaN or inf)")


def _read_checkpoint(path: str, model_key: str):
    """(builder kwargs, evaluation state_dict of the model, versions) of a Lightning checkpoint
    written by ``nequip-train``."""
    checkpoint = TorchArchive(path).load()
    hyper = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hyper, dict) or "model" not in hyper or "state_dict" not in checkpoint:
        raise NequipFileError(
            f"{path!r} is not a nequip training checkpoint (no model hyperparameters)"
        )
    info = _entry(path, hyper, "info_dict", "hyper_parameters.info_dict")
    training = _entry(path, info, "training_module", "info_dict.training_module")
    versions = info.get("versions")
    module = str(training.get("_target_", "")).rsplit(".", 1)[-1]
    state = checkpoint["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise NequipFileError(f"{path!r}: its state_dict is not a mapping of names to tensors")
    if not isinstance(hyper["model"], dict):
        raise NequipFileError(f"{path!r}: hyper_parameters.model is not a mapping")
    models = sorted({key.split(".")[1] for key in state if key.startswith("model.")})
    if models != [model_key]:
        raise ValueError(
            f"{path!r} holds the models {models}; allegro_ref reads single-model checkpoints "
            f"(model_key={model_key!r})"
        )
    head = f"model.{model_key}."
    model_state = {key[len(head) :]: value for key, value in state.items() if key.startswith(head)}
    if module in _EMA_TRAINING_MODULES:
        _use_ema_weights(model_state, state, hyper["model"], path)
    elif module not in _PLAIN_TRAINING_MODULES:
        raise ValueError(
            f"{path!r} was trained with {module or 'an unknown training module'!r}, whose "
            "evaluation weights allegro_ref does not know how to derive from the checkpoint; "
            "package it (nequip-package build) and load the .nequip.zip"
        )
    return hyper["model"], model_state, versions


def _use_ema_weights(model_state: dict, state: Mapping, builder_kwargs: Mapping, path: str):
    """Replace the parameters in ``model_state`` by the EMA weights, as the official
    ``EMALightningModule.evaluation_model`` does: ``ema.ema_weight_{i}`` is the i-th parameter
    in ``Module.parameters()`` order, i.e. the state_dict order without the buffers."""
    extra = state.get("ema._extra_state")
    if isinstance(extra, dict) and not extra.get("is_holding_ema_weights", True):
        raise ValueError(f"{path!r}: its EMA module does not hold the EMA weights (corrupted?)")
    ema = []
    while f"ema.ema_weight_{len(ema)}" in state:
        ema.append(state[f"ema.ema_weight_{len(ema)}"])
    embed = builder_kwargs.get("radial_chemical_embed") or {}
    buffers = {"_empty", "_rmax_recip", "w3j"}
    if not embed.get("bessel_trainable", False):
        buffers.add("bessel_weights")
    if not builder_kwargs.get("per_type_energy_scales_trainable", False):
        buffers.add("scales")
    if not builder_kwargs.get("per_type_energy_shifts_trainable", False):
        buffers.add("shifts")
    parameters = [key for key in model_state if key.rsplit(".", 1)[-1] not in buffers]
    shapes_match = len(parameters) == len(ema) and all(
        np.shape(model_state[key]) == np.shape(value)
        for key, value in zip(parameters, ema, strict=False)
    )
    if not shapes_match:
        raise ValueError(
            f"{path!r}: its {len(ema)} EMA weights do not match the model's {len(parameters)} "
            "parameters in order and shape"
        )
    model_state.update(zip(parameters, ema, strict=True))


def _read_package(path: str, model_key: str):
    """(builder kwargs, state_dict, versions) of a ``nequip-package`` file: the training config
    (``model/config.yaml``), the metadata (``model/package_metadata.txt``) and the weights of the
    pickled eager model, read without importing its packaged code."""
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - PyYAML comes with the nequip extra
        raise ImportError(
            "reading .nequip.zip packages needs PyYAML: pip install 'allegro_ref[nequip]'"
        ) from error
    archive = TorchArchive(path)
    if not archive.is_package:
        raise ValueError(f"{path!r} is not a torch.package archive (nequip-package build)")
    metadata = {"metadata": _yaml(path, archive, "model/package_metadata.txt", yaml)}
    config = {"config": _yaml(path, archive, "model/config.yaml", yaml)}
    config = _entry(path, config, "config", "config.yaml")
    training = _entry(path, config, "training_module", "config.yaml: training_module")
    builder_kwargs = training.get("model")
    if builder_kwargs is None:
        raise NequipFileError(f"{path!r}: its config.yaml has no training_module.model section")
    metadata = _entry(path, metadata, "metadata", "package_metadata.txt")
    models = archive.load("model/eager_model.pkl")
    state = getattr(models, "state", None)
    modules = (state if isinstance(state, dict) else {}).get("_modules")
    if not isinstance(modules, dict):
        raise NequipFileError(f"{path!r}: model/eager_model.pkl is not a pickled torch module")
    if model_key not in modules:
        raise ValueError(f"{path!r} holds the models {sorted(modules)}, not {model_key!r}")
    return builder_kwargs, module_state_dict(modules[model_key]), metadata.get("versions")


def _entry(path: str, parent: Mapping, key: str, name: str) -> dict:
    """``parent[key]`` as a dict (``{}`` when absent or null); a ``NequipFileError`` naming the
    entry when it is something else."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NequipFileError(f"{path!r}: {name} is {type(value).__name__}, not a mapping")
    return value


def _yaml(path: str, archive: TorchArchive, record: str, yaml: Any) -> Any:
    """A YAML record of a package, parsed safely."""
    try:
        return yaml.safe_load(archive.read_text(record))
    except yaml.YAMLError as error:
        raise NequipFileError(f"{path!r}: {record} is not valid YAML ({error!s:.200})") from error


def check_nequip_versions(versions: Mapping[str, str] | None, source: str = "the file") -> None:
    """Warn (`NequipVersionWarning`) unless ``versions`` (package -> version string, as
    nequip records them) are in `SUPPORTED_NEQUIP_VERSIONS`."""
    if not versions:
        warnings.warn(
            f"{source} does not record which nequip / nequip-allegro versions wrote it; the "
            f"import is verified for nequip {SUPPORTED_NEQUIP_VERSIONS['nequip']}.x and "
            f"nequip-allegro {SUPPORTED_NEQUIP_VERSIONS['allegro']}.x",
            NequipVersionWarning,
            stacklevel=2,
        )
        return
    for package, series in SUPPORTED_NEQUIP_VERSIONS.items():
        found = str(versions.get(package, "unknown"))
        if found.split(".")[:2] != series.split("."):
            warnings.warn(
                f"{source} was written by {package} {found}; the import is verified only for "
                f"{package} {series}.x (the model may compute something else): compare with "
                "the official model on a few structures "
                "(allegro_ref.io.compare.compare_with_official)",
                NequipVersionWarning,
                stacklevel=2,
            )


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
def model_from_nequip(
    builder_kwargs: Mapping[str, Any], state_dict: Mapping[str, Any]
) -> AllegroModel | Allegro2022Model:
    """An `AllegroModel` from the official builder arguments and state_dict.

    Args:
        builder_kwargs: the keyword arguments of `allegro.model.AllegroModel` (with or without
            its `_target_`); must include `model_dtype`. A nequip 0.6 config of an Allegro 0.3
            model (its `model_builders` name `allegro.model.Allegro`) is passed on to
            `model_from_nequip_2022` and gives an `Allegro2022Model`.
        state_dict: name -> array (NumPy, or anything `np.asarray` takes), as
            `GraphModel.state_dict()` gives it (prefixes `model.func.` accepted).
    """
    from .nequip_2022 import is_nequip_2022_config, model_from_nequip_2022

    if is_nequip_2022_config(builder_kwargs):
        return model_from_nequip_2022(builder_kwargs, state_dict)
    dtype = builder_kwargs.get("model_dtype")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"model_dtype must be 'float32' or 'float64', got {dtype!r}")
    config = config_from_nequip(builder_kwargs)
    params = params_from_nequip_state_dict(state_dict, config)
    trained = {
        name: _per_type(config, params[name])
        for name in ("per_type_energy_scales", "per_type_energy_shifts")
        if builder_kwargs.get(f"{name}_trainable", False)
    }
    if trained:  # the config records the trained values, not the initial ones
        config = dataclasses.replace(config, **trained)
    return AllegroModel(config, params, dtype)


def _per_type(config: AllegroConfig, values: np.ndarray) -> float | dict[str, float]:
    if np.all(values == values[0]):
        return float(values[0])
    return {name: float(v) for name, v in zip(config.type_names, values, strict=True)}


def config_from_nequip(builder_kwargs: Mapping[str, Any]) -> AllegroConfig:
    """An `AllegroConfig` from the official `AllegroModel` builder arguments.

    Raises `ValueError` naming any option allegro_ref does not implement (a pair potential
    such as ZBL, another nonlinearity, another radial embedding, another builder, ...) or does
    not know.
    """
    args = dict(builder_kwargs)
    target = args.pop("_target_", _BUILDER)
    if target != _BUILDER:
        raise ValueError(
            f"the model is built by {target!r}; allegro_ref imports only {_BUILDER!r} models "
            "(models wrapped by nequip.model.modify or loaded from another file by "
            "ModelFromCheckpoint / ModelFromPackage are not read)"
        )
    config = {key: args.pop(key) for key in _SAME_NAME if key in args}
    _pop_fixed_options(args)
    config.update(_radial_embedding_options(args.pop("radial_chemical_embed", None)))
    for key in _IGNORED:
        args.pop(key, None)
    if args:
        raise ValueError(f"unsupported or unknown official model options {sorted(args)}")
    if config.get("avg_num_neighbors") is None:
        raise ValueError("the official model needs avg_num_neighbors; none was given")
    for key in ("per_type_energy_scales", "per_type_energy_shifts"):
        if key in config:
            config[key] = _scale_or_shift(key, config[key])
    return AllegroConfig(**config)


def _pop_fixed_options(args: dict[str, Any]) -> None:
    """Remove the options allegro_ref accepts only at their official default (`_FIXED`) from
    `args`; a `ValueError` for any other value."""
    for key, supported in _FIXED.items():
        if key in args:
            value = args.pop(key)
            if value != supported:
                raise ValueError(
                    f"official option {key}={value!r} is not supported by allegro_ref "
                    f"(only {supported!r})"
                )


def _radial_embedding_options(embed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `AllegroConfig` fields of the official `radial_chemical_embed` section (only the
    two-body Bessel scalar embedding is implemented)."""
    embed = dict(embed or {"_target_": _EMBED_TARGET})
    if embed.pop("_target_", _EMBED_TARGET) != _EMBED_TARGET:
        raise ValueError(
            f"radial_chemical_embed must be {_EMBED_TARGET}; allegro_ref implements only the "
            "two-body Bessel scalar embedding"
        )
    options = {
        "num_bessels": embed.pop("num_bessels", 8),
        "bessel_trainable": embed.pop("bessel_trainable", False),
        "polynomial_cutoff_p": float(embed.pop("polynomial_cutoff_p", 6.0)),
    }
    if embed:
        raise ValueError(f"unsupported radial_chemical_embed options {sorted(embed)}")
    return options


def _scale_or_shift(key: str, value: Any) -> Any:
    """A per-type energy scale or shift as `AllegroConfig` takes it: None, a float or a dict
    type name -> number (a list is refused: its order would be ambiguous)."""
    if isinstance(value, list | tuple):
        raise ValueError(f"{key} must be a number or a dict type name -> number, got a list")
    if value is not None and not isinstance(value, dict):
        return float(value)
    return value


def _mlp_weights(state: Mapping[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """The weights ``{prefix}.mlp.{n}.weight`` in layer order (n = 0, 2, 4, ... with activations
    in between)."""
    found = {}
    head = f"{prefix}.mlp."
    for key, value in state.items():
        if key.startswith(head) and key.endswith(".weight"):
            found[int(key[len(head) : -len(".weight")])] = value
    if not found:
        raise ValueError(f"state_dict has no weights under {prefix!r}")
    return [found[n] for n in sorted(found)]


def params_from_nequip_state_dict(
    state_dict: Mapping[str, Any], config: AllegroConfig
) -> dict[str, np.ndarray]:
    """allegro_ref parameters (float64 NumPy) from an official state_dict.

    Keys may carry the `model.func.` / `model.` prefixes of the official wrappers. Raises
    `ValueError` for a missing key or a shape that does not match `config`, and when the
    stored `w3j` couplings or per-edge-type cutoffs differ from allegro_ref's (a convention
    mismatch).
    """
    state = {
        _without_wrapper_prefix(key): np.asarray(value, dtype=np.float64)
        for key, value in state_dict.items()
    }
    params: dict[str, np.ndarray] = {
        "bessel_frequencies": _take(
            state, "radial_chemical_embed.bessel_encode.bessel_weights"
        ).reshape(-1),
        "center_embed": _take(state, "radial_chemical_embed.type_embed.center_embed.weight"),
        "neighbor_embed": _take(state, "radial_chemical_embed.type_embed.neighbor_embed.weight"),
    }
    groups = {
        "basis_linear": "radial_chemical_embed.type_embed.basis_linear",
        "scalar_embed_mlp": "scalar_embed_mlp.mlp_module",
        "tensor_embed": "tensor_embed.env_embed_linear",
        "first_projection": "allegro.first_layer_env_embed_projection",
        "readout": "edge_readout.mlp_module",
    }
    groups.update({f"latent.{k}": f"allegro.latents.{k}" for k in range(config.num_layers)})
    for ours, theirs in groups.items():
        for i, weight in enumerate(_mlp_weights(state, theirs)):
            params[f"{ours}.{i}"] = weight
    params.update(_tensor_product_weights(state, config))
    params.update(_scales_and_shifts(state, config))
    _check_couplings(state, config)
    _check_cutoffs(state, config)
    AllegroModel(config, params)  # validates names and shapes with a clear message
    return params


def _without_wrapper_prefix(key: str) -> str:
    """A state_dict key without the first of the official wrappers' prefixes it starts with."""
    for prefix in ("model.func.", "func.", "model."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _take(state: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in state:
        raise ValueError(f"official state_dict has no {key!r}")
    return state[key]


def _tensor_product_weights(
    state: Mapping[str, np.ndarray], config: AllegroConfig
) -> dict[str, np.ndarray]:
    """`tp.{k}` of every layer, reshaped from the official flat `allegro.tps.{k}.weights`."""
    shapes = config.parameter_shapes()
    params = {}
    for k in range(config.num_layers):
        weights = _take(state, f"allegro.tps.{k}.weights")
        if weights.size != int(np.prod(shapes[f"tp.{k}"])):
            raise ValueError(
                f"allegro.tps.{k}.weights has shape {weights.shape}; the config gives "
                f"{shapes[f'tp.{k}']}"
            )
        params[f"tp.{k}"] = weights.reshape(shapes[f"tp.{k}"])
    return params


def _scales_and_shifts(
    state: Mapping[str, np.ndarray], config: AllegroConfig
) -> dict[str, np.ndarray]:
    """The per-type energy scales and shifts, one per type (an omitted one is the identity)."""
    params = {}
    for ours, theirs in (
        ("per_type_energy_scales", "scales"),
        ("per_type_energy_shifts", "shifts"),
    ):
        value = state.get(f"per_type_energy_scale_shift.{theirs}")
        if value is None or value.size == 0:  # omitted scale/shift = identity
            value = np.full(1, 1.0 if theirs == "scales" else 0.0)
        params[ours] = np.broadcast_to(value.reshape(-1), (config.num_types,)).copy()
    return params


def _check_cutoffs(state: Mapping[str, np.ndarray], config: AllegroConfig) -> None:
    """Compare the official table of reciprocal cutoffs (``edge_norm._rmax_recip``: a scalar,
    or [T·T] indexed center·T + neighbor) with allegro_ref's ``config.cutoff_matrix()``."""
    theirs = state.get("edge_norm._rmax_recip")
    if theirs is None:
        return
    ours = 1.0 / config.cutoff_matrix()
    theirs = np.broadcast_to(theirs.reshape(-1) if theirs.ndim else theirs, ours.size)
    if not np.allclose(theirs.reshape(ours.shape), ours, rtol=1e-12, atol=0):
        raise ValueError(
            "the official per-edge-type cutoffs (edge_norm._rmax_recip) differ from those of "
            f"the config (r_max={config.r_max}, per_edge_type_cutoff="
            f"{config.per_edge_type_cutoff}); refusing to import"
        )


def _check_couplings(state: Mapping[str, np.ndarray], config: AllegroConfig) -> None:
    """Compare the official per-path couplings (``tps.k.w3j``, √(2l_c+1)·3j placed in dense
    [path, dim_in1, dim_in2, dim_out] blocks) with allegro_ref's 3j and path order."""
    for k, (irreps_in, irreps_out) in enumerate(config.layer_irreps()):
        key = f"allegro.tps.{k}.w3j"
        if key not in state:
            continue
        ours = coupling_tensor(irreps_in, config.sh_irreps, irreps_out)
        theirs = state[key]
        if theirs.ndim == 3:  # "diagonal" storage (path, i = j, k) when every path has l_a = l_b
            diagonal = np.arange(theirs.shape[1])
            dense = np.zeros((theirs.shape[0], theirs.shape[1], theirs.shape[1], theirs.shape[2]))
            dense[:, diagonal, diagonal, :] = theirs
            theirs = dense
        if theirs.shape != ours.shape or not np.allclose(theirs, ours, rtol=0, atol=1e-6):
            raise ValueError(
                f"tensor product {k}: the official couplings {key} differ from allegro_ref's "
                "(a different 3j convention or path order); refusing to import"
            )
