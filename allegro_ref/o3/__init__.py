"""Group theory of O(3) on arrays: irreps, real spherical harmonics (with analytic gradients),
Wigner 3j symbols in the real basis and Wigner D matrices, all in e3nn's conventions
(see docs/conventions.md)."""

from ._irreps import Irrep, Irreps, MulIrrep
from ._spherical_harmonics import (
    spherical_harmonics,
    spherical_harmonics_backward,
    spherical_harmonics_forward,
    spherical_harmonics_jvp,
    spherical_harmonics_with_grad,
)
from ._wigner import wigner_3j, wigner_D

__all__ = [
    "Irrep",
    "Irreps",
    "MulIrrep",
    "wigner_3j",
    "wigner_D",
    "spherical_harmonics",
    "spherical_harmonics_with_grad",
    "spherical_harmonics_forward",
    "spherical_harmonics_backward",
    "spherical_harmonics_jvp",
]
