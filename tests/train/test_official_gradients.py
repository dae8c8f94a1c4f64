"""The loss gradient against the official implementation: PyTorch autograd (double backward
through forces and stress) of an official nequip-allegro model on the same labelled batch
(fixture from scripts/make_official_train_fixture.py; torch is not needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allegro_ref.io.nequip import model_from_nequip, params_from_nequip_state_dict
from allegro_ref.train.data import Structure, build_graph, collate
from allegro_ref.train.loss import LossWeights, loss_and_gradient

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nequip_train_gradients.npz"
SYMBOLS = {8: "O", 29: "Cu"}


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as archive:
        return {name: archive[name] for name in archive.files}


def test_loss_and_gradient_match_official_autograd(fixture, backend):
    state = {k[len("state/") :]: v for k, v in fixture.items() if k.startswith("state/")}
    grads = {k[len("grad/") :]: v for k, v in fixture.items() if k.startswith("grad/")}
    model = model_from_nequip(json.loads(str(fixture["builder"])), state)
    model = type(model)(
        model.config, {k: backend.asarray(v) for k, v in model.params.items()}, model.dtype
    )
    # the official gradients, renamed by the importer (buffers are copied from the weights)
    theirs = params_from_nequip_state_dict({**state, **grads}, model.config)
    structures = []
    for i in range(3):
        s = {k.split("/")[1]: v for k, v in fixture.items() if k.startswith(f"structure{i}/")}
        structures.append(
            Structure(
                positions=s["positions"],
                species=tuple(SYMBOLS[int(z)] for z in s["numbers"]),
                cell=s["cell"],
                pbc=s["pbc"],
                energy=float(s["energy"]),
                forces=s["forces"],
                stress=s["stress"],
            )
        )
    c = model.config
    batch = collate(
        [build_graph(s, c.type_names, c.r_max) for s in structures],
        like=model.params["readout.0"],
    )
    result = loss_and_gradient(model, batch, LossWeights(*fixture["weights"]))
    assert result.loss == pytest.approx(float(fixture["loss"]), rel=1e-12)
    for name in ("energy_mse", "forces_mse", "stress_mse"):
        assert result.terms[name] == pytest.approx(float(fixture[f"terms/{name}"]), rel=1e-12)
    frozen = ("bessel_frequencies", "per_type_energy_scales", "per_type_energy_shifts")
    for name, g in result.gradients.items():
        if name not in frozen:  # buffers in the official model: no autograd gradient
            np.testing.assert_allclose(
                backend.to_numpy(g), theirs[name], rtol=0, atol=1e-11 * np.abs(theirs[name]).max()
            )
