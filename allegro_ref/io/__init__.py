"""Reading models made elsewhere: the official nequip-allegro implementation.

:func:`load_nequip` reads official checkpoint and package files (no torch needed);
:mod:`allegro_ref.io.compare` compares allegro_ref's intermediate features with another
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

__all__ = [
    "SUPPORTED_NEQUIP_VERSIONS",
    "NequipFileError",
    "NequipVersionWarning",
    "check_nequip_versions",
    "config_from_nequip",
    "load_nequip",
    "model_from_nequip",
    "params_from_nequip_state_dict",
]
