r"""Equivariant linear map: channel mixing within each irrep type (e3nn's ``o3.Linear``).

Features use e3nn's "mul_ir" layout ``[..., irreps.dim]`` (entry ``(mul, ir)`` holds ``mul``
contiguous copies of ``ir``). For every pair of an input entry ``i`` and an output entry ``o``
carrying the same irrep (an *instruction*), with weights ``W_io`` ``[mul_i, mul_o]``:

    out_o[w, m] = Σ_{i -> o} α_o Σ_u W_io[u, w] x_i[u, m]

Mixing copies of the same irrep with scalars commutes with every rotation (Schur), so the map
is equivariant; different irreps never mix. Normalization, as e3nn: ``α_o = 1/√fan_in`` with
``fan_in = Σ_{i -> o} mul_i`` ("element", default) or ``mul_i · #(instructions into o)``
("path"), so unit-variance inputs and N(0, 1) weights give unit-variance outputs. No biases.
Weights: one flat vector ``[weight_numel]``, the ``W_io`` flattened row-major and concatenated
in instruction order (input entry outer, output entry inner), as e3nn stores them.

Backward: ``∂L/∂x_i[u, m] = Σ_o α_o Σ_w W_io[u, w] g_o[w, m]`` and
``∂L/∂W_io[u, w] = α_o Σ_{batch, m} x_i[u, m] g_o[w, m]``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import device, namespace
from ..o3 import Irreps

__all__ = ["EquivariantLinear"]

_PATH_NORMALIZATIONS = ("element", "path")


class _LinearInstruction(NamedTuple):
    i_in: int
    i_out: int
    alpha: float


class EquivariantLinear:
    """e3nn's ``o3.Linear(irreps_in, irreps_out)`` without biases (module docstring).

    Args:
        irreps_in: Irreps or string; entries whose irrep is absent from the output are ignored.
        irreps_out: Irreps or string; entries whose irrep is absent from the input are zero.
        path_normalization: "element" (default) or "path".

    Attributes:
        instructions: list of ``(i_in, i_out, alpha)``, one per (input entry, output entry)
            pair carrying the same irrep, in weight order.
        weight_numel: length of the flat weight vector.
    """

    def __init__(self, irreps_in: Any, irreps_out: Any, path_normalization: str = "element"):
        if path_normalization not in _PATH_NORMALIZATIONS:
            raise ValueError(
                f"path_normalization {path_normalization!r} is not one of {_PATH_NORMALIZATIONS}"
            )
        self.irreps_in, self.irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        self.path_normalization = path_normalization
        pairs = [
            (i_in, i_out)
            for i_in, (_, ir_in) in enumerate(self.irreps_in)
            for i_out, (_, ir_out) in enumerate(self.irreps_out)
            if ir_in == ir_out
        ]

        def fan_in(i_in: int, i_out: int) -> int:
            into = [i for i, o in pairs if o == i_out]
            if path_normalization == "element":
                return sum(self.irreps_in[i].mul for i in into)
            return self.irreps_in[i_in].mul * len(into)

        self.instructions = [
            _LinearInstruction(i_in, i_out, 1.0 / math.sqrt(max(fan_in(i_in, i_out), 1)))
            for i_in, i_out in pairs
        ]
        self.weight_numel = sum(
            self.irreps_in[ins.i_in].mul * self.irreps_out[ins.i_out].mul
            for ins in self.instructions
        )

    def __repr__(self) -> str:
        return (
            f"EquivariantLinear({self.irreps_in} -> {self.irreps_out} | "
            f"{self.weight_numel} weights)"
        )

    def init_weights(self, rng: np.random.Generator) -> np.ndarray:
        """Float64 NumPy weights ``[weight_numel]`` ~ N(0, 1), as e3nn's."""
        return rng.standard_normal(self.weight_numel)

    def forward(self, x: Any, weights: Any) -> tuple[Any, tuple]:
        """Apply the map to ``x`` ``[..., irreps_in.dim]`` with ``weights`` ``[weight_numel]``.

        Returns ``out`` ``[..., irreps_out.dim]`` and the cache for ``backward``.
        """
        xp = namespace(x, weights)
        self._check_inputs(x, weights)
        batch = tuple(x.shape[:-1])
        x = xp.reshape(x, (-1, self.irreps_in.dim))
        outputs = [None] * len(self.irreps_out)
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            # [n, mul_in, d] -> [n, d, mul_in] @ [mul_in, mul_out] -> [n, mul_out, d]
            x_in = xp.permute_dims(self._entry(xp, x, ins.i_in), (0, 2, 1))
            y = xp.permute_dims(x_in @ (ins.alpha * w), (0, 2, 1))
            outputs[ins.i_out] = y if outputs[ins.i_out] is None else outputs[ins.i_out] + y
        out = _concat_entries(xp, outputs, self.irreps_out, x)
        return xp.reshape(out, (*batch, self.irreps_out.dim)), (x, weights, batch)

    def backward(self, cache: tuple, grad_out: Any) -> tuple[Any, Any]:
        """Vector-Jacobian product (module docstring): ``(grad_x, grad_weights)`` from
        ``grad_out`` ``[..., irreps_out.dim]``."""
        x, weights, batch = cache
        xp = namespace(x, grad_out)
        if tuple(grad_out.shape) != (*batch, self.irreps_out.dim):
            raise ValueError(
                f"grad_out has shape {tuple(grad_out.shape)} but the forward output has shape "
                f"{(*batch, self.irreps_out.dim)}"
            )
        g = xp.reshape(grad_out, (-1, self.irreps_out.dim))
        grads = [None] * len(self.irreps_in)
        grad_w = []
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            mul_in, ir = self.irreps_in[ins.i_in]
            mul_out = self.irreps_out[ins.i_out].mul
            g_out = self._entry(xp, g, ins.i_out, self.irreps_out)  # [n, mul_out, d]
            x_in = self._entry(xp, x, ins.i_in)  # [n, mul_in, d]
            grad = (ins.alpha * w) @ g_out  # [mul_in, mul_out] @ [n, mul_out, d]
            grads[ins.i_in] = grad if grads[ins.i_in] is None else grads[ins.i_in] + grad
            # Σ_{n, m} x[n, u, m] g[n, w, m] as one product [mul_in, n d] @ [n d, mul_out]
            x_rows = xp.reshape(xp.permute_dims(x_in, (1, 0, 2)), (mul_in, -1))
            g_rows = xp.reshape(xp.permute_dims(g_out, (1, 0, 2)), (mul_out, -1))
            grad_w.append(xp.reshape(ins.alpha * (x_rows @ g_rows.T), (-1,)))
        grad_x = _concat_entries(xp, grads, self.irreps_in, x)
        grad_weights = (
            xp.concat(grad_w) if grad_w else xp.zeros((0,), dtype=x.dtype, device=device(x))
        )
        return xp.reshape(grad_x, (*batch, self.irreps_in.dim)), grad_weights

    def _entry(self, xp, x, index: int, irreps: Irreps | None = None):
        """Entry ``index`` of ``x`` ``[n, dim]`` as ``[n, mul, 2l+1]``."""
        irreps = self.irreps_in if irreps is None else irreps
        mul, ir = irreps[index]
        return xp.reshape(x[:, irreps.slices()[index]], (x.shape[0], mul, ir.dim))

    def _weight_views(self, xp, weights) -> list:
        views, offset = [], 0
        for ins in self.instructions:
            shape = (self.irreps_in[ins.i_in].mul, self.irreps_out[ins.i_out].mul)
            views.append(xp.reshape(weights[offset : offset + math.prod(shape)], shape))
            offset += math.prod(shape)
        return views

    def _check_inputs(self, x, weights) -> None:
        if x.ndim < 1 or x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but its last axis must be {self.irreps_in.dim}, "
                f"the dim of {self.irreps_in}"
            )
        if tuple(weights.shape) != (self.weight_numel,):
            raise ValueError(
                f"weights have shape {tuple(weights.shape)} but this linear map expects "
                f"({self.weight_numel},)"
            )
        if x.dtype != weights.dtype:
            raise ValueError(f"dtypes differ: x {x.dtype}, weights {weights.dtype}")


def _concat_entries(xp, pieces: list, irreps: Irreps, like) -> Any:
    """Concatenate per-entry arrays ``[n, mul, 2l+1]`` (None: zeros) into ``[n, irreps.dim]``."""
    n = like.shape[0]
    columns = [
        xp.zeros((n, entry.dim), dtype=like.dtype, device=device(like))
        if piece is None
        else xp.reshape(piece, (n, entry.dim))
        for piece, entry in zip(pieces, irreps, strict=True)
    ]
    if not columns:
        return xp.zeros((n, 0), dtype=like.dtype, device=device(like))
    return xp.concat(columns, axis=-1)
