"""The loss gradient of the 2022 family against the official implementation: PyTorch autograd
(double backward through forces and stress) of official nequip-allegro 0.3.0 models on the same
labelled structures (fixture from scripts/make_nequip_2022_train_fixture.py; torch is not
needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allegro_ref.io.nequip_2022 import _params_from_state, _Weights, model_from_nequip_2022
from allegro_ref.train.data import Structure, build_graph, collate
from allegro_ref.train.loss import LossWeights, loss_and_gradient

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nequip2022_train_gradients.npz"


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as archive:
        return {name: archive[name] for name in archive.files}


def _group(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


@pytest.mark.parametrize("name", ["A", "B"])
def test_loss_and_gradient_match_official_autograd(fixture, backend, name):
    data = _group(fixture, f"{name}/")
    state, official = _group(data, "state/"), _group(data, "grad/")
    config = json.loads(str(data["meta/json"]))["config"]
    model = model_from_nequip_2022(config, state)
    model = type(model)(
        model.config, {k: backend.asarray(v) for k, v in model.params.items()}, model.dtype
    )
    # the official gradients under allegro_ref's names; buffers keep their values there
    as_gradients = _params_from_state(model.config, _Weights({**state, **official}))
    as_weights = _params_from_state(model.config, _Weights(state))
    trained = [n for n in as_gradients if not np.array_equal(as_gradients[n], as_weights[n])]
    assert len(trained) >= len(model.params) - 3  # all but the per-type scales and shifts (+ φ)
    structures = []
    for i in range(2):
        s = _group(data, f"structure{i}/")
        structures.append(
            Structure(
                positions=s["positions"],
                species=tuple(str(x) for x in s["species"]),
                cell=s["cell"],
                pbc=s["pbc"],
                energy=float(s["energy"]),
                forces=s["forces"],
                stress=s["stress"] if "stress" in s else np.full((3, 3), np.nan),
            )
        )
    c = model.config
    batch = collate([build_graph(s, c.type_names, c.r_max) for s in structures], like=model)
    result = loss_and_gradient(model, batch, LossWeights(*fixture["weights"]))
    assert result.loss == pytest.approx(float(data["loss"]), rel=1e-10)
    for term in ("energy_mse", "forces_mse", "stress_mse"):
        assert result.terms[term] == pytest.approx(float(data[f"terms/{term}"]), rel=1e-10)
    for key in trained:
        g = backend.to_numpy(result.gradients[key])
        reference = as_gradients[key]
        assert np.max(np.abs(g - reference)) <= 1e-10 * np.max(np.abs(reference)), key
