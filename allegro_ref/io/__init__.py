"""Reading models made elsewhere: the official nequip-allegro implementation."""

from .nequip import config_from_nequip, params_from_nequip_state_dict

__all__ = ["config_from_nequip", "params_from_nequip_state_dict"]
