"""`python -m allegro_ref`: the command line.

`md` (the default): a short NVE molecular-dynamics run of fcc copper. Builds a cubic fcc Cu
supercell of exactly `--atoms` atoms (a = 3.61 Å, rattled; a cubic fcc supercell of k × k × k
cells has 4k³ atoms, so other counts are refused with the nearest valid ones), gives it
Maxwell-Boltzmann velocities, runs ASE's velocity-Verlet integrator with an Allegro potential
and prints the energy drift (eV/atom) and the throughput (atom·steps/s). The potential is the
shipped `cu-emt` model (trained by allegro_ref on EMT copper; see `allegro_ref.pretrained`), a
weights file given with `--model`, or, with `--random`, a small model with seeded random
weights. A model must know Cu: the shipped `ethanol-gfn2` and other models without copper are
refused before anything runs.

`train CONFIG.yaml`: train a model (`allegro_ref.train.cli`).

Bad arguments end with exit status 2 and one line on standard error, a run that fails with
status 1 and one line (`--debug` shows the traceback instead). Requires the `ase` extra (ase,
vesin, tqdm).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import Any

import numpy as np

from ._cli import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    one_line,
    positive_float,
    positive_int,
    run_reporting_errors,
)

LATTICE_CONSTANT = 3.61  # Å, fcc Cu
MAX_CELLS_PER_SIDE = 100  # 4 000 000 atoms

DESCRIPTION = (
    "NVE molecular dynamics of fcc copper with an Allegro potential: prints the energy drift "
    "and the throughput. Bad arguments exit with status 2, a failed run with status 1, each "
    "with a one-line message (--debug: the traceback)."
)
TOP_DESCRIPTION = (
    "The allegro_ref command line: md (the default) runs NVE molecular dynamics of fcc copper, "
    "train trains a model from a YAML config. 'python -m allegro_ref md --help' and "
    "'python -m allegro_ref train --help' list their options."
)


def fcc_atom_count(text: str) -> int:
    """A number of atoms of a cubic fcc supercell, 4k³ (k = 1 ... `MAX_CELLS_PER_SIDE`); the
    error names the nearest valid counts."""
    atoms = positive_int(text)
    largest = 4 * MAX_CELLS_PER_SIDE**3
    if atoms > largest:
        raise argparse.ArgumentTypeError(f"{atoms} atoms is more than the {largest} allowed")
    k = round((atoms / 4) ** (1 / 3))  # exact for 4k³; then the largest k with 4k³ <= atoms
    while 4 * k**3 > atoms:
        k -= 1
    while 4 * (k + 1) ** 3 <= atoms:
        k += 1
    if 4 * k**3 == atoms:
        return atoms
    nearest = [str(4 * m**3) for m in (k, k + 1) if m >= 1]
    raise argparse.ArgumentTypeError(
        f"a cubic fcc supercell of k×k×k cells has 4k³ atoms (4, 32, 108, 256, 500, ...); "
        f"{atoms} is not one: the nearest {'is' if len(nearest) == 1 else 'are'} "
        f"{' and '.join(nearest)}"
    )


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------
def build_parser() -> tuple[ArgumentParser, ArgumentParser]:
    """The parser of `python -m allegro_ref` and that of its `md` command."""
    parser = ArgumentParser(
        prog="python -m allegro_ref",
        description=TOP_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    md = commands.add_parser(
        "md",
        help="NVE molecular dynamics of fcc Cu (the default command)",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    md.add_argument(
        "--atoms",
        type=fcc_atom_count,
        default=108,
        help="atoms of the cubic fcc Cu supercell: 4k³ for k×k×k cells (4, 32, 108, 256, "
        "500, 864, ...); other counts are refused",
    )
    md.add_argument("--steps", type=positive_int, default=100, help="MD steps")
    md.add_argument(
        "--temperature", type=non_negative_float, default=300.0, help="initial temperature (K)"
    )
    md.add_argument("--timestep", type=positive_float, default=1.0, help="time step (fs)")
    md.add_argument(
        "--model",
        default="cu-emt",
        help="a shipped model that knows Cu (cu-emt; ethanol-gfn2 has no Cu and is refused) or "
        "a weights file written by Potential.save whose species include Cu",
    )
    md.add_argument(
        "--random",
        action="store_true",
        help="use a small Allegro model with seeded random weights instead of --model",
    )
    md.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="network dtype"
    )
    md.add_argument(
        "--backend",
        choices=["numpy", "cupy"],
        default="numpy",
        help="array library of the potential (cupy: NVIDIA GPU, needs CuPy)",
    )
    md.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the rattle, the velocities and (with --random) the weights",
    )
    md.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="worker processes evaluating the potential on NumPy (Potential num_processes)",
    )
    md.add_argument("--debug", action="store_true", help="show the traceback of a failed run")
    commands.add_parser(
        "train",
        help="train a model from a YAML config (python -m allegro_ref train --help)",
        add_help=False,
    )
    return parser, md


def main(argv: list[str] | None = None) -> int:
    """Entry point; `argv` are the arguments after `python -m allegro_ref` (default:
    `sys.argv[1:]`). Returns the exit status; usage errors raise `SystemExit(2)`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from .train.cli import main as train_main

        return train_main(argv[1:])
    parser, md_parser = build_parser()
    if not argv or argv[0] not in ("md", "-h", "--help"):
        argv = ["md", *argv]  # md is the default command
    args = parser.parse_args(argv)
    model = load_md_model(args, md_parser)
    return run_reporting_errors(run_md, args, model, prog=md_parser.prog, debug=args.debug)


# ---------------------------------------------------------------------------------------------
# md
# ---------------------------------------------------------------------------------------------
def load_md_model(args: argparse.Namespace, parser: ArgumentParser):
    """The model `md` will run, checked before anything runs: usage errors (an unknown model,
    a missing or unreadable file, no Cu, CuPy missing) end through `parser.error`."""
    if args.backend == "cupy" and importlib.util.find_spec("cupy") is None:
        parser.error("--backend cupy needs CuPy (pip install cupy-cuda12x), which is not installed")
    if args.random:
        from .model import AllegroModel, presets

        config = presets.cu_small()  # small enough for a ~20 s run of 108 atoms on a laptop core
        return AllegroModel.init(config, seed=args.seed, dtype=args.dtype)
    loaded = _load_weights(args.model, parser)
    species = list(loaded.config.type_names)
    if "Cu" not in species:
        parser.error(
            f"--model {args.model}: the model's species are {species}, without Cu; md simulates "
            "fcc copper, so it needs a model that knows Cu (e.g. cu-emt)"
        )
    return type(loaded)(loaded.config, loaded.params, args.dtype)


def _load_weights(name: str, parser: ArgumentParser):
    from . import pretrained
    from .potential import Potential

    if name in pretrained.MODELS:
        return pretrained.load(name).model
    if not os.path.isfile(name):
        shipped = ", ".join(pretrained.MODELS)
        parser.error(f"--model {name}: no such file, and not a shipped model ({shipped})")
    try:
        return Potential.load(name).model
    except (ValueError, OSError) as error:
        parser.error(f"--model {name}: {one_line(error)}")


def _describe(args: argparse.Namespace, model: Any) -> str:
    from . import pretrained

    config = model.config
    if args.random:
        return (
            f"potential: Allegro with random weights (seed {args.seed}; not copper's energies): "
            f"{list(config.type_names)}, r_max {config.r_max} Å, l_max {config.l_max}, "
            f"{config.num_layers} layers, S={config.num_scalar_features}, "
            f"U={config.num_tensor_features}, {args.dtype}"
        )
    if args.model in pretrained.MODELS:
        return f"potential: shipped model {args.model!r} ({pretrained.available()[args.model]})"
    return f"potential: {args.model}"


def run_md(args: argparse.Namespace, model: Any) -> int:
    """Build the copper supercell, run NVE MD with `model`, print the drift and throughput."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from .ase import AllegroCalculator
    from .potential import Potential

    print(_describe(args, model))
    potential = Potential(model.to(args.backend), num_processes=args.processes)
    try:
        atoms = copper_supercell(args.atoms, args.temperature, args.seed)
        atoms.calc = AllegroCalculator(potential)
        k = round((args.atoms / 4) ** (1 / 3))
        print(
            f"system: fcc Cu {k}x{k}x{k} cubic cells = {len(atoms)} atoms, "
            f"T0 = {args.temperature} K; NVE velocity Verlet, {args.steps} steps of "
            f"{args.timestep} fs on {args.backend}"
        )
        dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
        totals, elapsed = _integrate(atoms, dynamics, args.steps)
    finally:
        potential.close()
    totals = np.asarray(totals) / len(atoms)
    print(
        f"energy drift: {totals[-1] - totals[0]:+.3e} eV/atom over {args.steps} steps "
        f"(max |E - E0| {np.max(np.abs(totals - totals[0])):.3e} eV/atom); "
        f"T end {atoms.get_temperature():.1f} K"
    )
    print(
        f"throughput: {len(atoms) * args.steps / elapsed:.0f} atom·steps/s "
        f"({elapsed / args.steps * 1e3:.1f} ms/step)"
    )
    return 0


def copper_supercell(n_atoms: int, temperature: float, seed: int):
    """A cubic fcc Cu supercell of `n_atoms` = 4k³ atoms (a = 3.61 Å), rattled by 0.02 Å, with
    Maxwell-Boltzmann velocities at `temperature` K and no center-of-mass motion."""
    from ase.build import bulk
    from ase.md.velocitydistribution import Stationary

    try:  # ase >= 3.29 (MaxwellBoltzmannDistribution is deprecated there)
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # older ase: the same function under its former name
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    k = round((n_atoms / 4) ** (1 / 3))
    atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANT, cubic=True).repeat((k, k, k))
    if len(atoms) != n_atoms:
        raise ValueError(f"{n_atoms} atoms is not 4k³ for an integer k")
    rng = np.random.default_rng(seed)
    atoms.rattle(0.02, rng=rng)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    return atoms


def _integrate(atoms: Any, dynamics: Any, steps: int) -> tuple[list[float], float]:
    """Run `steps` steps; the total energy before and after each, and the seconds taken."""
    from tqdm import tqdm

    totals = [atoms.get_total_energy()]
    start = time.perf_counter()
    with tqdm(total=steps, unit="step", file=sys.stderr) as bar:
        for _ in range(steps):
            dynamics.run(1)
            totals.append(atoms.get_total_energy())
            bar.update(1)
    return totals, time.perf_counter() - start


if __name__ == "__main__":
    raise SystemExit(main())
