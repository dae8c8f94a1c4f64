"""The Allegro model: hyperparameters (``AllegroConfig``) and the model with its forward and
hand-written backward (``AllegroModel``), composed of the stage functions of
``allegro_ref.model.allegro`` (geometry, two-body embedding, initial tracks, Allegro layer,
readout; each forward with its backward), and the 2022-era family of the Allegro paper
(nequip-allegro 0.3.0: ``Allegro2022Config``, ``Allegro2022Model``, whose stages in
``allegro_ref.model.allegro_2022`` reuse the same blocks)."""

from .allegro import AllegroModel
from .allegro_2022 import Allegro2022Model
from .config import AllegroConfig
from .config_2022 import Allegro2022Config

__all__ = ["AllegroConfig", "AllegroModel", "Allegro2022Config", "Allegro2022Model"]
