"""allegro_ref: a readable, exact and fast reference implementation of the Allegro potential.

Sub-packages (imports flow downward only): ``backend`` <- ``o3`` <- ``nn`` <- ``model`` <-
``potential`` / ``ase``.
"""

__version__ = "0.1.0"
