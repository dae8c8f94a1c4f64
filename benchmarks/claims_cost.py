"""The cost claims of the Allegro paper (Musaelian et al., Nat. Commun. 14, 579 (2023)), measured
on allegro_ref: the time of one energy + forces + stress evaluation (``Potential.compute``, one
core) grows linearly with the number of atoms and with the number of neighbors per atom, and
does not grow with the number of chemical species.

    python benchmarks/claims_cost.py                  # writes benchmarks/results/claims/cost.json
    python benchmarks/claims_cost.py --repeats 3      # fewer timed rounds
    python benchmarks/claims_cost.py --json out.json  # elsewhere

Atoms: not re-measured; the rows of benchmarks/results/2026-12-02_cu_scaling_1core.json
(bench_potential.py, ``presets.cu_benchmark()``, 2 048 to 131 072 atoms, float32 and float64)
and the exponent of a log-log least-squares fit of CPU seconds against atoms.

Neighbors: ``presets.cu_benchmark()`` (float32, r_max 5 Å) on 1 000 fcc Cu atoms whose lattice
constant is scaled from 5.1 to 2.36 Å, so that the neighbors per atom within r_max go from 13 to
156 at a fixed atom count; the exponent of CPU seconds per atom against neighbors per atom.

Species: the same 1 000-atom fcc cell with random species drawn from the first 1, 4, 16, 64 or
89 elements (``type_names``), ``presets.cu_benchmark(type_names=...)`` otherwise unchanged:
species enter only through the center and neighbor embeddings (``[T, D/2]`` each) and per-type
scales, shifts and N̄, so the parameter count grows by ``D + 2`` per species and the cost
should not.

Every sweep times its points in alternation (claims_common.time_alternating: CPU seconds over
rounds, the machine's load recorded as bench_potential.py does) and reports the median and the
minimum over rounds (on a shared machine the minimum is the round least disturbed by other
processes' use of caches and memory bandwidth); fits are given for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

import claims_common as common
from allegro_ref import Potential
from allegro_ref.model import presets
from allegro_ref.neighbors import neighbor_list

SCALING_FILE = common.HERE / "results" / "2026-12-02_cu_scaling_1core.json"
REPEAT = (5, 5, 10)  # 1 000 atoms
LATTICES = (5.10, 4.30, 3.61, 3.35, 3.10, 2.70, 2.36)  # Å: 13 ... 156 neighbors within 5 Å
SPECIES_COUNTS = (1, 4, 16, 64, 89)
DTYPE = "float32"


def atoms_scaling(path: Path = SCALING_FILE) -> dict:
    """The stored rows of the atom-count sweep, per dtype, with the fitted exponent of CPU
    seconds against atoms."""
    rows = json.loads(path.read_text())["rows"]
    out = {"source": str(path.relative_to(common.HERE.parent)), "by_dtype": {}}
    for dtype in sorted({row["dtype"] for row in rows}):
        mine = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: r["atoms"])
        atoms = [r["atoms"] for r in mine]
        cpu = [r["cpu_s"] for r in mine]
        out["by_dtype"][dtype] = {
            "atoms": atoms,
            "edges": [r["edges"] for r in mine],
            "cpu_s": cpu,
            "us_per_atom": [1e6 * c / n for c, n in zip(cpu, atoms, strict=True)],
            "load_1min": [r["load_1min"] for r in mine],
            "other_cores": [r["other_cores"] for r in mine],
            "fit": common.power_law_fit(atoms, cpu),
        }
    return out


def neighbors_per_atom(atoms, r_max: float) -> float:
    """Directed edges within ``r_max`` per atom."""
    centers, _, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, r_max)
    return len(centers) / len(atoms)


def compute_step(potential: Potential, atoms, species=None):
    """One evaluation (energy, forces, stress) of ``atoms``, as a callable."""
    symbols = atoms.get_chemical_symbols() if species is None else species
    arrays = (atoms.positions, symbols, atoms.cell.array, atoms.pbc)
    return lambda: potential.compute(*arrays)


def neighbor_sweep(lattices=LATTICES, repeat=REPEAT, repeats: int = 5) -> dict:
    """CPU seconds per atom of ``presets.cu_benchmark()`` against the neighbors per atom, at a
    fixed atom count, by scaling the lattice constant."""
    config = presets.cu_benchmark()
    potential = common.one_core(Potential.from_config(config, seed=0, dtype=DTYPE))
    structures = [common.fcc_copper(repeat, lattice, rattle=0.02 * lattice) for lattice in lattices]
    seconds, load = common.time_alternating(
        [compute_step(potential, atoms) for atoms in structures], repeats
    )
    n_atoms = len(structures[0])
    neighbors = [neighbors_per_atom(atoms, config.r_max) for atoms in structures]
    per_atom = [1e6 * statistics.median(s) / n_atoms for s in seconds]
    per_atom_min = [1e6 * min(s) / n_atoms for s in seconds]
    return {
        "model": "presets.cu_benchmark()",
        "dtype": DTYPE,
        "atoms": n_atoms,
        "lattice_constants": list(lattices),
        "neighbors_per_atom": neighbors,
        "us_per_atom": per_atom,
        "cpu_s": seconds,
        "spread": [common.spread(s) for s in seconds],
        "us_per_atom_min": per_atom_min,
        "fit": common.power_law_fit(neighbors, per_atom),
        "fit_min": common.power_law_fit(neighbors, per_atom_min),
        **load,
    }


def species_names(count: int) -> tuple[str, ...]:
    """The first ``count`` elements, H onwards (89: H ... Ac)."""
    from ase.data import chemical_symbols

    return tuple(chemical_symbols[1 : count + 1])


def parameter_count(config) -> int:
    """Scalars in the model's parameters."""
    return int(sum(np.prod(shape) for shape in config.parameter_shapes().values()))


def species_sweep(counts=SPECIES_COUNTS, repeat=REPEAT, repeats: int = 5, model=None) -> dict:
    """CPU seconds per atom on one structure with random species drawn from ``count`` elements,
    for each count; the model is ``model(type_names=...)`` (default
    ``presets.cu_benchmark``)."""
    model = model or presets.cu_benchmark
    atoms = common.fcc_copper(repeat)
    rng = np.random.default_rng(0)
    steps, parameters = [], []
    for count in counts:
        names = species_names(count)
        config = model(type_names=names)
        potential = common.one_core(Potential.from_config(config, seed=0, dtype=DTYPE))
        species = [names[t] for t in rng.integers(count, size=len(atoms))]
        steps.append(compute_step(potential, atoms, species))
        parameters.append(parameter_count(config))
    seconds, load = common.time_alternating(steps, repeats)
    per_atom = [1e6 * statistics.median(s) / len(atoms) for s in seconds]
    per_atom_min = [1e6 * min(s) / len(atoms) for s in seconds]
    return {
        "model": f"presets.{model.__name__}(type_names=first T elements)",
        "dtype": DTYPE,
        "atoms": len(atoms),
        "species": list(counts),
        "parameters": parameters,
        "us_per_atom": per_atom,
        "cpu_s": seconds,
        "spread": [common.spread(s) for s in seconds],
        "us_per_atom_min": per_atom_min,
        "max_over_min": max(per_atom) / min(per_atom),
        "max_over_min_of_min": max(per_atom_min) / min(per_atom_min),
        **load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed rounds per sweep")
    parser.add_argument("--json", type=Path, default=common.RESULTS / "cost.json")
    args = parser.parse_args()
    atoms = atoms_scaling()
    for dtype, row in atoms["by_dtype"].items():
        print(f"atoms {dtype}: exponent {row['fit']['exponent']:.3f}, {row['us_per_atom']} µs")
    neighbors = neighbor_sweep(repeats=args.repeats)
    print(f"neighbors: {np.round(neighbors['neighbors_per_atom'], 1)}")
    print(f"  µs/atom {np.round(neighbors['us_per_atom'], 1)}, exponent {neighbors['fit']}")
    species = species_sweep(repeats=args.repeats)
    print(f"species {species['species']}: µs/atom {np.round(species['us_per_atom'], 1)}")
    print(f"  parameters {species['parameters']}, max/min {species['max_over_min']:.3f}")
    payload = {"atoms": atoms, "neighbors": neighbors, "species": species}
    print(f"wrote {common.write_result(args.json, payload)}")


if __name__ == "__main__":
    main()
