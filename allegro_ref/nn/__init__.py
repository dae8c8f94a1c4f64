"""Differentiable building blocks of Allegro, each a forward and a hand-written backward (VJP).

Pattern: `out, cache = block_forward(...)` and `grads = block_backward(..., cache, grad_out)`.
e3nn's general `TensorProduct` and `EquivariantLinear`, which the model does not use, live in
`allegro_ref.nn.e3nn_compat`.
"""

from .environment import (
    EdgeGroups,
    EnvironmentDensityCache,
    environment_density_backward,
    environment_density_backward_jvp,
    environment_density_forward,
    environment_density_jvp,
    group_edges,
)
from .mlp import (
    MlpCotangents,
    mlp_backward,
    mlp_backward_jvp,
    mlp_forward,
    mlp_init,
    mlp_jvp,
    silu,
)
from .radial import (
    BesselCache,
    bessel_basis_backward,
    bessel_basis_backward_jvp,
    bessel_basis_forward,
    bessel_basis_jvp,
    polynomial_cutoff_backward,
    polynomial_cutoff_forward,
    polynomial_cutoff_jvp,
)
from .scatter import gather, gather_backward, scatter_sum, scatter_sum_backward
from .tensor_product import (
    EnvironmentTensorProduct,
    EnvironmentTensorProductCache,
    EnvironmentTensorProductCotangents,
    allowed_paths,
    coupling_tensor,
)

__all__ = [
    "BesselCache",
    "bessel_basis_forward",
    "bessel_basis_backward",
    "bessel_basis_jvp",
    "bessel_basis_backward_jvp",
    "polynomial_cutoff_forward",
    "polynomial_cutoff_backward",
    "polynomial_cutoff_jvp",
    "mlp_init",
    "mlp_forward",
    "mlp_backward",
    "MlpCotangents",
    "mlp_jvp",
    "mlp_backward_jvp",
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
    "environment_density_jvp",
    "environment_density_backward_jvp",
    "EnvironmentTensorProduct",
    "EnvironmentTensorProductCache",
    "EnvironmentTensorProductCotangents",
    "allowed_paths",
    "coupling_tensor",
]
