"""The Allegro model: hyperparameters (``AllegroConfig``) and the model with its forward and
hand-written backward (``AllegroModel``), composed of the stage functions of
``allegro_ref.model.allegro`` (geometry, two-body embedding, initial tracks, Allegro layer,
readout; each forward with its backward)."""

from .allegro import AllegroModel
from .config import AllegroConfig

__all__ = ["AllegroConfig", "AllegroModel"]
