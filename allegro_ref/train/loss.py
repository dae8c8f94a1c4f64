r"""The training loss and its exact gradient with respect to every parameter.

Loss of a batch of $B$ structures ($N$ atoms), with normalized weights
$c_E + c_F + c_\sigma = 1$ (the official `EnergyForceLoss` normalizes its coefficients the same
way; its default is 1 : 1):

$$
L = c_E \operatorname*{mean}_s \Big(\frac{E_s - E_s^\mathrm{ref}}{n_s}\Big)^2
  + c_F \operatorname*{mean}_{i,a} \big(F_{ia} - F_{ia}^\mathrm{ref}\big)^2
  + c_\sigma \operatorname*{mean}_{s,a,b} \big(\sigma_{sab} - \sigma_{sab}^\mathrm{ref}\big)^2,
$$

the per-atom energy MSE in (eV/atom)², the force MSE in (eV/Å)² and the stress MSE over the
structures that have a stress (0 if the batch has none).

Predictions come from one forward pass (atomic energies $E_i$) and one backward pass with
$\partial E / \partial E_i = 1$, which gives $g_e = \partial E / \partial r_e$ for every edge
$e = (i \to j)$; then $E_s = \sum_{i \in s} E_i$,
$F_k = \sum_{e:\,\mathrm{center}\ k} g_e - \sum_{e:\,\mathrm{neighbor}\ k} g_e$ and
$\sigma_s = \operatorname{sym}\big(\frac{1}{V_s} \sum_{e \in s} r_e \otimes g_e\big)$
(`allegro_ref._derivatives`).

**Gradient.** With the cotangents $a_i = \partial L / \partial E_{s(i)}$,
$v_k = \partial L / \partial F_k$ and $\Sigma_s = \partial L / \partial \sigma_s$ (all cheap, on
the predictions), the chain rule gives

$$
\frac{\partial L}{\partial \theta}
  = \frac{\partial}{\partial \theta} \Big[\sum_i a_i E_i\Big]
  + \frac{\partial}{\partial \theta} \Big[\sum_e w_e \cdot g_e\Big],
\qquad
w_e = v_{i(e)} - v_{j(e)} + \Sigma_{s(e)} \frac{r_e}{V_{s(e)}}
$$

(forces and stress are linear in the $g_e$: $\sum_k v_k \cdot F_k = \sum_e g_e \cdot (v_i - v_j)$,
and $\sum_{ab} \Sigma_{ab} \sigma_{ab} = \sum_e g_e \cdot \Sigma r_e / V$ for symmetric
$\Sigma$). The second term is a *mixed second derivative*, $\partial / \partial \theta$ of the
directional derivative of $E$ along $w$.

**Forward-over-reverse** (today's family, `AllegroModel.backward_jvp`). Let
$P_c(r) = \sum_i c_i \, \partial E_i / \partial \theta(r)$ be what the backward computes with
cotangent $c$. Its directional derivative as $r$ moves along $w$ and $c$ along $a$, at $c = 1$, is

$$
\frac{d}{d\varepsilon} P_{1 + \varepsilon a}(r + \varepsilon w) \Big|_{\varepsilon = 0}
  = \sum_i a_i \frac{\partial E_i}{\partial \theta}
  + \frac{\partial}{\partial \theta} \Big(w \cdot \frac{\partial E}{\partial r}\Big)
$$

(the $\theta$- and $r$-derivatives commute): the whole gradient at once. Every block has a
`*_jvp` (the tangent of its forward outputs from tangent inputs) and a `*_backward_jvp` (the
tangent of its backward: the product rule on each of its lines). The backward that computes
the predictions keeps its cotangents (`keep_cotangents=True`: the $\bar z$ of every product
rule), so what is left is one tangent forward pass and one backward pass of tangent
cotangents, in real arithmetic: about one more forward and one more backward. The tangents of
$\partial L / \partial r$ are never formed: no parameter lies below the edge vectors.

**Complex step** (the 2022 family, and the independent test oracle): every operation of the
model is complex-analytic, so for a small real $h$

$$
E(r + i h w) = E(r) + i h \, (w \cdot \partial E / \partial r) + O(h^2)
\quad\text{and}\quad
\frac{\partial E}{\partial \theta}(r + i h w) = P + i h Q + O(h^2),
$$

with $P = \partial E / \partial \theta(r)$ and
$Q = \partial / \partial \theta \, (w \cdot \partial E / \partial r)$ exactly what we need.
$\mathrm{Im}(\cdot)/h$ involves no subtraction, so it is exact to rounding for any tiny $h$
(unlike finite differences). One complex forward and backward pass gives the *whole* gradient:
backpropagating the cotangent $c_i = 1 + i h a_i$ (instead of 1) gives
$\mathrm{Im} \sum_i c_i \, \partial E_i / \partial \theta(r + i h w) = h (Q + \sum_i a_i P_i)
+ O(h^3)$.

Cost per step: one real forward + backward (predictions), then the tangent forward and the
tangent backward (forward-over-reverse; complex step instead costs a complex forward + backward,
each several times its real counterpart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._derivatives import (
    forces_from_edge_gradients,
    stress_from_virial,
    virials_from_edge_gradients,
)
from ..backend import namespace, scatter_sum
from ..nn import gather
from .data import Batch

__all__ = ["LossWeights", "LossResult", "predict", "loss_and_gradient"]

# Complex step h per network dtype (the imaginary part of the edge vectors is at most h Å):
# h² must vanish against the precision, and h·(any derivative) must stay far from underflow.
_STEP = {"float64": 1e-20, "float32": 1e-10}


@dataclass(frozen=True)
class LossWeights:
    """Relative weights of the loss terms (normalized to sum to 1, as the official trainer
    does): per-atom energy MSE, force MSE, stress MSE."""

    energy: float = 1.0
    forces: float = 1.0
    stress: float = 0.0

    def normalized(self) -> tuple[float, float, float]:
        values = (float(self.energy), float(self.forces), float(self.stress))
        if min(values) < 0 or sum(values) <= 0:
            raise ValueError(
                f"loss weights must be >= 0 with a positive sum, got energy={values[0]}, "
                f"forces={values[1]}, stress={values[2]}"
            )
        total = sum(values)
        return values[0] / total, values[1] / total, values[2] / total


@dataclass(frozen=True)
class LossResult:
    """Attributes:
    loss: L (float).
    terms: ``{"energy_mse", "forces_mse", "stress_mse"}`` floats (unweighted; stress_mse is
        NaN when no structure of the batch has a stress).
    predictions: ``{"energy" [B] eV, "forces" [N, 3] eV/Å, "stress" [B, 3, 3] eV/Å³}`` arrays.
    gradients: ∂L/∂θ, name -> array shaped like the parameter, or None.
    """

    loss: float
    terms: dict[str, float]
    predictions: dict[str, Any]
    gradients: dict[str, Any] | None


def predict(model, batch: Batch) -> dict[str, Any]:
    """Energies, forces and stresses of every structure of ``batch``, as
    ``LossResult.predictions`` (stress is NaN for structures that are not 3-D periodic)."""
    return _predict(model, batch)[0]


def _predict(model, batch: Batch, keep_cotangents: bool = False) -> tuple[dict[str, Any], Any, Any]:
    """(predictions, the model's forward cache, the backward's cotangents if
    ``keep_cotangents``, else None)."""
    xp = namespace(batch.edge_vectors)
    n_atoms, n_structures = batch.total_atoms, batch.num_structures
    atomic_energies, cache = model.forward(
        batch.edge_vectors, batch.centers, batch.neighbors, batch.atom_types
    )
    ones = xp.ones_like(atomic_energies)
    if keep_cotangents:
        g, cotangents = model.backward(cache, ones, keep_cotangents=True)
    else:
        g, cotangents = model.backward(cache, ones), None
    # the virial of each structure: the edges' terms summed over the structure of each edge
    virials = virials_from_edge_gradients(batch.edge_vectors, g, batch.edge_structure, n_structures)
    predictions = {
        "energy": scatter_sum(atomic_energies, batch.atom_structure, n_structures),
        "forces": forces_from_edge_gradients(g, batch.centers, batch.neighbors, n_atoms),
        "stress": stress_from_virial(virials, batch.volume),
    }
    return predictions, cache, cotangents


def loss_and_gradient(
    model, batch: Batch, weights: LossWeights = LossWeights(), gradient: bool = True
) -> LossResult:
    """The loss of ``batch`` (module docstring) and, if ``gradient``, ∂L/∂θ for every
    parameter of ``model`` (exact to rounding; forward-over-reverse for the force and stress
    terms, complex step for a model without ``backward_jvp``)."""
    xp = namespace(batch.edge_vectors)
    c_energy, c_forces, c_stress = weights.normalized()
    has_stress = xp.isfinite(batch.stress[:, 0, 0]) & xp.isfinite(batch.volume)
    n_stress = int(xp.sum(xp.astype(has_stress, xp.int64)))
    c_stress = c_stress if n_stress else 0.0  # e.g. a batch of molecules
    second_order = gradient and (c_forces > 0 or c_stress > 0)
    # forward-over-reverse reads the cotangents that the predictions' backward keeps
    forward_over_reverse = second_order and hasattr(model, "backward_jvp")
    predictions, cache, cotangents = _predict(model, batch, forward_over_reverse)
    B, N = batch.num_structures, batch.total_atoms

    energy_error = (predictions["energy"] - batch.energy) / batch.num_atoms  # [B], eV/atom
    force_error = predictions["forces"] - batch.forces  # [N, 3]
    stress_error = xp.where(
        has_stress[:, None, None], predictions["stress"] - batch.stress, xp.zeros_like(batch.stress)
    )
    terms = {
        "energy_mse": float(xp.mean(energy_error * energy_error)),
        "forces_mse": float(xp.mean(force_error * force_error)),
        "stress_mse": float(xp.sum(stress_error * stress_error)) / (9 * n_stress)
        if n_stress
        else float("nan"),
    }
    loss = c_energy * terms["energy_mse"] + c_forces * terms["forces_mse"]
    if c_stress > 0:
        loss += c_stress * terms["stress_mse"]
    if not gradient:
        return LossResult(loss, terms, predictions, None)

    # Cotangents of the predictions.
    energy_cotangent = (2.0 * c_energy / B) * energy_error / batch.num_atoms  # ∂L/∂E_s [B]
    atom_cotangent = gather(energy_cotangent, batch.atom_structure)  # [N]
    force_cotangent = (2.0 * c_forces / (3 * N)) * force_error  # ∂L/∂F [N, 3]
    directions = gather(force_cotangent, batch.centers) - gather(force_cotangent, batch.neighbors)
    if c_stress > 0:
        stress_cotangent = (2.0 * c_stress / (9 * n_stress)) * stress_error  # ∂L/∂σ [B, 3, 3]
        stress_cotangent = 0.5 * (stress_cotangent + xp.permute_dims(stress_cotangent, (0, 2, 1)))
        safe_volume = xp.where(has_stress, batch.volume, xp.ones_like(batch.volume))
        per_volume = gather(stress_cotangent / safe_volume[:, None, None], batch.edge_structure)
        directions = directions + xp.sum(per_volume * batch.edge_vectors[:, None, :], axis=-1)

    if not second_order:
        _, grads = model.backward(cache, atom_cotangent, parameter_gradients=True)
    elif forward_over_reverse:  # real arithmetic
        grads = model.backward_jvp(cache, cotangents, directions, atom_cotangent)
        grads = {name: xp.astype(grads[name], model.params[name].dtype) for name in model.params}
    else:  # the 2022 family: complex step
        grads = _complex_step_gradient(model, batch, directions, atom_cotangent)
    return LossResult(loss, terms, predictions, grads)


def _complex_step_gradient(model, batch: Batch, directions, atom_cotangent) -> dict[str, Any]:
    """∂/∂θ [Σ_i a_i E_i + Σ_e w_e·∂E/∂r_e] by one complex forward + backward (module
    docstring): directions w ``[E, 3]``, atom_cotangent a ``[N]``."""
    xp = namespace(directions)
    scale = float(xp.max(xp.abs(directions))) if directions.shape[0] else 0.0
    h = _STEP[model.dtype] / max(scale, 1.0)
    complex_dtype = xp.complex128
    vectors = xp.astype(batch.edge_vectors, complex_dtype) + (1j * h) * xp.astype(
        directions, complex_dtype
    )
    _, cache = model.forward(vectors, batch.centers, batch.neighbors, batch.atom_types)
    cotangent = xp.astype(xp.ones_like(atom_cotangent), complex_dtype) + (1j * h) * xp.astype(
        atom_cotangent, complex_dtype
    )
    _, grads = model.backward(cache, cotangent, parameter_gradients=True)
    return {name: xp.astype(xp.imag(g) / h, model.params[name].dtype) for name, g in grads.items()}
