"""Differentiable building blocks of Allegro, each a forward and a hand-written backward (VJP).

Pattern: `out, cache = block_forward(...)` and `grads = block_backward(..., cache, grad_out)`.
e3nn's general `TensorProduct` and `EquivariantLinear`, which the model does not use, live in
`allegro_ref.nn.e3nn_compat`.
"""

from .environment import (
    EdgeGroups,
    EnvironmentDensityCache,
    environment_density_backward,
    environment_density_forward,
    group_edges,
)
from .mlp import mlp_backward, mlp_forward, mlp_init, silu
from .radial import (
    bessel_basis_backward,
    bessel_basis_forward,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
)
from .scatter import gather, gather_backward, scatter_sum, scatter_sum_backward
from .tensor_product import (
    EnvironmentTensorProduct,
    EnvironmentTensorProductCache,
    allowed_paths,
    coupling_tensor,
)

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
    "EdgeGroups",
    "EnvironmentDensityCache",
    "group_edges",
    "environment_density_forward",
    "environment_density_backward",
    "EnvironmentTensorProduct",
    "EnvironmentTensorProductCache",
    "allowed_paths",
    "coupling_tensor",
]
