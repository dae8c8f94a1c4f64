"""The loss and its parameter gradient: central finite differences of the loss (float64) for
the energy, force and stress terms separately and together, predictions against Potential,
float32, array-api-strict, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.model import AllegroModel
from allegro_ref.potential import Potential
from allegro_ref.train.data import build_graph, collate
from allegro_ref.train.loss import LossWeights, loss_and_gradient, predict
from tests.models import tiny_config
from tests.train import random_structures

STEP = 1e-3  # finite-difference step of the (O(1)) parameters


@pytest.fixture(scope="module")
def problem():
    config = tiny_config()
    graphs = [build_graph(s, config.type_names, config.r_max) for s in random_structures(1)]
    return AllegroModel.init(config, seed=4), collate(graphs)


def _loss_along(model, batch, weights, name, direction, t):
    shifted = dict(model.params)
    shifted[name] = model.params[name] + t * direction
    probe = AllegroModel(model.config, shifted, model.dtype)
    return loss_and_gradient(probe, batch, weights, gradient=False).loss


def _assert_gradient_matches_finite_differences(model, batch, weights, rng):
    """Per parameter array: the fourth-order central difference of L along (a) a random
    direction, error relative to ‖g‖‖d‖, and (b) the gradient itself, error relative to ‖g‖²
    — both must be below 1e-6 (plus the difference quotient's rounding)."""
    result = loss_and_gradient(model, batch, weights)
    assert set(result.gradients) == set(model.params)
    rounding = 1e-15 * abs(result.loss) / STEP
    for name, g in result.gradients.items():
        assert g.shape == model.params[name].shape and g.dtype == model.params[name].dtype
        for d in (rng.standard_normal(g.shape), g):
            f = [_loss_along(model, batch, weights, name, d, t * STEP) for t in (2, 1, -1, -2)]
            numeric = (8 * (f[1] - f[2]) - (f[0] - f[3])) / (12 * STEP)
            analytic = float(np.sum(g * d))
            scale = np.linalg.norm(g) * np.linalg.norm(d)
            assert abs(numeric - analytic) <= 1e-6 * scale + rounding, (
                f"{name}: finite differences {numeric!r} vs gradient {analytic!r} "
                f"(scale {scale:.3e})"
            )


@pytest.mark.parametrize(
    "weights",
    [LossWeights(1, 0, 0), LossWeights(0, 1, 0), LossWeights(0, 0, 1), LossWeights(1, 2, 3)],
    ids=["energy", "forces", "stress", "all"],
)
def test_gradient_matches_finite_differences(problem, weights):
    model, batch = problem
    _assert_gradient_matches_finite_differences(model, batch, weights, np.random.default_rng(7))


def test_loss_value_and_predictions_against_potential(problem):
    """Predictions of the batched pass equal Potential.compute on each structure alone, and the
    loss is the documented weighted sum of MSEs."""
    model, batch = problem
    structures = random_structures(1)
    potential = Potential(model)
    reference = [potential.compute(s.positions, list(s.species), s.cell, s.pbc) for s in structures]
    predictions = predict(model, batch)
    np.testing.assert_allclose(
        predictions["energy"], [r["energy"] for r in reference], rtol=1e-13, atol=0
    )
    np.testing.assert_allclose(
        predictions["forces"], np.concatenate([r["forces"] for r in reference]), atol=1e-12
    )
    for s, (r, stress) in enumerate(zip(reference, predictions["stress"], strict=True)):
        if r["stress"] is None:
            assert np.all(np.isnan(stress)), s
        else:
            np.testing.assert_allclose(stress, r["stress"], atol=1e-12)

    result = loss_and_gradient(model, batch, LossWeights(1.0, 2.0, 1.0), gradient=False)
    n = np.array([len(s.species) for s in structures])
    e_mse = np.mean(((predictions["energy"] - [s.energy for s in structures]) / n) ** 2)
    f_mse = np.mean((predictions["forces"] - np.concatenate([s.forces for s in structures])) ** 2)
    s_mse = np.mean([(predictions["stress"][k] - structures[k].stress) ** 2 for k in (0, 1)])
    np.testing.assert_allclose(
        [result.terms["energy_mse"], result.terms["forces_mse"], result.terms["stress_mse"]],
        [e_mse, f_mse, s_mse],
        rtol=1e-13,
    )
    np.testing.assert_allclose(result.loss, (e_mse + 2 * f_mse + s_mse) / 4, rtol=1e-13)


def test_float32_gradient_close_to_float64(problem):
    """The complex-step gradient of a float32 network (complex64) matches the float64 one."""
    model64, batch = problem
    model32 = AllegroModel(model64.config, model64.params, "float32")
    weights = LossWeights(1, 1, 1)
    g64 = loss_and_gradient(model64, batch, weights).gradients
    g32 = loss_and_gradient(model32, batch, weights).gradients
    for name, g in g64.items():
        assert g32[name].dtype == model32.params[name].dtype
        assert np.linalg.norm(g32[name] - g) <= 1e-4 * np.linalg.norm(g), name


def test_strict_backend_matches_numpy(problem, backend):
    model, batch = problem
    on_backend = AllegroModel(
        model.config, {k: backend.asarray(v) for k, v in model.params.items()}, model.dtype
    )
    graphs = [
        build_graph(s, model.config.type_names, model.config.r_max) for s in random_structures(1)
    ]
    moved = collate(graphs, like=on_backend.params["readout.0"])
    weights = LossWeights(1, 1, 1)
    expected = loss_and_gradient(model, batch, weights)
    result = loss_and_gradient(on_backend, moved, weights)
    assert result.loss == pytest.approx(expected.loss, rel=1e-13)
    for name, g in expected.gradients.items():
        np.testing.assert_allclose(
            backend.to_numpy(result.gradients[name]), g, rtol=1e-10, atol=1e-14
        )


def test_errors(problem):
    model, batch = problem
    with pytest.raises(ValueError, match="positive sum"):
        loss_and_gradient(model, batch, LossWeights(0, 0, 0))
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(-1, 1, 0).normalized()


def test_batch_without_stress_skips_the_stress_term(problem):
    """A batch of molecules under a stress weight: the stress term is absent (not NaN), the
    energy and force terms keep their weights relative to each other."""
    model, _ = problem
    molecule = random_structures(1)[2]
    only_molecule = collate([build_graph(molecule, model.config.type_names, model.config.r_max)])
    with_stress = loss_and_gradient(model, only_molecule, LossWeights(1, 1, 2))
    without = loss_and_gradient(model, only_molecule, LossWeights(1, 1, 0))
    assert np.isnan(with_stress.terms["stress_mse"])
    assert with_stress.loss == pytest.approx(without.loss / 2, rel=1e-14)
    for name, g in without.gradients.items():
        np.testing.assert_allclose(with_stress.gradients[name], g / 2, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("weights", [LossWeights(0, 1, 0), LossWeights(1, 2, 3)], ids=["F", "all"])
def test_forward_over_reverse_equals_complex_step(problem, weights):
    """The real-arithmetic forward-over-reverse gradient (``AllegroModel.backward_jvp``, what
    training uses) against the independent complex-step oracle, to float64 rounding."""
    model, batch = problem
    graphs = [
        build_graph(s, model.config.type_names, model.config.r_max) for s in random_structures(3)
    ]
    batch = collate(graphs)  # several structures, a molecule among them
    result = loss_and_gradient(model, batch, weights)
    oracle = loss_and_gradient(_WithoutJvp(model), batch, weights)
    assert result.loss == oracle.loss
    for name, g in oracle.gradients.items():
        assert np.linalg.norm(result.gradients[name] - g) <= 1e-12 * np.linalg.norm(g), name


class _WithoutJvp:
    """The model without ``backward_jvp``: the loss falls back to complex step (as for the 2022
    family)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        if name == "backward_jvp":
            raise AttributeError(name)
        return getattr(self._model, name)
