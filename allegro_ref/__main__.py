"""``python -m allegro_ref``: the command line.

``md`` (the default): a short NVE molecular-dynamics run of fcc copper. Builds a cubic fcc Cu
supercell (a = 3.61 Å, rattled), gives it Maxwell-Boltzmann velocities, runs ASE's
velocity-Verlet integrator with an Allegro potential and prints the energy drift (eV/atom) and
the throughput (atom·steps/s). The potential is the shipped ``cu-emt`` model (trained by
allegro_ref on EMT copper; see ``allegro_ref.pretrained``), a weights file given with
``--model``, or, with ``--random``, a small model with seeded random weights.

``train CONFIG.yaml``: train a model (``allegro_ref.train.cli``).

Requires the ``ase`` extra (ase, vesin, tqdm).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import pretrained
from .model import AllegroModel, presets
from .potential import Potential

try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # older ase: the same function under its former name
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

LATTICE_CONSTANT = 3.61  # Å, fcc Cu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m allegro_ref", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command")
    md = commands.add_parser("md", help="NVE molecular dynamics of fcc Cu (the default command)")
    md.add_argument("--atoms", type=int, default=108, help="about this many atoms (4·k³)")
    md.add_argument("--steps", type=int, default=100)
    md.add_argument("--temperature", type=float, default=300.0, help="initial temperature, K")
    md.add_argument("--timestep", type=float, default=1.0, help="fs")
    md.add_argument(
        "--model",
        default="cu-emt",
        help="a shipped model name (see allegro_ref.pretrained) or a weights file (Potential.save)",
    )
    md.add_argument(
        "--random", action="store_true", help="use a small Allegro model with seeded random weights"
    )
    md.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    md.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes evaluating the potential on NumPy (Potential num_processes)",
    )
    commands.add_parser("train", help="train a model from a YAML config (allegro_ref.train)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from .train.cli import main as train_main

        return train_main(argv[1:])
    if not argv or argv[0] not in commands.choices and argv[0] not in ("-h", "--help"):
        argv = ["md", *argv]  # md is the default command
    args = parser.parse_args(argv)
    return run_md(args)


def run_md(args: argparse.Namespace) -> int:
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import Stationary
    from ase.md.verlet import VelocityVerlet
    from tqdm import tqdm

    from .ase import AllegroCalculator

    if args.random:
        config = presets.cu_small()  # small enough for a ~20 s run of 108 atoms on a laptop core
        model = AllegroModel.init(config, seed=args.seed, dtype=args.dtype)
        print(
            f"potential: Allegro with random weights (seed {args.seed}; not copper's energies): "
            f"{list(config.type_names)}, r_max {config.r_max} Å, l_max {config.l_max}, "
            f"{config.num_layers} layers, S={config.num_scalar_features}, "
            f"U={config.num_tensor_features}, {args.dtype}"
        )
    else:
        if args.model in pretrained.MODELS:
            loaded = pretrained.load(args.model).model
            print(f"potential: shipped model {args.model!r} ({pretrained.available()[args.model]})")
        else:
            loaded = Potential.load(args.model).model
            print(f"potential: {args.model}")
        model = AllegroModel(loaded.config, loaded.params, args.dtype)
    potential = Potential(model.to(args.backend), num_processes=args.processes)

    k = max(1, round((args.atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANT, cubic=True).repeat((k, k, k))
    rng = np.random.default_rng(args.seed)
    atoms.rattle(0.02, rng=rng)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    atoms.calc = AllegroCalculator(potential)
    n_atoms = len(atoms)
    print(
        f"system: fcc Cu {k}x{k}x{k} cubic cells = {n_atoms} atoms, T0 = {args.temperature} K; "
        f"NVE velocity Verlet, {args.steps} steps of {args.timestep} fs on {args.backend}"
    )

    dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
    totals = [atoms.get_total_energy()]
    start = time.perf_counter()
    with tqdm(total=args.steps, unit="step", file=sys.stderr) as bar:
        for _ in range(args.steps):
            dynamics.run(1)
            totals.append(atoms.get_total_energy())
            bar.update(1)
    elapsed = time.perf_counter() - start

    totals = np.asarray(totals) / n_atoms
    print(
        f"energy drift: {totals[-1] - totals[0]:+.3e} eV/atom over {args.steps} steps "
        f"(max |E - E0| {np.max(np.abs(totals - totals[0])):.3e} eV/atom); "
        f"T end {atoms.get_temperature():.1f} K"
    )
    print(
        f"throughput: {n_atoms * args.steps / elapsed:.0f} atom·steps/s "
        f"({elapsed / args.steps * 1e3:.1f} ms/step)"
    )
    potential.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
