"""Import of official nequip-allegro models: hyperparameters and state_dict -> allegro_ref.

The official model (nequip 0.19 + nequip-allegro 0.8) stores its weights in a PyTorch
``state_dict``. This module converts, with NumPy only:

- the builder's keyword arguments (``AllegroModel(**kwargs)``, as in a training config's
  ``model:`` section) into an :class:`~allegro_ref.model.AllegroConfig`, refusing every option
  allegro_ref does not implement rather than silently ignoring it;
- the state_dict (tensors already converted to NumPy arrays) into allegro_ref's parameter dict.

Layouts: official linear weights are stored (in, out) and used as ``x @ (α W)``, exactly as
allegro_ref stores them, so no transpose is needed; the run-time constants α are not stored by
either code. The official ``w3j`` buffers (√(2l+1)·3j per path) are compared with allegro_ref's
own couplings as a check of conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..model import AllegroConfig, AllegroModel
from ..nn.tensor_product import allowed_paths
from ..o3 import wigner_3j

__all__ = ["config_from_nequip", "params_from_nequip_state_dict"]

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
    "per_type_energy_scales_trainable": False,
    "per_type_energy_shifts_trainable": False,
}
# Builder arguments that do not change the function the model computes.
_IGNORED = ("seed", "model_dtype", "compile_mode", "_target_")


def config_from_nequip(hyperparameters: Mapping[str, Any]) -> AllegroConfig:
    """An :class:`AllegroConfig` from the official ``AllegroModel`` builder arguments.

    Raises ``ValueError`` naming any option allegro_ref does not implement (a pair potential
    such as ZBL, another nonlinearity, another radial embedding, ...) or does not know.
    """
    args = dict(hyperparameters)
    config: dict[str, Any] = {}
    for key in _SAME_NAME:
        if key in args:
            config[key] = args.pop(key)
    for key, supported in _FIXED.items():
        if key in args:
            value = args.pop(key)
            if value != supported:
                raise ValueError(
                    f"official option {key}={value!r} is not supported by allegro_ref "
                    f"(only {supported!r})"
                )
    embed = dict(args.pop("radial_chemical_embed", {"_target_": _EMBED_TARGET}))
    if embed.pop("_target_", _EMBED_TARGET) != _EMBED_TARGET:
        raise ValueError(
            f"radial_chemical_embed must be {_EMBED_TARGET}; allegro_ref implements only the "
            "two-body Bessel scalar embedding"
        )
    config["num_bessels"] = embed.pop("num_bessels", 8)
    config["bessel_trainable"] = embed.pop("bessel_trainable", False)
    config["polynomial_cutoff_p"] = float(embed.pop("polynomial_cutoff_p", 6.0))
    if embed:
        raise ValueError(f"unsupported radial_chemical_embed options {sorted(embed)}")
    if "radial_chemical_embed_dim" in args:
        config["radial_chemical_embed_dim"] = args.pop("radial_chemical_embed_dim")
    for key in _IGNORED:
        args.pop(key, None)
    if args:
        raise ValueError(f"unsupported or unknown official model options {sorted(args)}")
    if "avg_num_neighbors" not in config or config["avg_num_neighbors"] is None:
        raise ValueError("the official model needs avg_num_neighbors; none was given")
    for key in ("per_type_energy_scales", "per_type_energy_shifts"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            config[key] = float(config[key])
    return AllegroConfig(**config)


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
    state_dict: Mapping[str, np.ndarray], config: AllegroConfig
) -> dict[str, np.ndarray]:
    """allegro_ref parameters from an official state_dict (values as NumPy arrays).

    Keys may carry the ``model.func.`` / ``model.`` prefixes of the official wrappers. Raises
    ``ValueError`` for a missing key or a shape that does not match ``config``, and when the
    stored ``w3j`` couplings differ from allegro_ref's (a convention mismatch).
    """
    state = {}
    for key, value in state_dict.items():
        for prefix in ("model.func.", "func.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        state[key] = np.asarray(value, dtype=np.float64)

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ValueError(f"official state_dict has no {key!r}")
        return state[key]

    params: dict[str, np.ndarray] = {
        "bessel_frequencies": take("radial_chemical_embed.bessel_encode.bessel_weights").reshape(
            -1
        ),
        "center_embed": take("radial_chemical_embed.type_embed.center_embed.weight"),
        "neighbor_embed": take("radial_chemical_embed.type_embed.neighbor_embed.weight"),
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
    shapes = config.parameter_shapes()
    for k in range(config.num_layers):
        params[f"tp.{k}"] = take(f"allegro.tps.{k}.weights").reshape(shapes[f"tp.{k}"])
    for ours, theirs in (
        ("per_type_energy_scales", "scales"),
        ("per_type_energy_shifts", "shifts"),
    ):
        key = f"per_type_energy_scale_shift.{theirs}"
        value = state.get(key)
        if value is None or value.size == 0:  # omitted scale/shift = identity
            value = np.full(1, 1.0 if theirs == "scales" else 0.0)
        params[ours] = np.broadcast_to(value.reshape(-1), (config.num_types,)).copy()
    _check_couplings(state, config)
    AllegroModel(config, params)  # validates names and shapes with a clear message
    return params


def _check_couplings(state: Mapping[str, np.ndarray], config: AllegroConfig) -> None:
    """Compare the official per-path couplings (``tps.k.w3j``, √(2l_c+1)·3j placed in dense
    [path, dim_in1, dim_in2, dim_out] blocks) with allegro_ref's 3j and path order."""
    for k, (irreps_in, irreps_out) in enumerate(config.layer_irreps()):
        key = f"allegro.tps.{k}.w3j"
        if key not in state:
            continue
        paths = allowed_paths(irreps_in, config.sh_irreps, irreps_out)
        slices = [irreps.slices() for irreps in (irreps_in, config.sh_irreps, irreps_out)]
        ours = np.zeros((len(paths), irreps_in.dim, config.sh_irreps.dim, irreps_out.dim))
        for p, (i1, i2, i_out) in enumerate(paths):
            l1, l2 = irreps_in[i1].ir.l, config.sh_irreps[i2].ir.l
            l_out = irreps_out[i_out].ir.l
            block = np.sqrt(2 * l_out + 1) * wigner_3j(l1, l2, l_out)
            ours[p, slices[0][i1], slices[1][i2], slices[2][i_out]] = block
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
