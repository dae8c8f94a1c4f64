"""allegro_ref reproduces the official nequip-allegro model (fixtures made by
scripts/make_nequip_fixtures.py): per-atom energies, forces and stress to float64 rounding, and
float32 models to 1e-5, on a molecule, a triclinic cell smaller than the cutoff and a bulk cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allegro_ref.io import config_from_nequip, params_from_nequip_state_dict
from allegro_ref.model import AllegroModel

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nequip_models.npz"


@pytest.fixture(scope="module")
def fixture():
    return np.load(FIXTURE)


def _cases():
    with np.load(FIXTURE) as data:
        return [str(c) for c in data["cases"]]


def official_model(fixture, name: str) -> AllegroModel:
    kwargs = json.loads(str(fixture[f"{name}/kwargs"]))
    prefix = f"{name}/state/"
    state = {k[len(prefix) :]: fixture[k] for k in fixture.files if k.startswith(prefix)}
    config = config_from_nequip(kwargs)
    return AllegroModel(config, params_from_nequip_state_dict(state, config), kwargs["model_dtype"])


@pytest.mark.parametrize("case", _cases())
def test_energies_forces_stress_match_official(fixture, case):
    name = case.split("/")[0]
    model = official_model(fixture, name)
    get = lambda key: fixture[f"{case}/{key}"]  # noqa: E731
    types = np.array([model.config.type_names.index(s) for s in get("symbols")])
    centers, neighbors = get("edge_index")
    positions, cell = get("positions"), get("cell")
    vectors = positions[neighbors] - positions[centers] + get("edge_cell_shift") @ cell
    np.testing.assert_allclose(vectors, get("edge_vectors"), rtol=0, atol=1e-12)

    energies, cache = model.forward(vectors, centers, neighbors, types)
    grad = model.backward(cache, np.ones(len(types)))
    forces = np.zeros_like(positions)
    np.add.at(forces, centers, grad)
    np.add.at(forces, neighbors, -grad)

    rtol = 1e-10 if model.dtype == "float64" else 1e-5
    scale = np.abs(get("atomic_energy")).max()
    np.testing.assert_allclose(energies, get("atomic_energy")[:, 0], rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(energies.sum(), get("total_energy").item(), rtol=rtol)
    force_scale = np.abs(get("forces")).max()
    np.testing.assert_allclose(forces, get("forces"), rtol=rtol, atol=rtol * force_scale)
    if get("pbc").all():
        stress = vectors.T @ grad / abs(np.linalg.det(cell))
        stress_scale = np.abs(get("stress")).max()
        np.testing.assert_allclose(stress, get("stress")[0], rtol=rtol, atol=rtol * stress_scale)
