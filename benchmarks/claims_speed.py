"""Molecular-dynamics speed of allegro_ref at the size of the Allegro paper's speed example (192
atoms; Musaelian et al., Nat. Commun. 14, 579 (2023)), in ns/day on one CPU core, next to the
32.4 ns/day on one A100 GPU quoted for Allegro at 192 atoms (attributed to the Allegro authors;
we did not find it in the paper's text, so its model, system and timestep are not known here;
not re-measured).

    python benchmarks/claims_speed.py            # writes benchmarks/results/claims/speed.json
    python benchmarks/claims_speed.py --steps 10 --repeats 3

Model: the shipped ``cu-emt`` (``Potential.pretrained``: 2 layers, l_max 1, r_max 4.5 Å) in
float64 (as shipped) and float32 (the same weights, cast), on a periodic fcc Cu cell of 4 × 4 × 3
cubic cells (192 atoms) at 300 K. A step is one velocity-Verlet step of ASE (``VelocityVerlet``,
timestep 1 fs) with ``AllegroCalculator``: the neighbor list, energy, forces and stress and the
integrator. ns/day = 86 400 s / (CPU seconds per step) × timestep [fs] × 1e-6, one core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import claims_common as common
from allegro_ref import Potential
from allegro_ref.ase import AllegroCalculator

MODEL = "cu-emt"
REPEAT = (4, 4, 3)  # 192 atoms
TIMESTEP_FS = 1.0
PAPER = {
    "ns_per_day": 32.4,
    "atoms": 192,
    "hardware": "one NVIDIA A100 GPU",
    "source": "attributed to the Allegro authors; not found in the text of Musaelian et al., "
    "Nat. Commun. 14, 579 (2023); model, system and timestep unknown",
}


def shipped_potential(dtype: str, name: str = MODEL) -> Potential:
    """The shipped model ``name`` in ``dtype`` (the float64 weights cast for float32), one
    core."""
    shipped = Potential.pretrained(name)
    if dtype != shipped.dtype:
        model = shipped.model
        shipped = Potential(type(model)(model.config, model.params, dtype))
    return common.one_core(shipped)


def md_run(potential: Potential, repeat=REPEAT, steps: int = 20, timestep_fs: float = TIMESTEP_FS):
    """A callable that runs ``steps`` velocity-Verlet steps of an fcc Cu cell at 300 K."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    atoms = common.fcc_copper(repeat)
    rng = np.random.default_rng(0)
    sigma = np.sqrt(300.0 * units.kB / atoms.get_masses())[:, None]  # Maxwell-Boltzmann, 300 K
    atoms.set_momenta(atoms.get_masses()[:, None] * sigma * rng.standard_normal((len(atoms), 3)))
    atoms.calc = AllegroCalculator(potential)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    return lambda: dynamics.run(steps)


def ns_per_day(seconds_per_step: float, timestep_fs: float = TIMESTEP_FS) -> float:
    """Simulated ns per day of computing: 86 400 s / (s per step) × timestep [fs] × 1e-6."""
    return 86400.0 / seconds_per_step * timestep_fs * 1e-6


def run(dtypes=("float64", "float32"), repeat=REPEAT, steps: int = 20, repeats: int = 5) -> dict:
    """Seconds per MD step and ns/day of the shipped model in each dtype, alternated."""
    runs = [md_run(shipped_potential(dtype), repeat, steps) for dtype in dtypes]
    seconds, load = common.time_alternating(runs, repeats)
    rows = {}
    for dtype, times in zip(dtypes, seconds, strict=True):
        per_step = sorted(t / steps for t in times)
        median = per_step[len(per_step) // 2]
        rows[dtype] = {
            "s_per_step": median,
            "s_per_step_min": per_step[0],
            "ns_per_day": ns_per_day(median),
            "ns_per_day_best": ns_per_day(per_step[0]),
            "spread": common.spread(per_step),
        }
    return {
        "model": MODEL,
        "atoms": 4 * int(np.prod(repeat)),
        "timestep_fs": TIMESTEP_FS,
        "steps_per_round": steps,
        "rounds": repeats,
        "cores": 1,
        "by_dtype": rows,
        "paper": PAPER,
        **load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="MD steps per timed round")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds")
    parser.add_argument("--json", type=Path, default=common.RESULTS / "speed.json")
    args = parser.parse_args()
    result = run(steps=args.steps, repeats=args.repeats)
    for dtype, row in result["by_dtype"].items():
        print(
            f"{dtype}: {1e3 * row['s_per_step']:.1f} ms/step, {row['ns_per_day']:.2f} ns/day "
            f"(best {row['ns_per_day_best']:.2f}) at {TIMESTEP_FS} fs, one core"
        )
    print(f"paper: {PAPER['ns_per_day']} ns/day on {PAPER['hardware']}, {PAPER['atoms']} atoms")
    print(f"load {result['load_1min']}, other cores {result['other_cores']}")
    print(f"wrote {common.write_result(args.json, result)}")


if __name__ == "__main__":
    main()
