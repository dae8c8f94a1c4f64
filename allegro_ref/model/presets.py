"""Named Allegro configurations: the models that the tests, benchmarks, scripts, examples and the
command line share, defined once.

Each preset is a function returning an `AllegroConfig`; keyword ``overrides`` replace any
field, e.g. ``presets.cu_benchmark(l_max=3)`` or ``presets.tiny(["H"], r_max=2.0)``.

| preset | species | r_max (Å) | l_max | layers | S | U | MLP widths (embed/latent/readout) |
|---|---|---:|---:|---:|---:|---:|---|
| `tiny` | O Cu | 3.5 | 2 | 2 | 8 | 4 | 8 / 8 / 8 |
| `cu_small` | Cu | 4.5 | 1 | 2 | 32 | 8 | 32 / 32 / 32 |
| `cu_benchmark` | Cu | 5.0 | 2 | 2 | 64 | 32 | 64 / 64 / 32 |
| `nequip_tutorial` | C H O | 5.0 | 1 | 2 | 64 | 32 | 64 / 64 / 64 |

S is the width of the scalar track, U the number of tensor channels; every preset has parity,
8 Bessel functions and cutoff exponent p = 6 (the defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import AllegroConfig

__all__ = ["cu_benchmark", "cu_small", "nequip_tutorial", "tiny"]


def tiny(type_names: Sequence[str] = ("O", "Cu"), **overrides: Any) -> AllegroConfig:
    """A model small enough for unit tests (a few hundred parameters): r_max 3.5 Å, l_max 2,
    two layers, S = 8, U = 4, every MLP hidden layer 8 wide."""
    fields: dict[str, Any] = dict(
        type_names=tuple(type_names),
        r_max=3.5,
        l_max=2,
        num_layers=2,
        num_scalar_features=8,
        num_tensor_features=4,
        scalar_embed_mlp_hidden_layers_width=8,
        allegro_mlp_hidden_layers_width=8,
        readout_mlp_hidden_layers_width=8,
    )
    return AllegroConfig(**{**fields, **overrides})


def cu_small(**overrides: Any) -> AllegroConfig:
    """The architecture of the shipped ``cu-emt`` model (``allegro_ref/pretrained/cu_emt.yaml``):
    Cu, r_max 4.5 Å, l_max 1, two layers, S = 32, U = 8, every MLP hidden layer 32 wide.

    Its N̄ = 30 and energy scale 0.5 give energies of a few eV per atom with random weights
    (``python -m allegro_ref md --random``, examples/lammps); training replaces them by the
    statistics of the data (benchmarks/bench_train.py).
    """
    fields: dict[str, Any] = dict(
        type_names=("Cu",),
        r_max=4.5,
        l_max=1,
        num_layers=2,
        num_scalar_features=32,
        num_tensor_features=8,
        scalar_embed_mlp_hidden_layers_width=32,
        allegro_mlp_hidden_layers_width=32,
        readout_mlp_hidden_layers_width=32,
        avg_num_neighbors=30.0,
        per_type_energy_scales=0.5,
    )
    return AllegroConfig(**{**fields, **overrides})


def cu_benchmark(l_max: int = 2, **overrides: Any) -> AllegroConfig:
    """The fcc copper model of docs/benchmarks.md (benchmarks/bench_potential.py): Cu, r_max
    5.0 Å, l_max 1, 2 or 3, two layers, S = 64, U = 32, MLP widths 64 / 64 / 32, N̄ = 42 (the
    neighbors of an fcc Cu atom within 5 Å)."""
    fields: dict[str, Any] = dict(
        type_names=("Cu",),
        r_max=5.0,
        l_max=l_max,
        num_layers=2,
        num_scalar_features=64,
        num_tensor_features=32,
        scalar_embed_mlp_hidden_layers_width=64,
        allegro_mlp_hidden_layers_width=64,
        readout_mlp_hidden_layers_width=32,
        avg_num_neighbors=42.0,
    )
    return AllegroConfig(**{**fields, **overrides})


def nequip_tutorial(**overrides: Any) -> AllegroConfig:
    """The model of the official nequip-allegro tutorial config (C, H, O; r_max 5.0 Å, l_max 1,
    two layers, S = 64, U = 32, every MLP hidden layer 64 wide, N̄ = 33), used for the ethanol
    rows of docs/benchmarks.md."""
    fields: dict[str, Any] = dict(
        type_names=("C", "H", "O"),
        r_max=5.0,
        l_max=1,
        num_layers=2,
        num_scalar_features=64,
        num_tensor_features=32,
        scalar_embed_mlp_hidden_layers_width=64,
        allegro_mlp_hidden_layers_width=64,
        readout_mlp_hidden_layers_width=64,
        avg_num_neighbors=33.0,
    )
    return AllegroConfig(**{**fields, **overrides})
