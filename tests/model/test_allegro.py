"""AllegroModel: exact gradients (edge vectors and parameters), E(3) invariance, permutation
invariance, strict locality, smoothness at the cutoff, dtypes and backends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from allegro_ref.model import AllegroConfig, AllegroModel
from tests.models import tiny_config
from tests.strategies import orthogonal_matrices, seeds

CONFIGS = {
    "l2-L2-parity": dict(l_max=2, num_layers=2, parity=True),
    "l1-L1": dict(l_max=1, num_layers=1),
    "l2-L3-parity": dict(l_max=2, num_layers=3, parity=True),
    "l3-L2-noparity-shared-paths": dict(
        l_max=3, num_layers=2, parity=False, tp_path_channel_coupling=False
    ),
}


# Three species with distinct per-type values and per-pair cutoffs, r_max 3 Å.
HCO = dict(
    type_names=("H", "C", "O"),
    r_max=3.0,
    avg_num_neighbors={"H": 3.0, "C": 4.0, "O": 5.0},
    per_type_energy_scales={"H": 1.3, "C": 0.7, "O": 1.1},
    per_type_energy_shifts={"H": -0.5, "C": 0.2, "O": 0.1},
    per_edge_type_cutoff={"H": {"H": 2.5, "C": 3.0, "O": 3.0}},
)


def hco_config(**overrides) -> AllegroConfig:
    return tiny_config(**{**HCO, **overrides})


def random_structure(seed: int, n_atoms: int = 7, box: float = 3.0):
    """Positions, types and the full directed edge list within each pair's cutoff (plain O(N²))."""
    rng = np.random.default_rng(seed)
    while True:
        positions = rng.uniform(0.0, box, (n_atoms, 3))
        d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        if np.all(d[np.triu_indices(n_atoms, 1)] > 0.6):
            break
    types = rng.integers(0, 3, n_atoms)
    return positions, types


def edges_of(config: AllegroConfig, positions, types):
    cut = config.cutoff_matrix()[types[:, None], types[None, :]]
    vec = positions[None, :, :] - positions[:, None, :]
    dist = np.linalg.norm(vec, axis=-1)
    centers, neighbors = np.nonzero((dist < cut) & ~np.eye(len(types), dtype=bool))
    return vec[centers, neighbors], centers, neighbors


def directional_derivative(f, h: float = 1e-4) -> float:
    """d/dt f(t) at t = 0 by the fourth-order central stencil (error O(h⁴))."""
    return (8 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12 * h)


def weighted_energy(model, vectors, centers, neighbors, types, weights):
    energies, cache = model.forward(vectors, centers, neighbors, types)
    return float(np.sum(weights * energies)), cache


@pytest.mark.parametrize("name", list(CONFIGS))
def test_edge_vector_gradient_matches_finite_differences(name):
    config = hco_config(**CONFIGS[name])
    model = AllegroModel.init(config, seed=1)
    positions, types = random_structure(2)
    vectors, centers, neighbors = edges_of(config, positions, types)
    rng = np.random.default_rng(3)
    weights = rng.standard_normal(len(types))
    _, cache = weighted_energy(model, vectors, centers, neighbors, types, weights)
    grad = model.backward(cache, weights)
    for _ in range(3):
        direction = rng.standard_normal(vectors.shape)
        numeric = directional_derivative(
            lambda t, d=direction: weighted_energy(
                model, vectors + t * d, centers, neighbors, types, weights
            )[0]
        )
        analytic = float(np.sum(grad * direction))
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (numeric, analytic)


@pytest.mark.parametrize("name", ["l2-L2-parity", "l3-L2-noparity-shared-paths"])
def test_parameter_gradients_match_finite_differences(name):
    config = hco_config(**CONFIGS[name], bessel_trainable=True)
    model = AllegroModel.init(config, seed=4)
    positions, types = random_structure(5)
    vectors, centers, neighbors = edges_of(config, positions, types)
    rng = np.random.default_rng(6)
    weights = rng.standard_normal(len(types))
    _, cache = weighted_energy(model, vectors, centers, neighbors, types, weights)
    _, grads = model.backward(cache, weights, parameter_gradients=True)
    assert set(grads) == set(model.params)
    for name_, value in model.params.items():
        direction = rng.standard_normal(value.shape)

        def energy_at(step, name_=name_, value=value, direction=direction):
            params = dict(model.params)
            params[name_] = value + step * direction
            return weighted_energy(
                AllegroModel(config, params), vectors, centers, neighbors, types, weights
            )[0]

        numeric = directional_derivative(energy_at)
        analytic = float(np.sum(grads[name_] * direction))
        assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (name_, numeric, analytic)


@settings(max_examples=10)
@given(rotation=orthogonal_matrices(), seed=seeds)
def test_energies_invariant_and_gradients_equivariant_under_O3(rotation, seed):
    config = hco_config(**CONFIGS["l2-L3-parity"])
    model = AllegroModel.init(config, seed=seed % 1000)
    positions, types = random_structure(seed)
    vectors, centers, neighbors = edges_of(config, positions, types)
    energies, cache = model.forward(vectors, centers, neighbors, types)
    grad = model.backward(cache, np.ones(len(types)))
    energies_r, cache_r = model.forward(vectors @ rotation.T, centers, neighbors, types)
    grad_r = model.backward(cache_r, np.ones(len(types)))
    np.testing.assert_allclose(energies_r, energies, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_r, grad @ rotation.T, rtol=1e-10, atol=1e-12)


@settings(max_examples=10)
@given(seed=seeds)
def test_permutation_of_atoms_permutes_energies(seed):
    config = hco_config()
    model = AllegroModel.init(config, seed=0)
    positions, types = random_structure(seed)
    vectors, centers, neighbors = edges_of(config, positions, types)
    energies, _ = model.forward(vectors, centers, neighbors, types)
    perm = np.random.default_rng(seed).permutation(len(types))
    inverse = np.argsort(perm)
    edge_order = np.random.default_rng(seed + 1).permutation(len(centers))
    energies_p, _ = model.forward(
        vectors[edge_order],
        inverse[centers][edge_order],
        inverse[neighbors][edge_order],
        types[perm],
    )
    np.testing.assert_allclose(energies_p, energies[perm], rtol=1e-12, atol=1e-12)


def test_strict_locality_energy_of_atom_depends_only_on_its_edges():
    config = hco_config()
    model = AllegroModel.init(config, seed=0)
    positions, types = random_structure(11)
    vectors, centers, neighbors = edges_of(config, positions, types)
    energies, _ = model.forward(vectors, centers, neighbors, types)
    moved = vectors.copy()
    not_zero = centers != 0
    moved[not_zero] += 0.05 * np.random.default_rng(0).standard_normal((int(not_zero.sum()), 3))
    energies_moved, _ = model.forward(moved, centers, neighbors, types)
    assert energies_moved[0] == energies[0]
    assert np.all(energies_moved[1:] != energies[1:])


def test_energy_is_smooth_when_an_edge_crosses_the_cutoff():
    config = hco_config(per_edge_type_cutoff=None)
    model = AllegroModel.init(config, seed=0)
    types = np.array([1, 2])
    centers, neighbors = np.array([0, 1]), np.array([1, 0])
    r = config.r_max * (1 - 1e-6)
    vectors = np.array([[r, 0.0, 0.0], [-r, 0.0, 0.0]])
    energies, cache = model.forward(vectors, centers, neighbors, types)
    shifts = config.per_type_values(config.per_type_energy_shifts, "shifts")[types]
    np.testing.assert_allclose(energies, shifts, atol=1e-20 + 1e-12)
    assert np.all(np.abs(model.backward(cache, np.ones(2))) < 1e-12)


def test_isolated_atoms_get_their_shift():
    config = hco_config()
    model = AllegroModel.init(config, seed=0)
    types = np.array([0, 2, 1])
    empty = np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    energies, cache = model.forward(*empty, types)
    np.testing.assert_array_equal(energies, [-0.5, 0.1, 0.2])
    assert model.backward(cache, np.ones(3)).shape == (0, 3)


def test_float32_close_to_float64():
    config = hco_config()
    positions, types = random_structure(3)
    vectors, centers, neighbors = edges_of(config, positions, types)
    e64, c64 = AllegroModel.init(config, seed=0).forward(vectors, centers, neighbors, types)
    model32 = AllegroModel.init(config, seed=0, dtype="float32")
    e32, c32 = model32.forward(vectors, centers, neighbors, types)
    assert e32.dtype == np.float64  # atomic energies are accumulated in float64
    np.testing.assert_allclose(e32, e64, rtol=1e-5, atol=1e-5)
    g64 = AllegroModel.init(config, seed=0).backward(c64, np.ones(len(types)))
    g32 = model32.backward(c32, np.ones(len(types)))
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.abs(g64).max())


def test_numpy_and_strict_backends_agree(backend):
    config = hco_config()
    model = AllegroModel.init(config, seed=0)
    positions, types = random_structure(8)
    vectors, centers, neighbors = edges_of(config, positions, types)
    energies, cache = model.forward(vectors, centers, neighbors, types)
    grad = model.backward(cache, np.ones(len(types)))
    on_backend = AllegroModel(config, {k: backend.asarray(v) for k, v in model.params.items()})
    energies_b, cache_b = on_backend.forward(
        backend.asarray(vectors),
        backend.asarray(centers),
        backend.asarray(neighbors),
        backend.asarray(types),
    )
    grad_b = on_backend.backward(cache_b, backend.asarray(np.ones(len(types))))
    np.testing.assert_allclose(backend.to_numpy(energies_b), energies, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(grad_b), grad, rtol=1e-11, atol=1e-13)


def test_wrong_parameters_are_refused():
    config = hco_config()
    params = AllegroModel.init(config).params
    missing = {k: v for k, v in params.items() if k != "tp.0"}
    with pytest.raises(ValueError, match=r"missing \['tp.0'\]"):
        AllegroModel(config, missing)
    wrong = dict(params, **{"readout.1": np.zeros((3, 1))})
    with pytest.raises(ValueError, match="readout.1: got"):
        AllegroModel(config, wrong)
