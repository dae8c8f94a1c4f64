"""The Allegro model: hyperparameters (``AllegroConfig``) and the model with its forward and
hand-written backward (``AllegroModel``)."""

from .allegro import AllegroModel
from .config import AllegroConfig

__all__ = ["AllegroConfig", "AllegroModel"]
