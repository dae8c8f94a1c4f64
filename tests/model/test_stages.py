"""The stage functions of allegro_ref.model.allegro: every stage's backward (input and parameter
gradients) against central finite differences in float64, on NumPy and array-api-strict; the
model's forward/backward as their composition; intermediates by name and shape."""

from __future__ import annotations

import numpy as np
import pytest

from allegro_ref.model import AllegroModel
from allegro_ref.model.allegro import (
    Tracks,
    geometry_backward,
    geometry_forward,
    initial_tracks_backward,
    initial_tracks_forward,
    layer_backward,
    layer_forward,
    readout_backward,
    readout_forward,
    two_body_backward,
    two_body_forward,
)
from tests.model.test_allegro import (
    CONFIGS,
    directional_derivative,
    edges_of,
    hco_config,
    random_structure,
)


class Setting:
    """A model with distinct per-type values on ``backend``, the edges of a random structure,
    and the inputs of every stage (host float64 copies)."""

    def __init__(self, backend, name: str = "l2-L2-parity"):
        self.backend = backend
        self.config = hco_config(**CONFIGS[name], bessel_trainable=True)
        host = AllegroModel.init(self.config, seed=1)
        self.model = AllegroModel(
            self.config, {k: backend.asarray(v) for k, v in host.params.items()}
        )
        self.params = self.model.params
        positions, types = random_structure(2)
        vectors, centers, neighbors = edges_of(self.config, positions, types)
        self.vectors = vectors
        self.graph = self.model.edge_graph(
            backend.asarray(vectors),
            backend.asarray(centers),
            backend.asarray(neighbors),
            backend.asarray(types),
        )
        self.dtype = self.graph.inv_sqrt_nbar.dtype
        _, cache = self.model.forward(
            backend.asarray(vectors),
            backend.asarray(centers),
            backend.asarray(neighbors),
            backend.asarray(types),
        )
        self.cache = cache

    def host(self, x):
        return self.backend.to_numpy(x)

    def device(self, x):
        return self.backend.asarray(x)


def assert_vjp(setting, run, inputs, expected_params, rng):
    """``run(inputs, params) -> (outputs, vjp)``, ``vjp(cotangents) -> (grad_inputs,
    grad_params)``: ⟨grad, direction⟩ equals the directional derivative of ⟨cotangent,
    outputs⟩ along random directions of every input and of every parameter the stage owns."""
    host, device = setting.host, setting.device
    outputs, vjp = run([device(x) for x in inputs], setting.params)
    cotangents = [rng.standard_normal(tuple(o.shape)) for o in outputs]
    grad_inputs, grad_params = vjp([device(c) for c in cotangents])
    assert set(grad_params) == set(expected_params)
    directions = [rng.standard_normal(x.shape) for x in inputs]
    param_directions = {k: rng.standard_normal(tuple(setting.params[k].shape)) for k in grad_params}
    analytic = sum(float(np.sum(host(g) * d)) for g, d in zip(grad_inputs, directions, strict=True))
    analytic += sum(float(np.sum(host(grad_params[k]) * d)) for k, d in param_directions.items())

    def loss(t):
        xs = [device(x + t * d) for x, d in zip(inputs, directions, strict=True)]
        params = dict(setting.params)
        for k, d in param_directions.items():
            params[k] = device(host(setting.params[k]) + t * d)
        outs, _ = run(xs, params)
        return sum(float(np.sum(host(o) * c)) for o, c in zip(outs, cotangents, strict=True))

    numeric = directional_derivative(loss)
    assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (numeric, analytic)


def test_geometry_backward_matches_finite_differences(backend, rng):
    s = Setting(backend)

    def run(xs, params):
        geometry, cache = geometry_forward(params, s.config, xs[0], s.graph, s.dtype)

        def vjp(cs):
            grad, grads = geometry_backward(params, cache, *cs, parameter_gradients=True)
            return [grad], grads

        return [geometry.radial, geometry.sh], vjp

    assert_vjp(s, run, [s.vectors], {"bessel_frequencies"}, rng)


def test_two_body_backward_matches_finite_differences(backend, rng):
    s = Setting(backend)
    radial = s.host(s.cache.geometry.radial)

    def run(xs, params):
        h, cache = two_body_forward(params, s.config, xs[0], s.graph)

        def vjp(cs):
            grad, grads = two_body_backward(params, cache, cs[0], parameter_gradients=True)
            return [grad], grads

        return [h], vjp

    expected = {"center_embed", "neighbor_embed", "basis_linear.0"}
    expected |= {k for k in s.params if k.startswith("scalar_embed_mlp.")}
    assert_vjp(s, run, [radial], expected, rng)


def test_initial_tracks_backward_matches_finite_differences(backend, rng):
    s = Setting(backend)
    h, sh = s.host(s.cache.edge_embedding), s.host(s.cache.geometry.sh)

    def run(xs, params):
        tracks, cache = initial_tracks_forward(params, s.config, *xs)

        def vjp(cs):
            grad_tracks = Tracks(cs[0], (cs[1],), cs[2])
            grads_in, grads = initial_tracks_backward(
                params, cache, grad_tracks, parameter_gradients=True
            )
            return list(grads_in), grads

        return [tracks.tensors, tracks.latents[0], tracks.env_weights], vjp

    expected = {k for k in s.params if k.startswith(("tensor_embed.", "first_projection."))}
    assert_vjp(s, run, [h, sh], expected, rng)


@pytest.mark.parametrize("k", [0, 1])  # a middle layer and the last (no next env weights)
def test_layer_backward_matches_finite_differences(backend, rng, k):
    s = Setting(backend)
    tracks = s.cache.tracks[k]
    n_latents = len(tracks.latents)
    inputs = [s.host(tracks.tensors), *map(s.host, tracks.latents), s.host(tracks.env_weights)]
    inputs.append(s.host(s.cache.geometry.sh))
    tensor_product = s.model.tensor_products[k]

    def run(xs, params):
        given = Tracks(xs[0], tuple(xs[1 : 1 + n_latents]), xs[1 + n_latents])
        out, cache = layer_forward(params, s.config, k, tensor_product, given, xs[-1], s.graph)
        outputs = [out.tensors, *out.latents]
        if out.env_weights is not None:
            outputs.append(out.env_weights)

        def vjp(cs):
            grad_env = cs[2 + n_latents] if out.env_weights is not None else None
            # the backward consumes ∂L/∂V^{k+1} in place: give it its own copy
            grad_out = Tracks(cs[0] * 1.0, tuple(cs[1 : 2 + n_latents]), grad_env)
            (grad_in, grad_sh), grads = layer_backward(
                params, cache, grad_out, parameter_gradients=True
            )
            return [grad_in.tensors, *grad_in.latents, grad_in.env_weights, grad_sh], grads

        return outputs, vjp

    expected = {f"tp.{k}"} | {p for p in s.params if p.startswith(f"latent.{k}.")}
    assert_vjp(s, run, inputs, expected, rng)


def test_readout_backward_matches_finite_differences(backend, rng):
    s = Setting(backend)
    latents = [s.host(x) for x in s.cache.tracks[-1].latents]

    def run(xs, params):
        energies, cache = readout_forward(params, s.config, Tracks(None, tuple(xs), None), s.graph)

        def vjp(cs):
            grad_tracks, grads = readout_backward(params, cache, cs[0], parameter_gradients=True)
            assert grad_tracks.tensors is None and grad_tracks.env_weights is None
            return list(grad_tracks.latents), grads

        return [energies.atomic_energies], vjp

    expected = {"per_type_energy_scales", "per_type_energy_shifts"}
    expected |= {k for k in s.params if k.startswith("readout.")}
    assert_vjp(s, run, latents, expected, rng)


def test_stage_parameter_gradients_cover_the_model_once(backend):
    """Every parameter's gradient comes from exactly one stage's backward, and the model's
    backward is their union."""
    s = Setting(backend)
    ones = backend.asarray(np.ones(s.graph.n_atoms))
    _, grads = s.model.backward(s.cache, ones, parameter_gradients=True)
    assert set(grads) == set(s.params)
    assert s.model.backward(s.cache, ones).shape == (len(s.vectors), 3)


def test_intermediates_names_and_shapes(backend):
    s = Setting(backend, "l2-L3-parity")
    cfg = s.config
    E, N = len(s.vectors), s.graph.n_atoms
    S, U, B, L = cfg.num_scalar_features, cfg.num_tensor_features, cfg.num_bessels, 3
    stages = s.model.intermediates(s.cache)
    expected = {
        "edge_lengths": (E,),
        "radial_basis": (E, B),
        "edge_sh": (E, (cfg.l_max + 1) ** 2),
        "edge_embedding": (E, S),
        "initial_tensors": (E, U, cfg.sh_irreps.dim),
    }
    for k, (_, irreps_out) in enumerate(cfg.layer_irreps()):
        expected[f"layer{k}.tensors"] = (E, U, irreps_out.dim)
        expected[f"layer{k}.scalars"] = (E, S)
    expected |= {"edge_features": (E, S * (L + 1)), "edge_energies": (E,), "atomic_energies": (N,)}
    assert list(stages) == list(expected)  # forward order
    assert {k: tuple(v.shape) for k, v in stages.items()} == expected
    energies = s.host(s.cache.energies.atomic_energies)
    np.testing.assert_array_equal(s.host(stages["atomic_energies"]), energies)
    lengths = np.linalg.norm(s.vectors, axis=-1)
    np.testing.assert_allclose(s.host(stages["edge_lengths"]), lengths, rtol=1e-15)


def test_model_namespace_and_device(backend):
    s = Setting(backend)
    assert s.model.namespace is backend.xp
    expected = "cpu" if backend.device is None else backend.device
    assert s.model.device == expected
