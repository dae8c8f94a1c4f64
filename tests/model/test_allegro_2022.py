"""Allegro2022Model (nequip-allegro 0.3.0's architecture): parity with the official code on the
fixtures of scripts/make_nequip_2022_fixtures.py (energies, per-atom energies, forces, stress,
intermediates), every stage's backward and the full backward against central finite
differences, E(3) invariance, the Potential running it, and the config's checks."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

from allegro_ref import Potential
from allegro_ref.io.nequip_2022 import model_from_nequip_2022
from allegro_ref.model.allegro import Tracks
from allegro_ref.model.allegro_2022 import (
    Allegro2022Model,
    Layer2022,
    geometry_2022_backward,
    geometry_2022_forward,
    initial_tracks_2022_backward,
    initial_tracks_2022_forward,
    layer_2022_backward,
    layer_2022_forward,
    readout_2022_backward,
    readout_2022_forward,
    two_body_2022_backward,
    two_body_2022_forward,
)
from allegro_ref.model.config_2022 import Allegro2022Config
from tests.strategies import orthogonal_matrices, seeds

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FLOAT64_MODELS = ["A", "B", "C", "D", "E"]
RTOL = {"float64": 1e-10, "float32": 1e-5}


# ---------------------------------------------------------------------------------------------
# The official fixtures
# ---------------------------------------------------------------------------------------------
@cache
def fixture(name: str) -> dict:
    """The arrays of tests/fixtures/nequip2022_<name>.npz, without the model prefix."""
    with np.load(FIXTURES / f"nequip2022_{name}.npz") as f:
        return {key[len(name) + 1 :]: f[key] for key in f.files}


@cache
def official_model(name: str) -> Allegro2022Model:
    data = fixture(name)
    meta = json.loads(str(data["meta/json"]))
    state = {k[len("state/") :]: v for k, v in data.items() if k.startswith("state/")}
    return model_from_nequip_2022(meta["config"], state)


def structure_names(name: str) -> list[str]:
    return json.loads(str(fixture(name)["meta/json"]))["structures"]


def edges(name: str, structure: str):
    """The official neighbor list's edge vectors (computed in the model dtype, as nequip does
    from positions cast to it), centers, neighbors and types."""
    data = {k.split("/", 1)[1]: v for k, v in fixture(name).items() if k.startswith(structure)}
    dtype = official_model(name).dtype
    positions, cell = data["positions"].astype(dtype), data["cell"].astype(dtype)
    centers, neighbors = data["edge_index"]
    shifts = data["edge_cell_shift"].astype(dtype)
    vectors = positions[neighbors] - positions[centers] + shifts @ cell
    return vectors.astype(np.float64), centers, neighbors, data["atom_types"], data


def max_relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# official hooked module -> allegro_ref intermediate
INTERMEDIATES = {
    "radial_basis": "radial_basis",
    "typeembed": "edge_embedding",
    "spharm": "edge_sh",
    "allegro.latents.0": "two_body_latent",
    "allegro": "edge_features",
    "edge_eng": "edge_energies",
}


def evaluate(model, vectors, centers, neighbors, types, cell, backend=None):
    xp_in = (lambda a: a) if backend is None else backend.asarray
    out = np.asarray if backend is None else backend.to_numpy
    energies, cache_ = model.forward(xp_in(vectors), xp_in(centers), xp_in(neighbors), xp_in(types))
    ones = model.namespace.ones_like(energies)
    grads = out(model.backward(cache_, ones))
    forces = np.zeros((types.shape[0], 3))
    np.add.at(forces, centers, grads)
    np.add.at(forces, neighbors, -grads)
    result = {"total_energy": out(energies).sum(), "atomic_energy": out(energies), "forces": forces}
    if np.any(cell):
        volume = abs(np.linalg.det(cell))
        result["stress"] = vectors.T @ grads / volume
        # the size of the terms the stress sums (they cancel to a much smaller total)
        result["stress_terms"] = (
            np.sum(np.linalg.norm(vectors, axis=1) * np.linalg.norm(grads, axis=1)) / volume
        )
    inter = {k: out(v) for k, v in model.intermediates(cache_).items()}
    return result, inter


@pytest.mark.parametrize("name", [*FLOAT64_MODELS, "A32"])
def test_matches_official_fixtures(name, backend):
    model = official_model(name)
    if backend.name == "strict":
        model = Allegro2022Model(
            model.config, {k: backend.asarray(v) for k, v in model.params.items()}, model.dtype
        )
    rtol = RTOL[model.dtype]
    for structure in structure_names(name):
        vectors, centers, neighbors, types, data = edges(name, structure)
        result, inter = evaluate(model, vectors, centers, neighbors, types, data["cell"], backend)
        stress_terms = result.pop("stress_terms", None)
        for key, value in result.items():
            error = max_relative(value, data[key])
            if key == "stress" and model.dtype == "float32":  # relative to the summed terms
                error *= np.max(np.abs(data[key])) / stress_terms
            assert error < rtol, (structure, key, error)
        for official, ours in INTERMEDIATES.items():
            reference = data[f"inter/{official}"]
            got = inter[ours].reshape(reference.shape)
            assert max_relative(got, reference) < rtol, (structure, ours)


@pytest.mark.parametrize("name", ["A", "C", "A32"])
def test_potential_runs_official_models(name):
    """Potential (its own neighbor list, chunks, pruning per edge type) gives the official
    energies, forces and stress from chemical symbols."""
    model = official_model(name)
    meta = json.loads(str(fixture(name)["meta/json"]))
    potential = Potential(model)
    for structure in structure_names(name):
        data = {k.split("/", 1)[1]: v for k, v in fixture(name).items() if k.startswith(structure)}
        symbols = meta[f"{structure}/symbols"]
        result = potential.compute(data["positions"], symbols, data["cell"], data["pbc"])
        rtol = 3 * RTOL[model.dtype]
        assert abs(result["energy"] - data["total_energy"]) < rtol * abs(data["total_energy"])
        assert max_relative(result["energies"], data["atomic_energy"]) < rtol
        assert max_relative(result["forces"], data["forces"]) < rtol
        if "stress" in data:
            assert max_relative(result["stress"], data["stress"]) < rtol


# ---------------------------------------------------------------------------------------------
# Gradients against finite differences (float64)
# ---------------------------------------------------------------------------------------------
BASE = dict(
    type_names=("H", "C"),
    r_max=4.0,
    l_max=2,
    num_layers=2,
    num_tensor_features=3,
    num_bessels=4,
    two_body_latent_dims=(8, 10),
    latent_dims=(12, 10),
    edge_eng_dims=(6,),
    avg_num_neighbors=5.0,
    per_type_energy_scales={"H": 1.3, "C": 0.7},
    per_type_energy_shifts={"H": -1.0, "C": 2.0},
    global_energy_scale=2.0,
)
OPTIONS = {
    "uuulin": {},
    "uuup": dict(tensors_mixing_mode="uuup"),
    "p": dict(tensors_mixing_mode="p", parity="o3_restricted"),
    "uvvp": dict(tensors_mixing_mode="uvvp"),
    "so3-L3": dict(parity="so3", num_layers=3),
    "o3_full-L3-self-edge-coefficients": dict(
        l_max=1,
        num_layers=3,
        self_edge_tensor_product=True,
        latent_resnet_coefficients=(1, 2, 3, 4),
    ),
    "dense-shared-weights": dict(
        latent_resnet=False, latent_dims=(12, 7), weight_individual_irreps=False
    ),
    "normalized-basis-nonlinear-env": dict(
        normalized_basis=True, env_embed_dims=(5,), edge_eng_nonlinearity=None
    ),
    "edge-type-cutoffs": dict(per_edge_type_cutoff={"H": 3.0, "C": {"H": 3.5, "C": 4.0}}),
}


def config_2022(name: str) -> Allegro2022Config:
    return Allegro2022Config(**{**BASE, **OPTIONS[name]})


def cluster(seed: int = 0, n_atoms: int = 6):
    """A random cluster: every pair is an edge (positions within 3.2 Å, r_max 4 Å)."""
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0.0, 2.6, (n_atoms, 3))
    centers, neighbors = np.nonzero(~np.eye(n_atoms, dtype=bool))
    return (
        positions[neighbors] - positions[centers],
        centers,
        neighbors,
        rng.integers(0, 2, n_atoms),
    )


def central_difference(f, h: float = 1e-5) -> float:
    return (f(h) - f(-h)) / (2 * h)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_full_backward_matches_finite_differences(name):
    model = Allegro2022Model.init(config_2022(name), seed=1)
    vectors, centers, neighbors, types = cluster()
    energies, cache_ = model.forward(vectors, centers, neighbors, types)
    weights = np.random.default_rng(5).standard_normal(energies.shape)  # L = Σ c_i E_i
    grad, grads = model.backward(cache_, weights, parameter_gradients=True)
    rng = np.random.default_rng(3)

    def loss() -> float:
        return float(weights @ model.forward(vectors, centers, neighbors, types)[0])

    direction = rng.standard_normal(vectors.shape)
    original = vectors.copy()

    def along_vectors(t):
        nonlocal vectors
        vectors = original + t * direction
        return loss()

    fd = central_difference(along_vectors)
    vectors = original
    assert abs(fd - np.sum(grad * direction)) < 1e-7 * max(1.0, abs(fd))
    assert set(grads) == set(model.params)
    for key, value in model.params.items():
        direction = rng.standard_normal(value.shape)

        def along(t, key=key, value=value, direction=direction):
            model.params[key] = value + t * direction
            return loss()

        fd = central_difference(along)
        model.params[key] = value
        assert abs(fd - np.sum(grads[key] * direction)) < 1e-7 * max(1.0, abs(fd)), key


def _stage_check(forward, backward, inputs: dict, grad_names, rng, tol=1e-7):
    """Directional FD of a random linear functional of a stage's outputs against its VJP, for
    every float input in ``inputs`` (name -> array, perturbed one at a time)."""
    outputs = forward(**inputs)
    cotangents = [rng.standard_normal(np.shape(o)) for o in outputs]

    def functional(**changed):
        return sum(
            float(np.sum(c * o))
            for c, o in zip(cotangents, forward(**{**inputs, **changed}), strict=True)
        )

    grads = backward(cotangents)
    for name, grad in zip(grad_names, grads, strict=True):
        direction = rng.standard_normal(np.shape(inputs[name]))
        fd = central_difference(
            lambda t, name=name, direction=direction: functional(
                **{name: inputs[name] + t * direction}
            )
        )
        assert abs(fd - np.sum(grad * direction)) < tol * max(1.0, abs(fd)), name


@pytest.mark.parametrize("name", ["uuulin", "normalized-basis-nonlinear-env", "edge-type-cutoffs"])
def test_geometry_and_two_body_stage_backwards(name):
    config, rng = config_2022(name), np.random.default_rng(2)
    model = Allegro2022Model.init(config, seed=4)
    vectors, centers, neighbors, types = cluster(1)
    graph = model.edge_graph(vectors, centers, neighbors, types)
    params = model.params

    def geometry(edge_vectors, bessel_frequencies):
        p = {**params, "bessel_frequencies": bessel_frequencies}
        g, _ = geometry_2022_forward(p, config, edge_vectors, graph, np.float64)
        return g.radial, g.sh

    def geometry_vjp(cotangents):
        _, c = geometry_2022_forward(params, config, vectors, graph, np.float64)
        grad, grads = geometry_2022_backward(params, c, *cotangents, parameter_gradients=True)
        return grad, grads["bessel_frequencies"]

    inputs = {"edge_vectors": vectors, "bessel_frequencies": params["bessel_frequencies"]}
    _stage_check(geometry, geometry_vjp, inputs, list(inputs), rng)
    radial = geometry(vectors, params["bessel_frequencies"])[0]

    def two_body(radial, center_embed):
        out, _ = two_body_2022_forward(
            {**params, "center_embed": center_embed}, config, radial, graph
        )
        return (out.latent,)

    def two_body_vjp(cotangents):
        _, c = two_body_2022_forward(params, config, radial, graph)
        grad, grads = two_body_2022_backward(params, c, cotangents[0], parameter_gradients=True)
        return grad, grads["center_embed"]

    inputs = {"radial": radial, "center_embed": params["center_embed"]}
    _stage_check(two_body, two_body_vjp, inputs, list(inputs), rng)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_tracks_layer_and_readout_stage_backwards(name):
    config, rng = config_2022(name), np.random.default_rng(7)
    model = Allegro2022Model.init(config, seed=2)
    vectors, centers, neighbors, types = cluster(2)
    _, cache_ = model.forward(vectors, centers, neighbors, types)
    graph = model.edge_graph(vectors, centers, neighbors, types)
    params, sh, x0 = model.params, cache_.geometry.sh, cache_.two_body.latent

    def initial(x0, sh):
        t, _ = initial_tracks_2022_forward(params, config, x0, sh)
        return t.tensors, t.env_weights

    def initial_vjp(cotangents):
        _, c = initial_tracks_2022_forward(params, config, x0, sh)
        grad_tracks = Tracks(cotangents[0], (np.zeros_like(x0),), cotangents[1])
        (grad_x0, grad_sh), _ = initial_tracks_2022_backward(params, c, grad_tracks)
        return grad_x0, grad_sh

    _stage_check(initial, initial_vjp, {"x0": x0, "sh": sh}, ["x0", "sh"], rng)
    for k, layer in enumerate(model.layers):
        tracks = cache_.tracks[k]
        _check_layer(params, config, layer, tracks, sh, graph, rng)
    final = cache_.tracks[-1]

    def readout(latent):
        e, _ = readout_2022_forward(
            params, config, final._replace(latents=(*final.latents[:-1], latent)), graph
        )
        return (e.atomic_energies,)

    def readout_vjp(cotangents):
        _, c = readout_2022_forward(params, config, final, graph)
        grad_tracks, _ = readout_2022_backward(params, c, cotangents[0])
        return (grad_tracks.latents[-1],)

    _stage_check(readout, readout_vjp, {"latent": final.latents[-1]}, ["latent"], rng)


def _check_layer(params, config, layer: Layer2022, tracks: Tracks, sh, graph, rng):
    def run(tensors, latent, env_weights, sh):
        t = Tracks(tensors, (*tracks.latents[:-1], latent), env_weights)
        out, _ = layer_2022_forward(params, config, layer, t, sh, graph)
        parts = (out.tensors, out.latents[-1])
        return parts if out.env_weights is None else (*parts, out.env_weights)

    def vjp(cotangents):
        out, c = layer_2022_forward(params, config, layer, tracks, sh, graph)
        grad_latents = tuple(np.zeros_like(x) for x in out.latents[:-1]) + (cotangents[1],)
        env = cotangents[2] if len(cotangents) > 2 else None
        grad_tensors = cotangents[0] if not layer.is_last else None
        (grad_in, grad_sh), _ = layer_2022_backward(
            params, c, Tracks(grad_tensors, grad_latents, env)
        )
        return grad_in.tensors, grad_in.latents[-1], grad_in.env_weights, grad_sh

    if layer.is_last:  # the last layer's tensor output reaches nothing: no cotangent for it

        def run_last(**kw):
            return run(**kw)[1:]

        def vjp_last(cotangents):
            return vjp([None, *cotangents])

        run_, vjp_ = run_last, vjp_last
    else:
        run_, vjp_ = run, vjp
    inputs = {
        "tensors": tracks.tensors, "latent": tracks.latents[-1],
        "env_weights": tracks.env_weights, "sh": sh,
    }  # fmt: skip
    _stage_check(run_, vjp_, inputs, list(inputs), rng)


# ---------------------------------------------------------------------------------------------
# Symmetry, dtypes, configs
# ---------------------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(rotation=orthogonal_matrices(), seed=seeds)
def test_energies_invariant_and_gradients_equivariant_under_O3(rotation, seed):
    for name in ("uuulin", "uvvp", "o3_full-L3-self-edge-coefficients"):
        model = Allegro2022Model.init(config_2022(name), seed=seed % 1000)
        vectors, centers, neighbors, types = cluster(seed % 1000)
        e, c = model.forward(vectors, centers, neighbors, types)
        g = model.backward(c, np.ones_like(e))
        e_rot, c_rot = model.forward(vectors @ rotation.T, centers, neighbors, types)
        g_rot = model.backward(c_rot, np.ones_like(e))
        np.testing.assert_allclose(e_rot, e, rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(g_rot, g @ rotation.T, rtol=1e-8, atol=1e-10)


def test_so3_is_rotation_but_not_mirror_invariant():
    model = Allegro2022Model.init(config_2022("so3-L3"), seed=3)
    vectors, centers, neighbors, types = cluster(4)
    rotation = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    e = model.forward(vectors, centers, neighbors, types)[0]
    np.testing.assert_allclose(
        model.forward(vectors @ rotation.T, centers, neighbors, types)[0], e, rtol=1e-10
    )
    mirrored = model.forward(-vectors, centers, neighbors, types)[0]
    assert np.max(np.abs(mirrored - e)) > 1e-6


def test_float32_close_to_float64():
    config = config_2022("uuulin")
    m64 = Allegro2022Model.init(config, seed=3)
    m32 = Allegro2022Model.init(config, seed=3, dtype="float32")
    vectors, centers, neighbors, types = cluster(5)
    e64, c64 = m64.forward(vectors, centers, neighbors, types)
    e32, c32 = m32.forward(vectors, centers, neighbors, types)
    assert e32.dtype == np.float64
    np.testing.assert_allclose(e32, e64, rtol=1e-5, atol=1e-5)
    g32 = m32.backward(c32, np.ones_like(e32))
    assert g32.dtype == np.float64
    np.testing.assert_allclose(g32, m64.backward(c64, np.ones_like(e64)), rtol=1e-3, atol=1e-4)


def test_config_round_trip_and_refusals():
    config = config_2022("o3_full-L3-self-edge-coefficients")
    assert Allegro2022Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    bad = [
        dict(tensors_mixing_mode="uuu"),
        dict(parity="o3"),
        dict(latent_nonlinearity="ssp"),
        dict(latent_dims=(12, 9)),  # resnet needs the latent width
        dict(latent_resnet_coefficients=(1.0, 2.0)),
        dict(initial_scalar_embedding_dim=7),
        dict(normalized_basis=True, per_edge_type_cutoff={"H": 3.0}),
        dict(tensors_mixing_mode="p", l_max=0, num_layers=1),
        dict(per_type_energy_scales={"X": 1.0}),
    ]
    for options in bad:
        with pytest.raises(ValueError):
            Allegro2022Config(**{**BASE, **options})
    with pytest.raises(ValueError, match="unknown"):
        Allegro2022Config.from_dict({**config.to_dict(), "latent_depth": 2})
    params = Allegro2022Model.init(config).params
    with pytest.raises(ValueError, match="missing"):
        Allegro2022Model(
            config, {k: v for k, v in params.items() if k != "tp.0" and k != "linear.0"}
        )


def test_official_path_counts():
    """The path table of the 0.3.0 layers (numbers of paths per layer)."""
    cases = [
        (dict(l_max=1, num_layers=3, parity="o3_full", latent_resnet_coefficients=None), [5, 5, 2]),
        (dict(l_max=1, num_layers=3, parity="o3_restricted"), [4, 4, 2]),
        (dict(l_max=2, num_layers=2, parity="so3"), [15, 3]),
        (dict(l_max=2, num_layers=3, parity="o3_full"), [15, 15, 3]),
        (dict(l_max=2, num_layers=4, parity="o3_full"), [15, 25, 15, 3]),
        (dict(l_max=3, num_layers=3, parity="o3_full"), [34, 34, 4]),
    ]
    for options, counts in cases:
        config = Allegro2022Config(**{**BASE, **options})
        assert [len(p) for p in config.layer_paths()] == counts, options


@pytest.mark.parametrize("mode", ["uuulin", "uuup", "p", "uvvp"])
def test_isolated_atoms_get_their_shift(mode):
    """No edges at all (every mode): each atom's energy is g · shift of its type, no forces."""
    config = Allegro2022Config(**{**BASE, "tensors_mixing_mode": mode})
    result = Potential(Allegro2022Model.init(config)).compute(
        np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]]), ["H", "C", "H"]
    )
    np.testing.assert_allclose(result["energies"], [-2.0, 4.0, -2.0])  # g = 2
    assert not np.any(result["forces"])


@pytest.mark.parametrize("name", ["uuulin", "uvvp", "dense-shared-weights"])
def test_training_loss_gradient_matches_finite_differences(name):
    """allegro_ref.train's loss (energy, force and stress terms; complex-step through the
    model's own backward) gives ∂L/∂θ of the 2022 family too."""
    from allegro_ref.train.data import build_graph, collate
    from allegro_ref.train.loss import LossWeights, loss_and_gradient
    from tests.train import random_structures

    species = {
        "type_names": ("O", "Cu"),
        "per_type_energy_scales": {"O": 1.3, "Cu": 0.7},
        "per_type_energy_shifts": {"O": -1.0, "Cu": 2.0},
    }
    config = Allegro2022Config(**{**BASE, **OPTIONS[name], **species})
    model = Allegro2022Model.init(config, seed=4)
    graphs = [build_graph(s, config.type_names, config.r_max) for s in random_structures(1)]
    batch, weights = collate(graphs), LossWeights(1, 2, 3)
    result = loss_and_gradient(model, batch, weights)
    assert set(result.gradients) == set(model.params)
    rng, step = np.random.default_rng(0), 1e-3
    for key, g in result.gradients.items():
        direction = rng.standard_normal(g.shape)

        def loss_at(t, key=key, direction=direction):
            params = {**model.params, key: model.params[key] + t * direction}
            probe = Allegro2022Model(config, params, model.dtype)
            return loss_and_gradient(probe, batch, weights, gradient=False).loss

        f = [loss_at(t * step) for t in (2, 1, -1, -2)]
        numeric = (8 * (f[1] - f[2]) - (f[0] - f[3])) / (12 * step)
        scale = np.linalg.norm(g) * np.linalg.norm(direction)
        assert abs(numeric - np.sum(g * direction)) <= 1e-6 * scale + 1e-12, key


@pytest.mark.parametrize("name", FLOAT64_MODELS)
def test_parameter_gradients_match_official_autograd(name):
    """∂(Σ_i c_i E_i)/∂θ on the periodic cell against torch autograd of the official model, for
    every parameter the official model trains (mapped to allegro_ref's names by the importer)."""
    from allegro_ref.io.nequip_2022 import _params_from_state, _Weights

    model, data = official_model(name), fixture(name)
    state = {k[len("state/") :]: v for k, v in data.items() if k.startswith("state/")}
    official = {k[len("grad/") :]: v for k, v in data.items() if k.startswith("grad/")}
    cotangent = official.pop("cotangent")
    as_gradients = _params_from_state(model.config, _Weights({**state, **official}))
    as_weights = _params_from_state(model.config, _Weights(state))
    trained = [n for n in as_gradients if not np.array_equal(as_gradients[n], as_weights[n])]
    assert len(trained) >= len(model.params) - 3  # all but the per-type scales/shifts (buffers)
    vectors, centers, neighbors, types, _ = edges(name, "periodic")
    _, cache_ = model.forward(vectors, centers, neighbors, types)
    _, grads = model.backward(cache_, cotangent, parameter_gradients=True)
    for key in trained:
        assert max_relative(grads[key], as_gradients[key]) < 1e-10, key
