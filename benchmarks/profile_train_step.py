"""CPU time of one training step of allegro_ref, part by part (one thread, float32, a batch of
five rattled fcc Cu₃₂ cells labelled with EMT), for docs/training.md.

    OMP_NUM_THREADS=1 python benchmarks/profile_train_step.py [--rounds 11] [--json FILE]

Two configurations: ``bench_train`` (the model of benchmarks/bench_train.py: l_max 1, S 32,
U 8, r_max 4.5 Å) and ``cu_benchmark`` (docs/benchmarks.md: l_max 2, S 64, U 32, r_max 5 Å).
Parts, as `allegro_ref.train.loss.loss_and_gradient` runs them:

- ``predict``: `AllegroModel.forward` and the backward that keeps its cotangents
  (``keep_cotangents=True``), i.e. energies, forces and stresses;
- ``second order``: `AllegroModel.backward_jvp`, the force- and stress-term gradient
  (forward-over-reverse: the tangent forward and the tangent backward);
- ``step``: the whole `loss_and_gradient` plus one Adam step.

Each part is timed in rounds that rotate their order, under the malloc policy of
`Trainer.fit` (glibc keeps the freed memory); the medians are printed, in ms.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from allegro_ref._execution import tune_host_memory
from allegro_ref.model import AllegroModel, presets
from allegro_ref.train import Adam, build_graph, collate, loss_and_gradient
from allegro_ref.train.data import structure_from_atoms

CONFIGS = {
    "bench_train": lambda: presets.cu_small(avg_num_neighbors=35.0),
    "cu_benchmark": lambda: presets.cu_benchmark(l_max=2),
}


def cu_batch(config, n_cells: int = 5, seed: int = 0):
    """A batch of ``n_cells`` rattled (0.1 Å) fcc Cu₃₂ cells with EMT labels."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_cells):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.positions += rng.normal(0.0, 0.1, atoms.positions.shape)
        atoms.calc = EMT()
        structure = structure_from_atoms(atoms)
        graphs.append(build_graph(structure, config.type_names, config.r_max))
    return collate(graphs)


def parts(model: AllegroModel, batch) -> dict[str, Callable[[], object]]:
    """The timed parts (module docstring), each a function of nothing."""
    energies, cache = model.forward(
        batch.edge_vectors, batch.centers, batch.neighbors, batch.atom_types
    )
    ones = np.ones_like(energies)
    _, kept = model.backward(cache, ones, keep_cotangents=True)
    rng = np.random.default_rng(1)
    directions = rng.standard_normal(batch.edge_vectors.shape) * 1e-2
    atom_cotangent = rng.standard_normal(energies.shape) * 1e-3
    optimizer = Adam(model.params, list(model.params), lr=1e-6)

    def predict():
        _, c = model.forward(batch.edge_vectors, batch.centers, batch.neighbors, batch.atom_types)
        return model.backward(c, ones, keep_cotangents=True)

    def step():
        result = loss_and_gradient(model, batch)
        return optimizer.step(model.params, result.gradients)

    return {
        "predict": predict,
        "second order": lambda: model.backward_jvp(cache, kept, directions, atom_cotangent),
        "step": step,
    }


def measure(name: str, rounds: int) -> dict[str, float]:
    """Median CPU milliseconds of each part of configuration ``name``."""
    config = CONFIGS[name]()
    model = AllegroModel.init(config, seed=0, dtype="float32")
    batch = cu_batch(config)
    timed = parts(model, batch)
    samples: dict[str, list[float]] = {part: [] for part in timed}
    names = list(timed)
    for r in range(rounds + 1):  # round 0 warms up
        for part in names[r % len(names) :] + names[: r % len(names)]:
            start = time.process_time()
            timed[part]()
            if r:
                samples[part].append(time.process_time() - start)
    result = {part: 1e3 * float(np.median(values)) for part, values in samples.items()}
    result["edges"] = int(batch.edge_vectors.shape[0])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    tune_host_memory(True)  # as Trainer.fit does (TrainConfig.keep_host_memory)
    results = {name: measure(name, args.rounds) for name in CONFIGS}
    print(f"{'configuration':14s} {'edges':>6s} {'predict':>8s} {'2nd order':>9s} {'step':>7s}")
    for name, r in results.items():
        print(
            f"{name:14s} {r['edges']:6d} {r['predict']:8.1f} {r['second order']:9.1f} "
            f"{r['step']:7.1f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
