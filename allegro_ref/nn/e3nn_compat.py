# ruff: noqa: E741  (l is the degree of a representation, as in every textbook)
r"""An e3nn compatibility layer: e3nn's `o3.TensorProduct` and `o3.Linear` on e3nn's feature
layout (e3nn 0.6.0), with hand-written backward passes, for checking other codes and for
teaching. The Allegro model does not use them (its product is
[`EnvironmentTensorProduct`][allegro_ref.nn.tensor_product.EnvironmentTensorProduct]).

Features use e3nn's "mul_ir" layout `[..., irreps.dim]`: entry `(mul, ir)` of an Irreps holds
`mul` contiguous copies of `ir` (`[mul, 2l+1]` flattened). As in e3nn, the edges work:
entries of multiplicity 0, an empty Irreps, instructions without weights (`weight_numel == 0`)
and an empty batch, in forward and backward.

**Tensor product** (`TensorProduct`, e3nn's `o3.TensorProduct`): couples entries of two
features through the real Wigner 3j symbol (`allegro_ref.o3.wigner_3j`) along a list of
instructions, with e3nn's connection modes and normalizations (class docstring).

**Equivariant linear map** (`EquivariantLinear`, e3nn's `o3.Linear` without biases): channel
mixing within each irrep type. For every pair of an input entry `i` and an output entry `o`
carrying the same irrep (an *instruction*), with weights $W_{io}$ `[mul_i, mul_o]`:

$$\mathrm{out}_{o,wm} = \sum_{i \to o} \alpha_o \sum_u W_{io,uw}\, x_{i,um}.$$

Mixing copies of the same irrep with scalars commutes with every rotation (Schur), so the map
is equivariant; different irreps never mix. Normalization, as e3nn:
$\alpha_o = 1/\sqrt{\mathrm{fan\_in}}$ with $\mathrm{fan\_in} = \sum_{i \to o} \mathrm{mul}_i$
("element", default) or
$\mathrm{mul}_i$ times the number of instructions into $o$ ("path"), so unit-variance inputs and
$N(0, 1)$ weights give unit-variance outputs. No biases. Weights: one flat vector
`[weight_numel]`, the $W_{io}$ flattened row-major and concatenated in instruction order (input
entry outer, output entry inner), as e3nn stores them.

Backward, with $g = \partial L/\partial \mathrm{out}$:
$\partial L/\partial x_{i,um} = \sum_o \alpha_o \sum_w W_{io,uw}\, g_{o,wm}$ and
$\partial L/\partial W_{io,uw} = \alpha_o \sum_{\text{batch}, m} x_{i,um}\, g_{o,wm}$.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, as_constant, device, namespace
from ..o3 import Irreps, wigner_3j
from .tensor_product import allowed_paths

__all__ = ["Instruction", "TensorProduct", "EquivariantLinear"]


# =============================================================================================
# e3nn's TensorProduct
# =============================================================================================

_MODES = ("uvw", "uvu", "uuu")
_IRREP_NORMALIZATIONS = ("component", "norm", "none")
_PATH_NORMALIZATIONS = ("element", "path", "none")


class _TensorProductCache(NamedTuple):
    x1: Array  # [n, irreps_in1.dim], the batch flattened
    x2: Array  # [n, irreps_in2.dim]
    weights: Array  # [weight_numel] or [n, weight_numel] (empty when none were given)
    batch: tuple[int, ...]
    weights_given: bool


class Instruction(NamedTuple):
    """One path of a ``TensorProduct``: entries ``i_in1 ⊗ i_in2 → i_out`` of the three Irreps,
    the connection ``mode``, whether it has learned weights, the user's ``path_weight``, the
    total factor ``alpha`` multiplying its 3j symbol, and the shape of its weights."""

    i_in1: int
    i_in2: int
    i_out: int
    mode: str
    has_weight: bool
    path_weight: float
    alpha: float
    weight_shape: tuple[int, ...]


@functools.cache
def _scaled_3j(l1: int, l2: int, l_out: int, alpha: float) -> np.ndarray:
    """``alpha · wigner_3j(l1, l2, l_out)`` as a ``[(2l1+1)(2l2+1), 2l_out+1]`` matrix."""
    c = alpha * wigner_3j(l1, l2, l_out)
    return c.reshape(c.shape[0] * c.shape[1], c.shape[2])


class TensorProduct:
    r"""e3nn's ``o3.TensorProduct`` on the e3nn "mul_ir" layout, with a hand-written backward.

    Features are ``[..., irreps.dim]`` with multiplicities: entry ``(mul, ir)`` of an Irreps
    holds ``mul`` contiguous copies (``[mul, 2l+1]`` flattened). Each instruction couples the
    copies ``x1[u]`` of entry ``i_in1`` and ``x2[v]`` of entry ``i_in2`` into entry ``i_out``,
    ``(x1[u] ⊗ x2[v])_k = Σ_ij C[i, j, k] x1[u]_i x2[v]_j`` with ``C = α · wigner_3j``:

    - ``"uvw"`` (fully connected): ``out[w] += Σ_{u v} W[u, v, w] (x1[u] ⊗ x2[v])``, weights
      ``[mul1, mul2, mul_out]``;
    - ``"uvu"``: ``out[u] += Σ_v W[u, v] (x1[u] ⊗ x2[v])``, weights ``[mul1, mul2]``,
      ``mul_out = mul1``;
    - ``"uuu"``: ``out[u] += W[u] (x1[u] ⊗ x2[u])``, weights ``[mul1]``, all multiplicities
      equal.

    An instruction without weights ("uvu", "uuu") uses W = 1. Normalization, exactly as e3nn:
    ``α = √(a · path_weight / n)`` with ``a = 2 l_out + 1`` ("component"), ``(2l1+1)(2l2+1)``
    ("norm") or 1 ("none"), and ``n`` the number of terms summed into an output component:
    summed over all instructions into the same output entry ("element"), this instruction's
    times the number of such instructions ("path"), or 1 ("none"); the terms per instruction
    are ``mul1 mul2`` (uvw), ``mul2`` (uvu), 1 (uuu). e3nn's ``in1_var``/``in2_var``/``out_var``
    (all 1 by default) are not supported.

    Weights: one flat vector, the instructions' weights concatenated in order, each flattened
    row-major: ``[weight_numel]`` shared by the batch (``shared_weights=True``), or
    ``[..., weight_numel]`` one set per sample.

    Backward: with ``P = (x1 ⊗ x2) @ C`` the weighted sum is linear in P and W, so
    ``∂L/∂W = Σ P g`` and ``∂L/∂P = W g`` (contracting the other indices); through
    ``P = Σ_ij C_ij x1_i x2_j``: ``∂L/∂x1_i = Σ_j (∂L/∂P C^T)_ij x2_j`` and symmetrically
    for x2.

    Args:
        irreps_in1: Irreps (or a string) of the first input.
        irreps_in2: Irreps (or a string) of the second input.
        irreps_out: Irreps (or a string) of the output.
        instructions: a mode ``"uvw"``, ``"uvu"`` or ``"uuu"`` (every allowed path, in
            ``allowed_paths`` order, whose multiplicities fit the mode, with weights), or a list
            of e3nn tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.
        irrep_normalization: "component" (default), "norm" or "none".
        path_normalization: "element" (default), "path" or "none".
        shared_weights: see Weights.

    Not chunked: memory grows as ``batch · mul1 · mul2 · (2l1+1)(2l2+1)`` per instruction.
    """

    def __init__(
        self,
        irreps_in1: Any,
        irreps_in2: Any,
        irreps_out: Any,
        instructions: str | Sequence[tuple],
        irrep_normalization: str = "component",
        path_normalization: str = "element",
        shared_weights: bool = True,
    ):
        self.irreps_in1, self.irreps_in2, self.irreps_out = (
            Irreps(irreps_in1),
            Irreps(irreps_in2),
            Irreps(irreps_out),
        )
        if irrep_normalization not in _IRREP_NORMALIZATIONS:
            raise ValueError(
                f"irrep_normalization {irrep_normalization!r} is not one of {_IRREP_NORMALIZATIONS}"
            )
        if path_normalization not in _PATH_NORMALIZATIONS:
            raise ValueError(
                f"path_normalization {path_normalization!r} is not one of {_PATH_NORMALIZATIONS}"
            )
        self.irrep_normalization = irrep_normalization
        self.path_normalization = path_normalization
        self.shared_weights = bool(shared_weights)
        raw = self._instruction_tuples(instructions)
        self.instructions = [self._instruction(raw_ins, raw) for raw_ins in raw]
        self.weight_numel = sum(
            math.prod(ins.weight_shape) for ins in self.instructions if ins.has_weight
        )

    def __repr__(self) -> str:
        return (
            f"TensorProduct({self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
            f"{len(self.instructions)} instructions | {self.weight_numel} weights)"
        )

    def init_weights(self, rng: np.random.Generator) -> np.ndarray:
        """Float64 NumPy shared weights ``[weight_numel]`` ~ N(0, 1), as e3nn's internal ones."""
        return rng.standard_normal(self.weight_numel)

    # ---- set-up ------------------------------------------------------------------------------

    def _instruction_tuples(self, instructions) -> list[tuple]:
        if isinstance(instructions, str):
            mode = instructions
            if mode not in _MODES:
                raise ValueError(f"mode {mode!r} is not one of {_MODES}")
            return [
                (i1, i2, i_out, mode, True, 1.0)
                for i1, i2, i_out in allowed_paths(
                    self.irreps_in1, self.irreps_in2, self.irreps_out
                )
                if self._multiplicities_fit(mode, i1, i2, i_out)
            ]
        out = []
        for ins in instructions:
            if len(ins) not in (5, 6):
                raise ValueError(
                    f"instruction {ins!r} must be (i_in1, i_in2, i_out, mode, has_weight"
                    f"[, path_weight])"
                )
            out.append(tuple(ins) if len(ins) == 6 else (*ins, 1.0))
        return out

    def _multiplicities_fit(self, mode: str, i1: int, i2: int, i_out: int) -> bool:
        mul1, mul2, mul_out = (
            self.irreps_in1[i1].mul,
            self.irreps_in2[i2].mul,
            self.irreps_out[i_out].mul,
        )
        return mode == "uvw" or (mul1 == mul_out and (mode == "uvu" or mul1 == mul2))

    def _instruction(self, raw_ins: tuple, raw: list[tuple]) -> Instruction:
        i1, i2, i_out, mode, has_weight, path_weight = raw_ins
        named = (("irreps_in1", i1, self.irreps_in1), ("irreps_in2", i2, self.irreps_in2))
        for name, index, irreps in (*named, ("irreps_out", i_out, self.irreps_out)):
            if not 0 <= index < len(irreps):
                raise ValueError(
                    f"instruction {raw_ins}: index {index} is out of range for {name} = {irreps}"
                )
        if mode not in _MODES:
            raise ValueError(f"instruction {raw_ins}: mode {mode!r} is not one of {_MODES}")
        (mul1, ir1), (mul2, ir2), (mul_out, ir_out) = (
            self.irreps_in1[i1],
            self.irreps_in2[i2],
            self.irreps_out[i_out],
        )
        if ir_out not in ir1 * ir2:
            raise ValueError(f"instruction {raw_ins}: {ir1} x {ir2} cannot produce {ir_out}")
        if not self._multiplicities_fit(mode, i1, i2, i_out):
            raise ValueError(
                f"instruction {raw_ins}: mode {mode!r} does not fit multiplicities "
                f"{mul1}x{ir1}, {mul2}x{ir2} -> {mul_out}x{ir_out}"
            )
        if mode == "uvw" and not has_weight:
            raise ValueError(f"instruction {raw_ins}: mode 'uvw' needs weights")

        def n_terms(ins: tuple) -> int:
            m1, m2 = self.irreps_in1[ins[0]].mul, self.irreps_in2[ins[1]].mul
            return {"uvw": m1 * m2, "uvu": m2, "uuu": 1}[ins[3]]

        a = {"component": ir_out.dim, "norm": ir1.dim * ir2.dim, "none": 1}[
            self.irrep_normalization
        ]
        siblings = [ins for ins in raw if ins[2] == i_out]
        n = {
            "element": sum(n_terms(ins) for ins in siblings),
            "path": n_terms(raw_ins) * len(siblings),
            "none": 1,
        }[self.path_normalization]
        alpha = math.sqrt(a * path_weight / n) if n > 0 else math.sqrt(a * path_weight)
        weight_shape = {"uvw": (mul1, mul2, mul_out), "uvu": (mul1, mul2), "uuu": (mul1,)}[mode]
        return Instruction(
            i1, i2, i_out, mode, bool(has_weight), float(path_weight), alpha, weight_shape
        )

    # ---- forward / backward ------------------------------------------------------------------

    def forward(self, x1: Array, x2: Array, weights: Array | None = None) -> tuple[Array, tuple]:
        """The product (class docstring).

        Args:
            x1: ``[..., irreps_in1.dim]``.
            x2: ``[..., irreps_in2.dim]``, the same leading shape.
            weights: ``[weight_numel]`` (shared) or ``[..., weight_numel]``; when
                ``weight_numel == 0``, None or an empty array of that shape.

        Returns:
            ``out`` ``[..., irreps_out.dim]`` and the cache for ``backward``.
        """
        xp = namespace(x1, x2)
        batch = self._check_inputs(x1, x2, weights)
        n = math.prod(batch)
        weights_given = weights is not None
        if not weights_given:  # no weights (weight_numel == 0): an empty array stands in
            shape = (self.weight_numel,) if self.shared_weights else (*batch, self.weight_numel)
            weights = xp.zeros(shape, dtype=x1.dtype, device=device(x1))
        x1, x2 = xp.reshape(x1, (n, self.irreps_in1.dim)), xp.reshape(x2, (n, self.irreps_in2.dim))
        if not self.shared_weights:
            weights = xp.reshape(weights, (n, self.weight_numel))
        outputs = [None] * len(self.irreps_out)
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            a, b = self._operands(xp, ins, x1, x2)
            y = _mix(xp, ins.mode, w, self._path_products(xp, ins, a, b))
            outputs[ins.i_out] = y if outputs[ins.i_out] is None else outputs[ins.i_out] + y
        out = _concat_entries(xp, outputs, self.irreps_out, x1)
        cache = _TensorProductCache(x1, x2, weights, batch, weights_given)
        return xp.reshape(out, (*batch, self.irreps_out.dim)), cache

    def backward(self, cache: _TensorProductCache, grad_out: Array) -> tuple[Array, Array, Array]:
        """Vector-Jacobian product (class docstring).

        Args:
            cache: from ``forward``.
            grad_out: ``[..., irreps_out.dim]``, ∂L/∂out.

        Returns:
            ``(grad_x1, grad_x2, grad_weights)`` shaped like the inputs (``grad_weights`` is
            None when the forward was given None).
        """
        x1, x2, weights, batch, weights_given = cache
        xp = namespace(x1, grad_out)
        if tuple(grad_out.shape) != (*batch, self.irreps_out.dim):
            raise ValueError(
                f"grad_out has shape {tuple(grad_out.shape)} but the forward output has shape "
                f"{(*batch, self.irreps_out.dim)}"
            )
        n_samples = x1.shape[0]
        g = xp.reshape(grad_out, (n_samples, self.irreps_out.dim))
        grads1, grads2 = [None] * len(self.irreps_in1), [None] * len(self.irreps_in2)
        grad_w = []
        slices_out = self.irreps_out.slices()
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            a, b = self._operands(xp, ins, x1, x2)
            mul_out, ir_out = self.irreps_out[ins.i_out]
            g_ins = xp.reshape(g[:, slices_out[ins.i_out]], (n_samples, mul_out, ir_out.dim))
            products = self._path_products(xp, ins, a, b)
            grad_products, grad_weight = _mix_backward(xp, ins.mode, w, products, g_ins)
            if ins.has_weight:
                if self.shared_weights:
                    grad_weight = xp.sum(grad_weight, axis=0)
                leading = grad_weight.shape[: -len(ins.weight_shape)]
                grad_w.append(xp.reshape(grad_weight, (*leading, math.prod(ins.weight_shape))))
            grad_a, grad_b = self._operands_backward(xp, ins, a, b, grad_products)
            for grads, index, grad in ((grads1, ins.i_in1, grad_a), (grads2, ins.i_in2, grad_b)):
                grads[index] = grad if grads[index] is None else grads[index] + grad
        grad_x1 = _concat_entries(xp, grads1, self.irreps_in1, x1)
        grad_x2 = _concat_entries(xp, grads2, self.irreps_in2, x1)
        grad_weights = None
        if weights_given:
            grad_weights = xp.concat(grad_w, axis=-1) if grad_w else xp.zeros_like(weights)
            if not self.shared_weights:
                grad_weights = xp.reshape(grad_weights, (*batch, self.weight_numel))
        return (
            xp.reshape(grad_x1, (*batch, self.irreps_in1.dim)),
            xp.reshape(grad_x2, (*batch, self.irreps_in2.dim)),
            grad_weights,
        )

    # ---- helpers -----------------------------------------------------------------------------

    def _operands(self, xp, ins: Instruction, x1, x2):
        """The entries of the instruction as ``[n, mul1, 2l1+1]`` and ``[n, mul2, 2l2+1]``."""
        (mul1, ir1), (mul2, ir2) = self.irreps_in1[ins.i_in1], self.irreps_in2[ins.i_in2]
        a = x1[:, self.irreps_in1.slices()[ins.i_in1]]
        b = x2[:, self.irreps_in2.slices()[ins.i_in2]]
        return (
            xp.reshape(a, (x1.shape[0], mul1, ir1.dim)),
            xp.reshape(b, (x2.shape[0], mul2, ir2.dim)),
        )

    def _coupling(self, ins: Instruction, like):
        ls = (self.irreps_in1[ins.i_in1].ir.l, self.irreps_in2[ins.i_in2].ir.l)
        return as_constant(_scaled_3j(*ls, self.irreps_out[ins.i_out].ir.l, ins.alpha), like=like)

    def _path_products(self, xp, ins: Instruction, a, b):
        """``P = (x1 ⊗ x2) @ C``: ``[n, mul, 2l_out+1]`` (uuu) or ``[n, mul1, mul2, 2l_out+1]``."""
        (n, mul1, d1), (_, mul2, d2) = a.shape, b.shape
        if ins.mode == "uuu":
            pairs = xp.reshape(a[:, :, :, None] * b[:, :, None, :], (n, mul1, d1 * d2))
        else:
            pairs = xp.reshape(
                a[:, :, None, :, None] * b[:, None, :, None, :], (n, mul1, mul2, d1 * d2)
            )
        return pairs @ self._coupling(ins, a)

    def _operands_backward(self, xp, ins: Instruction, a, b, grad_products):
        """∂L/∂a, ∂L/∂b from ∂L/∂P: ``∂L/∂(a_i b_j) = (∂L/∂P C^T)_ij``, then contract with the
        other operand."""
        grad_pairs = grad_products @ self._coupling(ins, a).T
        n, mul1, d1 = a.shape
        d2 = b.shape[2]
        if ins.mode == "uuu":
            g = xp.reshape(grad_pairs, (n, mul1, d1, d2))
            return xp.sum(g * b[:, :, None, :], axis=3), xp.sum(g * a[:, :, :, None], axis=2)
        g = xp.reshape(grad_pairs, (n, mul1, b.shape[1], d1, d2))
        grad_a = xp.sum(g * b[:, None, :, None, :], axis=(2, 4))
        grad_b = xp.sum(g * a[:, :, None, :, None], axis=(1, 3))
        return grad_a, grad_b

    def _weight_views(self, xp, weights) -> list:
        """Per instruction: its weights shaped ``weight_shape`` (shared) or ``[n, *shape]``,
        or None without weights."""
        views, offset = [], 0
        for ins in self.instructions:
            if not ins.has_weight:
                views.append(None)
                continue
            size = math.prod(ins.weight_shape)
            if self.shared_weights:
                views.append(xp.reshape(weights[offset : offset + size], ins.weight_shape))
            else:
                piece = weights[:, offset : offset + size]
                views.append(xp.reshape(piece, (weights.shape[0], *ins.weight_shape)))
            offset += size
        return views

    def _check_inputs(self, x1, x2, weights) -> tuple[int, ...]:
        for name, x, irreps in (("x1", x1, self.irreps_in1), ("x2", x2, self.irreps_in2)):
            if x.ndim < 1 or x.shape[-1] != irreps.dim:
                raise ValueError(
                    f"{name} has shape {tuple(x.shape)} but its last axis must be {irreps.dim}, "
                    f"the dim of {irreps}"
                )
        batch = tuple(x1.shape[:-1])
        if tuple(x2.shape[:-1]) != batch:
            raise ValueError(
                f"x1 has leading shape {batch} but x2 has {tuple(x2.shape[:-1])}; they must match"
            )
        expected = (self.weight_numel,) if self.shared_weights else (*batch, self.weight_numel)
        if self.weight_numel == 0:
            if weights is not None and tuple(weights.shape) != expected:
                raise ValueError(
                    f"this tensor product has no weights, but weights of shape "
                    f"{tuple(weights.shape)} were given (pass None or an empty {expected} array)"
                )
            if weights is None:
                return batch
        if weights is None or tuple(weights.shape) != expected:
            got = None if weights is None else tuple(weights.shape)
            raise ValueError(
                f"weights have shape {got} but this tensor product expects {expected} "
                f"(shared_weights={self.shared_weights})"
            )
        if not x1.dtype == x2.dtype == weights.dtype:
            raise ValueError(
                f"dtypes differ: x1 {x1.dtype}, x2 {x2.dtype}, weights {weights.dtype}"
            )
        return batch


def _mix(xp, mode: str, w, products):
    """Weighted sum of the path products over the input copies: ``[n, mul_out, 2l_out+1]``."""
    if mode == "uvw":  # out[w] = Σ_uv W[u, v, w] P[u, v]
        n, mul1, mul2, d = products.shape
        p = xp.permute_dims(xp.reshape(products, (n, mul1 * mul2, d)), (0, 2, 1))
        weight = xp.reshape(w, (*w.shape[:-3], mul1 * mul2, w.shape[-1]))
        return xp.permute_dims(p @ weight, (0, 2, 1))
    if mode == "uvu":  # out[u] = Σ_v W[u, v] P[u, v]
        return xp.sum(products if w is None else w[..., None] * products, axis=2)
    return products if w is None else w[..., None] * products  # uuu: out[u] = W[u] P[u]


def _mix_backward(xp, mode: str, w, products, g):
    """(∂L/∂P, ∂L/∂W per sample) of ``_mix``, from ``g = ∂L/∂out`` [n, mul_out, 2l_out+1]."""
    if mode == "uvw":  # ∂L/∂P[u, v] = Σ_w W[u, v, w] g[w];  ∂L/∂W[u, v, w] = P[u, v] · g[w]
        n, mul1, mul2, d = products.shape
        p = xp.reshape(products, (n, mul1 * mul2, d))
        weight = xp.reshape(w, (*w.shape[:-3], mul1 * mul2, w.shape[-1]))
        grad_p = xp.reshape(weight @ g, products.shape)
        grad_w = xp.reshape(p @ xp.matrix_transpose(g), (n, *w.shape[-3:]))
        return grad_p, grad_w
    if mode == "uvu":
        grad_w = xp.sum(products * g[:, :, None, :], axis=3)
        grad_p = g[:, :, None, :] if w is None else w[..., None] * g[:, :, None, :]
        return xp.broadcast_to(grad_p, products.shape), grad_w
    grad_w = xp.sum(products * g, axis=2)
    return (g if w is None else w[..., None] * g), grad_w


# =============================================================================================
# e3nn's Linear
# =============================================================================================

_LINEAR_PATH_NORMALIZATIONS = ("element", "path")


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
        if path_normalization not in _LINEAR_PATH_NORMALIZATIONS:
            raise ValueError(
                f"path_normalization {path_normalization!r} is not one of "
                f"{_LINEAR_PATH_NORMALIZATIONS}"
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

    def forward(self, x: Array, weights: Array) -> tuple[Array, tuple]:
        """Apply the map to ``x`` ``[..., irreps_in.dim]`` with ``weights`` ``[weight_numel]``.

        Returns ``out`` ``[..., irreps_out.dim]`` and the cache for ``backward``.
        """
        xp = namespace(x, weights)
        self._check_inputs(x, weights)
        batch = tuple(x.shape[:-1])
        x = xp.reshape(x, (math.prod(batch), self.irreps_in.dim))
        outputs = [None] * len(self.irreps_out)
        for ins, w in zip(self.instructions, self._weight_views(xp, weights), strict=True):
            # [n, mul_in, d] -> [n, d, mul_in] @ [mul_in, mul_out] -> [n, mul_out, d]
            x_in = xp.permute_dims(self._entry(xp, x, ins.i_in), (0, 2, 1))
            y = xp.permute_dims(x_in @ (ins.alpha * w), (0, 2, 1))
            outputs[ins.i_out] = y if outputs[ins.i_out] is None else outputs[ins.i_out] + y
        out = _concat_entries(xp, outputs, self.irreps_out, x)
        return xp.reshape(out, (*batch, self.irreps_out.dim)), (x, weights, batch)

    def backward(self, cache: tuple, grad_out: Array) -> tuple[Array, Array]:
        """Vector-Jacobian product (module docstring): ``(grad_x, grad_weights)`` from
        ``grad_out`` ``[..., irreps_out.dim]``."""
        x, weights, batch = cache
        xp = namespace(x, grad_out)
        if tuple(grad_out.shape) != (*batch, self.irreps_out.dim):
            raise ValueError(
                f"grad_out has shape {tuple(grad_out.shape)} but the forward output has shape "
                f"{(*batch, self.irreps_out.dim)}"
            )
        n = x.shape[0]
        g = xp.reshape(grad_out, (n, self.irreps_out.dim))
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
            x_rows = xp.reshape(xp.permute_dims(x_in, (1, 0, 2)), (mul_in, n * ir.dim))
            g_rows = xp.reshape(xp.permute_dims(g_out, (1, 0, 2)), (mul_out, n * ir.dim))
            grad_w.append(xp.reshape(ins.alpha * (x_rows @ g_rows.T), (mul_in * mul_out,)))
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
