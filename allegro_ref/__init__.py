"""allegro_ref: a readable, exact and fast reference implementation of the Allegro potential.

Layers (imports flow downward only): ``backend`` <- ``o3`` <- ``nn`` <- ``model`` <- ``io``
(official models) <- ``potential`` <- ``ase``, ``lammps``, ``train``, ``pretrained``; ``neighbors``
serves ``potential`` and everything above it.
"""

__version__ = "0.1.0"

__all__ = ["AllegroCalculator", "Potential", "__version__"]


def __getattr__(name: str):
    """Public classes, imported on first use: ``import allegro_ref`` stays light, and the ASE
    calculator needs the optional ``ase`` extra only when it is asked for."""
    if name == "Potential":
        from .potential import Potential

        return Potential
    if name == "AllegroCalculator":
        from .ase import AllegroCalculator

        return AllegroCalculator
    raise AttributeError(f"module 'allegro_ref' has no attribute {name!r}")
