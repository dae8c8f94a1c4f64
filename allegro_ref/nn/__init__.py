"""Differentiable building blocks of Allegro, each a forward and a hand-written backward (VJP).

Pattern: ``out, cache = block_forward(...)`` and ``grads = block_backward(..., cache, grad_out)``.
"""

from .linear import EquivariantLinear
from .mlp import mlp_backward, mlp_forward, mlp_init, silu
from .radial import (
    bessel_basis_backward,
    bessel_basis_forward,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
)
from .scatter import gather, gather_backward, scatter_sum, scatter_sum_backward
from .tensor_product import ChannelwiseTensorProduct, TensorProduct, allowed_paths

__all__ = [
    "bessel_basis_forward",
    "bessel_basis_backward",
    "polynomial_cutoff_forward",
    "polynomial_cutoff_backward",
    "mlp_init",
    "mlp_forward",
    "mlp_backward",
    "silu",
    "gather",
    "gather_backward",
    "scatter_sum",
    "scatter_sum_backward",
    "ChannelwiseTensorProduct",
    "TensorProduct",
    "allowed_paths",
    "EquivariantLinear",
]
