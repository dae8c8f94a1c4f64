"""The stage-by-stage comparison: differences are measured as documented, the first divergent
stage is found, mismatches are reported clearly, and allegro_ref's own features (forces and
stress included) agree with the Potential on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.io.compare import (
    Comparison,
    StageDifference,
    allegro_ref_features,
    compare_features,
)
from allegro_ref.model import AllegroModel
from allegro_ref.neighbors import edge_vectors, neighbor_list
from allegro_ref.potential import Potential
from tests.models import tiny_config

CONFIG = tiny_config(
    type_names=("H", "O"),
    r_max=3.0,
    avg_num_neighbors=5.0,
    per_type_energy_shifts={"H": -1.0, "O": 2.0},
)


def _structure(seed: int = 0):
    rng = np.random.default_rng(seed)
    cell = np.diag([3.2, 3.4, 3.6]) + 0.2 * rng.standard_normal((3, 3))
    positions = rng.uniform(0, 1, (5, 3)) @ cell
    types = np.array([0, 1, 0, 1, 1])
    return positions, cell, types


def _features(model, seed: int = 0):
    positions, cell, types = _structure(seed)
    centers, neighbors, shifts = neighbor_list(positions, cell, np.ones(3, bool), CONFIG.r_max)
    vectors = edge_vectors(positions, cell, centers, neighbors, shifts)
    return allegro_ref_features(model, vectors, centers, neighbors, types, cell)


def test_stages_in_forward_order():
    features = _features(AllegroModel.init(CONFIG, seed=1))
    assert list(features) == [
        "edge_lengths",
        "radial_basis",
        "edge_sh",
        "edge_embedding",
        "initial_tensors",
        "layer0.tensors",
        "layer0.scalars",
        "layer1.tensors",
        "layer1.scalars",
        "edge_features",
        "edge_energies",
        "atomic_energies",
        "forces",
        "stress",
    ]


def test_forces_and_stress_agree_with_the_potential(backend):
    model = AllegroModel.init(CONFIG, seed=2)
    moved = AllegroModel(CONFIG, {k: backend.asarray(v) for k, v in model.params.items()})
    features = _features(moved, seed=5)
    positions, cell, _ = _structure(seed=5)
    reference = Potential(model).compute(positions, ["H", "O", "H", "O", "O"], cell, True)
    np.testing.assert_allclose(features["atomic_energies"], reference["energies"], rtol=1e-13)
    for key in ("forces", "stress"):
        scale = np.abs(reference[key]).max()
        np.testing.assert_allclose(features[key], reference[key], rtol=0, atol=1e-13 * scale)


def test_identical_features_have_no_difference():
    features = _features(AllegroModel.init(CONFIG, seed=3))
    comparison = compare_features(features, {k: v.copy() for k, v in features.items()})
    assert [row.stage for row in comparison] == list(features)
    assert all(row.max_abs == 0 and row.max_rel == 0 for row in comparison)
    assert comparison.first_divergence(0.0) is None


def test_first_divergence_locates_a_perturbed_stage():
    model = AllegroModel.init(CONFIG, seed=4)
    ours = _features(model)
    perturbed = dict(model.params)
    perturbed["latent.1.0"] = perturbed["latent.1.0"] * (1 + 1e-6)
    theirs = _features(AllegroModel(CONFIG, perturbed))
    comparison = compare_features(ours, theirs)
    first = comparison.first_divergence(1e-12)
    assert first.stage == "layer1.scalars"
    assert 1e-9 < first.max_rel < 1e-4
    stages = [row.stage for row in comparison]
    before = stages[: stages.index("layer1.scalars")]
    assert all(row.max_abs == 0 for row in comparison if row.stage in before)


def test_relative_difference_is_normwise():
    row = compare_features({"x": np.array([1.0, 100.0])}, {"x": np.array([0.0, 100.0])})[0]
    assert (row.max_abs, row.max_ref, row.max_rel) == (1.0, 100.0, 0.01)
    assert StageDifference("z", (2,), 0.0, 0.0).max_rel == 0.0
    assert StageDifference("z", (2,), 1.0, 0.0).max_rel == np.inf


def test_only_common_stages_are_compared_and_the_table_names_them():
    comparison = compare_features(
        {"a": np.ones(3), "b": np.zeros((2, 2)), "c": np.ones(1)}, {"b": np.ones((2, 2))}
    )
    assert isinstance(comparison, Comparison) and len(comparison) == 1
    table = str(comparison)
    assert "b" in table.splitlines()[1] and "[2, 2]" in table
    assert comparison.first_divergence(0.5).stage == "b"


def test_mismatches_are_explained():
    with pytest.raises(ValueError, match=r"stage 'x': ours has shape \(3,\), theirs \(4,\)"):
        compare_features({"x": np.ones(3)}, {"x": np.ones(4)})
    with pytest.raises(ValueError, match="no common stage"):
        compare_features({"x": np.ones(3)}, {"y": np.ones(3)})
