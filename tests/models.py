"""The small Allegro model the tests share, with every deviation spelled out where it is used."""

from __future__ import annotations

from typing import Any

from allegro_ref.model import AllegroConfig, presets

TYPE_NAMES = ("O", "Cu")

# Distinct per-type values for the default species, so that a wrong type lookup shows.
_O_CU_PER_TYPE = dict(
    avg_num_neighbors={"O": 10.0, "Cu": 14.0},
    per_type_energy_scales={"O": 0.7, "Cu": 1.3},
    per_type_energy_shifts={"O": -1.5, "Cu": -3.0},
)


def tiny_config(
    type_names: tuple[str, ...] | list[str] = TYPE_NAMES, **overrides: Any
) -> AllegroConfig:
    """``presets.tiny``: r_max 3.5 Å, l_max 2, two layers, S = 8 scalar and U = 4 tensor
    features, every MLP hidden layer 8 wide.

    With the default species O and Cu it also sets distinct per-type N̄ (10, 14), energy scales
    (0.7, 1.3) and shifts (-1.5, -3.0 eV); other species get AllegroConfig's per-type defaults.
    ``overrides`` replace any field.
    """
    per_type = _O_CU_PER_TYPE if tuple(type_names) == TYPE_NAMES else {}
    return presets.tiny(type_names, **{**per_type, **overrides})
