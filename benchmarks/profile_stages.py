"""Seconds per stage of one evaluation of allegro_ref (one thread), for the cost model of
benchmarks/bench_potential.py (``--cost-model``).

It runs what ``Potential.compute`` runs, one stage function at a time, with a clock around each
call: the neighbor list, the model's stage functions of ``allegro_ref.model.allegro`` (forward
in order, backward in reverse, as ``AllegroModel.forward``/``backward`` compose them), and the
forces and stress of ``allegro_ref._derivatives``. The tensor product of every layer is timed
apart from the rest of its layer by handing ``layer_forward`` a ``Timed`` wrapper (the stage
functions accept any object with the tensor product's ``forward``/``backward``). Nothing is
patched. The model runs chunk by chunk, on the chunks of center atoms that ``Potential.compute``
makes (its ``chunk_edges``; the two private helpers of ``allegro_ref.potential`` that split
a structure are called, not copied), and every chunk's edge gradients are checked to equal
``AllegroModel.backward``'s bit for bit.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from threadpoolctl import threadpool_limits

from allegro_ref._derivatives import (
    forces_from_edge_gradients,
    stress_from_virial,
    virials_from_edge_gradients,
)
from allegro_ref.model.allegro import (
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
from allegro_ref.neighbors import edge_vectors, neighbor_list
from allegro_ref.potential import _chunk_inputs, _chunks_of_centers

STAGES = (
    "neighbor list",
    "geometry",
    "two-body embedding",
    "initial tracks",
    "tensor products",
    "density, latent MLPs",
    "readout",
    "forces, stress",
    "other",
)


class Clock:
    """Seconds per stage, accumulated over the calls made inside ``clock.time(stage)``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def time(self, stage: str, function, *args, **kwargs):
        watch = time.perf_counter()
        result = function(*args, **kwargs)
        self.seconds[stage] += time.perf_counter() - watch
        return result


class Timed:
    """A tensor product whose ``forward`` and ``backward`` are timed as "tensor products"."""

    def __init__(self, tensor_product, clock: Clock) -> None:
        self.tensor_product, self.clock = tensor_product, clock

    def forward(self, *args):
        return self.clock.time("tensor products", self.tensor_product.forward, *args)

    def backward(self, *args):
        return self.clock.time("tensor products", self.tensor_product.backward, *args)


def _model_stages(model, vectors, centers, neighbors, types, clock: Clock):
    """Forward and backward of ``model`` on one chunk, stage by stage, each call timed:
    ∂E/∂r_e ``[E, 3]`` and the per-atom energies."""
    p, cfg = model.params, model.config
    dtype = model.params["readout.0"].dtype
    xp = model.namespace
    graph = clock.time("geometry", model.edge_graph, vectors, centers, neighbors, types)
    geometry, gc = clock.time("geometry", geometry_forward, p, cfg, vectors, graph, dtype)
    h, tc = clock.time("two-body embedding", two_body_forward, p, cfg, geometry.radial, graph)
    tracks, ic = clock.time("initial tracks", initial_tracks_forward, p, cfg, h, geometry.sh)
    layer_caches = []
    for k, tp in enumerate(model.tensor_products):
        tracks, lc = clock.time(
            "layers", layer_forward, p, cfg, k, Timed(tp, clock), tracks, geometry.sh, graph
        )
        layer_caches.append(lc)
    energies, rc = clock.time("readout", readout_forward, p, cfg, tracks, graph)

    ones = xp.ones((types.shape[0],), dtype=xp.float64, device=model.device)
    g, _ = clock.time("readout", readout_backward, p, rc, ones)
    grad_sh = None
    for lc in reversed(layer_caches):
        (g, gsh_k), _ = clock.time("layers", layer_backward, p, lc, g)
        grad_sh = gsh_k if grad_sh is None else grad_sh + gsh_k
    (gh, gsh0), _ = clock.time("initial tracks", initial_tracks_backward, p, ic, g)
    gr, _ = clock.time("two-body embedding", two_body_backward, p, tc, gh)
    gv, _ = clock.time("geometry", geometry_backward, p, gc, gr, grad_sh + gsh0)
    return gv, energies.atomic_energies


def stage_profile(potential, positions, species, cell, pbc) -> dict:
    """Seconds per stage (``STAGES``, and ``"total"``) of one evaluation of ``potential`` on a
    structure (NumPy, one BLAS thread): energy, forces and stress."""
    model, config = potential.model, potential.config
    positions, cell, pbc = np.asarray(positions), np.asarray(cell), np.asarray(pbc)
    types = np.array([config.type_names.index(s) for s in species])
    n_atoms = len(types)
    clock = Clock()
    with threadpool_limits(1, user_api="blas"):
        watch = time.perf_counter()
        centers, neighbors, shifts = clock.time(
            "neighbor list", neighbor_list, positions, cell, pbc, config.r_max
        )
        vectors = clock.time(
            "neighbor list", edge_vectors, positions, cell, centers, neighbors, shifts
        )
        grads, checks = [], []
        for chunk in _chunks_of_centers(centers, n_atoms, potential.chunk_edges):
            inputs = _chunk_inputs(chunk, vectors, centers, neighbors, types, config.num_types)
            grads.append(_model_stages(model, *inputs[:4], clock)[0])
            checks.append(inputs[:4])
        grads = np.concatenate(grads)
        forces = clock.time(
            "forces, stress", forces_from_edge_gradients, grads, centers, neighbors, n_atoms
        )
        virials = clock.time(
            "forces, stress", virials_from_edge_gradients, vectors, grads, centers, n_atoms
        )
        volume = abs(float(np.linalg.det(cell)))
        stress = clock.time("forces, stress", stress_from_virial, virials.sum(axis=0), volume)
        total = time.perf_counter() - watch
    expected = [
        model.backward(model.forward(*inputs)[1], np.ones(len(inputs[3]))) for inputs in checks
    ]
    assert np.array_equal(grads, np.concatenate(expected)), "the stages differ from the model's"
    assert forces.shape == (n_atoms, 3) and stress.shape == (3, 3)
    seconds = clock.seconds
    seconds["density, latent MLPs"] = seconds.pop("layers") - seconds["tensor products"]
    seconds["other"] = total - sum(seconds.values())
    return {"total": total, **{stage: seconds[stage] for stage in STAGES}}
