"""Reading models made elsewhere: the official nequip-allegro implementation.

`load_nequip` reads official checkpoint and package files (no torch needed), and (through
`load_nequip_2022`) nequip 0.6 training directories and deployed nequip-allegro 0.3.0 models;
`allegro_ref.io.compare` compares allegro_ref's intermediate features with another
implementation's, stage by stage.
"""

from .nequip import (
    SUPPORTED_NEQUIP_VERSIONS,
    NequipFileError,
    NequipVersionWarning,
    check_nequip_versions,
    config_from_nequip,
    load_nequip,
    model_from_nequip,
    params_from_nequip_state_dict,
)
from .nequip_2022 import load_nequip_2022, model_from_nequip_2022

__all__ = [
    "SUPPORTED_NEQUIP_VERSIONS",
    "NequipFileError",
    "NequipVersionWarning",
    "check_nequip_versions",
    "config_from_nequip",
    "load_nequip",
    "model_from_nequip",
    "params_from_nequip_state_dict",
    "load_nequip_2022",
    "model_from_nequip_2022",
]
