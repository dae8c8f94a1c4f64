"""Seconds per stage of one ``Potential.compute`` of allegro_ref (one thread), for the cost
model of benchmarks/bench_potential.py (``--cost-model``).

It times every block the model calls by wrapping the functions in the namespace of
``allegro_ref.model.allegro`` and ``allegro_ref.potential`` (and the tensor products' methods)
for the duration of one call. That reaches into the model's internals: it follows the model's
structure, not a documented interface.
"""

from __future__ import annotations

import collections
import copy
import time

STAGES = (
    "neighbour list",
    "geometry",
    "two-body MLP",
    "embedding linears",
    "irrep weights",
    "environment density",
    "tensor products",
    "latent MLPs",
    "readout MLP",
    "forces, stress",
    "other",
)


def stage_profile(potential, positions, species, cell, pbc) -> dict:
    """Seconds per stage of one ``Potential.compute`` (run on one thread), by timing every block
    the model calls (wrapped in the model module's namespace for the duration)."""
    import allegro_ref.model.allegro as allegro_module
    import allegro_ref.potential as potential_module

    model = potential.model
    names = {}
    for name, value in model.params.items():
        names[id(value)] = name.rsplit(".", 1)[0]
    mlp_stage = {
        "basis_linear": "two-body MLP",
        "scalar_embed_mlp": "two-body MLP",
        "tensor_embed": "embedding linears",
        "first_projection": "embedding linears",
        "readout": "readout MLP",
    }
    blocks = {
        "bessel_basis_forward": "geometry",
        "bessel_basis_backward": "geometry",
        "polynomial_cutoff_forward": "geometry",
        "polynomial_cutoff_backward": "geometry",
        "spherical_harmonics_forward": "geometry",
        "spherical_harmonics_backward": "geometry",
        "irrep_weighted_forward": "irrep weights",
        "irrep_weighted_backward": "irrep weights",
        "environment_density_forward": "environment density",
        "environment_density_backward": "environment density",
        "group_edges": "environment density",
        "mlp_forward": None,
        "mlp_backward": None,
    }
    seconds: dict[str, float] = collections.defaultdict(float)

    def timed(function, stage):
        def call(*a, **k):
            watch = time.perf_counter()
            result = function(*a, **k)
            which = stage
            if which is None:  # an MLP: its stage from its first weight's name
                prefix = names[id(a[0][0])]
                which = mlp_stage.get(prefix, "latent MLPs")
            seconds[which] += time.perf_counter() - watch
            return result

        return call

    patched = [
        (allegro_module, name, timed(getattr(allegro_module, name), s))
        for name, s in blocks.items()
    ]
    for tp in model._tensor_products:
        patched += [(tp, "forward", timed(tp.forward, "tensor products"))]
        patched += [(tp, "backward", timed(tp.backward, "tensor products"))]
    patched += [
        (
            potential_module,
            "neighbor_list",
            timed(potential_module.neighbor_list, "neighbour list"),
        ),
        (potential_module, "edge_vectors", timed(potential_module.edge_vectors, "neighbour list")),
        (potential_module, "segment_sum", timed(potential_module.segment_sum, "forces, stress")),
    ]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patched]
    single = copy.copy(potential)
    single.num_threads, single.num_processes = 1, 1
    try:
        for obj, name, function in patched:
            setattr(obj, name, function)
        watch = time.perf_counter()
        single.compute(positions, species, cell, pbc)
        total = time.perf_counter() - watch
    finally:
        for obj, name, function in originals:
            if isinstance(obj, type(model._tensor_products[0])):
                delattr(obj, name)  # back to the class's methods
            else:
                setattr(obj, name, function)
    seconds["other"] = total - sum(seconds.values())
    return {"total": total, **{stage: seconds[stage] for stage in STAGES}}
