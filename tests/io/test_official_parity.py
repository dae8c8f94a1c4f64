"""allegro_ref reproduces official nequip-allegro models (fixtures made by
scripts/make_nequip_fixtures.py): per-atom energies, forces and stress to 1e-10 relative in
float64 and 1e-5 in float32, on a molecule, a triclinic cell smaller than the cutoff and a bulk
cell, for configs covering l_max 1-3, 1-3 layers, parity on/off, path-channel coupling on/off,
per-type N̄, scales, shifts and cutoffs; and the intermediate edge features, stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allegro_ref.io import model_from_nequip
from allegro_ref.io.compare import allegro_ref_features, compare_features
from allegro_ref.model import AllegroModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "nequip_models.npz"
RTOL = {"float64": 1e-10, "float32": 1e-5}
# Official output key -> allegro_ref stage name.
STAGES = {
    "atomic_energy": "atomic_energies",
    "forces": "forces",
    "stress": "stress",
    "edge_embedding": "edge_embedding",
    "edge_features": "edge_features",
    "edge_energy": "edge_energies",
}


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _cases(stored: str = "atomic_energy") -> list[str]:
    """The random-model cases (the checkpoint case is tested in test_nequip.py) that store
    ``stored``."""
    with np.load(FIXTURE) as data:
        return [
            case
            for case in map(str, data["cases"])
            if not case.startswith("checkpoint/") and f"{case}/{stored}" in data.files
        ]


def random_model(fixture, name: str) -> AllegroModel:
    """The allegro_ref import of the official model ``name`` of the fixture."""
    head = f"{name}/state/"
    state = {k[len(head) :]: v for k, v in fixture.items() if k.startswith(head)}
    return model_from_nequip(json.loads(str(fixture[f"{name}/kwargs"])), state)


def official_and_ours(fixture, case: str, model: AllegroModel):
    """(official stages, allegro_ref stages) of one fixture case, on the official edges."""
    get = lambda key: fixture[f"{case}/{key}"]  # noqa: E731
    types = np.array([model.config.type_names.index(s) for s in get("symbols")])
    centers, neighbors = get("edge_index")
    positions, cell = get("positions"), get("cell")
    vectors = positions[neighbors] - positions[centers] + get("edge_cell_shift") @ cell
    np.testing.assert_allclose(vectors, get("edge_vectors"), rtol=0, atol=1e-12)
    periodic = bool(get("pbc").all())
    ours = allegro_ref_features(
        model, vectors, centers, neighbors, types, cell if periodic else None
    )
    theirs = {
        ours_name: get(key).reshape(ours[ours_name].shape)
        for key, ours_name in STAGES.items()
        if f"{case}/{key}" in fixture and ours_name in ours
    }
    return theirs, ours


@pytest.mark.parametrize("case", _cases())
def test_energies_forces_stress_match_official(fixture, case):
    model = random_model(fixture, case.split("/")[0])
    theirs, ours = official_and_ours(fixture, case, model)
    rtol = RTOL[model.dtype]
    # Elementwise, relative to each quantity's largest entry (so near-zero entries count).
    for stage in ("atomic_energies", "forces", "stress"):
        if stage not in theirs:
            assert not fixture[f"{case}/pbc"].all()
            continue
        scale = np.abs(theirs[stage]).max()
        np.testing.assert_allclose(
            ours[stage], theirs[stage], rtol=rtol, atol=rtol * scale, err_msg=stage
        )
    total = fixture[f"{case}/total_energy"].item()
    np.testing.assert_allclose(ours["atomic_energies"].sum(), total, rtol=rtol)


@pytest.mark.parametrize("case", _cases(stored="edge_features"))
def test_intermediate_features_match_official(fixture, case):
    """Stage by stage (edge embedding, edge features, edge energies, ...), where stored."""
    model = random_model(fixture, case.split("/")[0])
    theirs, ours = official_and_ours(fixture, case, model)
    comparison = compare_features(ours, theirs)
    assert {row.stage for row in comparison} == set(theirs)
    assert comparison.first_divergence(RTOL[model.dtype]) is None, f"\n{comparison}"


def test_fixture_covers_the_issue_list(fixture):
    """The configs cover l_max 1/2/3, 1-3 layers, parity and path-channel coupling on and off,
    per-type N̄ / scales / shifts / cutoffs, in both dtypes."""
    configs = [json.loads(str(v)) for k, v in fixture.items() if k.endswith("/kwargs")]
    seen = lambda key, default=None: {  # noqa: E731
        json.dumps(c.get(key, default), sort_keys=True) for c in configs
    }
    assert seen("l_max") == {"1", "2", "3"}
    assert seen("num_layers") == {"1", "2", "3"}
    assert seen("parity", True) == {"true", "false"}
    assert seen("tp_path_channel_coupling", True) == {"true", "false"}
    assert seen("model_dtype") == {'"float32"', '"float64"'}
    for key in ("avg_num_neighbors", "per_type_energy_scales", "per_type_energy_shifts"):
        assert any(isinstance(c.get(key), dict) for c in configs), key
    assert any(c.get("per_edge_type_cutoff") for c in configs)
    assert {c["model_dtype"] for c in configs if isinstance(c.get("avg_num_neighbors"), dict)} == {
        "float32",
        "float64",
    }
