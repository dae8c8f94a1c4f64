"""allegro_ref in LAMMPS on 1, 2 and 4 MPI ranks: time per step, duplicated work, communication
volume, and agreement of the final state with the 1-rank run.

    python benchmarks/bench_lammps.py --cells 8 10 16 20 --steps 3 --ranks 1 2 4

Runs ``examples/lammps/run_md.py`` (NVE fcc Cu, default random-weight Cu-sized model) under
``mpiexec -n K`` with ``OMP_NUM_THREADS=1`` and prints one table row per size and rank count:

- wall time per step (per force evaluation), and the slowest rank's time inside allegro_ref:
  evaluating (neighbor list + network), the ghost-force exchange and the reductions (both
  include waiting for the other ranks); ``cpu``, the CPU time spent evaluating, summed over the
  ranks: the total work, which a loaded machine does not inflate;
- edges per rank and the duplicated fraction of the work, ``1 - E_1 / (K · edges per rank)``
  with ``E_1`` the edges of the 1-rank run (the network's cost is linear in edges);
- communication per rank and step: ``fwd`` = 24 bytes per ghost owned by another rank, the
  positions LAMMPS sends every step (a lower bound: corner ghosts may travel twice), and
  ``rev`` = the bytes of ghost forces allegro_ref sends back (rebuild messages included);
  ``fwd@2r`` is what LAMMPS would send with the 2·r_max + skin ghost cutoff that a coupling
  without reverse communication needs (counted by a LAMMPS run without the model);
- the largest difference of positions and of the total energy from the 1-rank run.

Needs the ``lammps`` and ``mpi4py`` modules and ``mpiexec`` in this Python's environment. Rank
counts above the number of cores oversubscribe them: their times say nothing about scaling.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lammps" / "run_md.py"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")

PATTERNS = {
    "wall": r"time: ([\d.]+) ms/step wall",
    "allegro": r"slowest rank per step: ([\d.]+) ms in allegro_ref",
    "evaluate": r"of which ([\d.]+) ms evaluating",
    "exchange": r"([\d.]+) ms in the ghost force exchange",
    "reduce": r"and ([\d.]+) ms in reductions",
    "cpu": r"cpu: ([\d.]+) ms of CPU time",
    "edges": r"work: (\d+) edges per rank",
    "remote": r"(\d+) ghosts per rank owned by another rank",
    "rev": r"communication: (\d+) bytes",
    "dx": r"max \|dx\| ([\d.e+-]+) Å",
    "de": r"\|dE\| ([\d.e+-]+) eV",
}


def run(n_ranks: int, cells: int, args, reference: Path) -> dict[str, float]:
    output = reference if n_ranks == 1 else reference.with_name(f"out{n_ranks}.npz")
    command = [MPIEXEC, "-n", str(n_ranks), sys.executable, str(EXAMPLE)]
    command += ["--cells", str(cells), "--steps", str(args.steps), "--output", str(output)]
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
    row["fwd"] = 24.0 * row["remote"]
    return row


def census(n_ranks: int, cells: int, cutoff: float) -> float:
    """Ghosts per rank owned by another rank with ghost cutoff ``cutoff`` (LAMMPS only)."""
    command = [MPIEXEC, "-n", str(n_ranks), sys.executable, __file__, "--census-worker"]
    command += [str(cells), str(cutoff)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return float(re.search(r"remote ghosts per rank: ([\d.]+)", done.stdout).group(1))


def census_worker(cells: int, cutoff: float) -> None:
    """(under mpiexec) The set-up of run_md.py, ``run 0`` without a potential, and the mean
    number of ghosts per rank whose atom ID no atom of the rank has."""
    from mpi4py import MPI

    from allegro_ref.lammps import _owners_from_tags, open_lammps
    from allegro_ref.model import presets

    lmp = open_lammps(["-log", "none", "-screen", "none", "-nocite"])
    r_max = presets.cu_small().r_max
    for name, value in dict(cells=cells, rmax=r_max, skin=1.0, temperature=600, seed=1).items():
        lmp.command(f"variable {name} equal {value}")
    lmp.file(str(EXAMPLE.parent / "in.cu_fcc.lammps"))
    lmp.command(f"comm_modify cutoff {cutoff}")
    lmp.command("run 0")
    n_local, n_ghost = lmp.extract_setting("nlocal"), lmp.extract_setting("nghost")
    tags = np.array(lmp.numpy.extract_atom("id", nelem=n_local + n_ghost), dtype=np.int64)
    remote = float(np.sum(_owners_from_tags(tags, n_local)[n_local:] < 0))
    comm = MPI.COMM_WORLD
    total = comm.allreduce(remote)
    if comm.rank == 0:
        print(f"remote ghosts per rank: {total / comm.size}")
    lmp.close()


def cost_model(t_edge: float, edges_per_atom: float, args) -> None:
    """Prints the estimated step time of a cubic sub-domain of n atoms, for both couplings, and
    strong and weak scaling from it (see docs/lammps.md, "Cost model")."""
    from allegro_ref.model import presets

    r_max, skin, rho = presets.cu_small().r_max, 1.0, 4 / 3.61**3  # fcc Cu, atoms/Å³
    alpha, beta = args.latency * 1e-6, args.bandwidth * 1e9

    def step(n: float, n_ranks: float, old: bool) -> tuple[float, float, float, float]:
        side = (n / rho) ** (1 / 3)
        shell = (2 * r_max if old else r_max) + skin
        ghosts = rho * ((side + 2 * shell) ** 3 - side**3)
        evaluated = rho * (side + 2 * r_max) ** 3 if old else n
        compute = evaluated * edges_per_atom * t_edge
        volume = 24 * ghosts * (1 if old else 2)  # forward positions (+ reverse forces)
        messages = 6 if old else 6 + 26
        comm = messages * alpha + volume / beta + 2 * alpha * max(np.log2(n_ranks), 1)
        comm += 0 if old else ghosts * args.host_ns_per_ghost * 1e-9  # packing, summing
        return compute, comm, volume, 1 - n / evaluated

    print(
        f"# cost model (estimate): t_edge {t_edge * 1e6:.2f} µs, {edges_per_atom:.1f} edges/atom, "
        f"latency {args.latency} µs, bandwidth {args.bandwidth} GB/s, "
        f"{args.host_ns_per_ghost} ns per ghost on the host"
    )
    print(
        f"{'atoms/rank':>10} {'coupling':>8} {'dup %':>6} {'bytes':>10} {'comm ms':>8} "
        f"{'compute ms':>11} {'efficiency':>10}"
    )
    for n in (1e3, 1e4, 1e5, 1e6):
        for old in (True, False):
            compute, comm, volume, dup = step(n, 1024, old)
            ideal = n * edges_per_atom * t_edge
            print(
                f"{n:10.0f} {'2·r_max' if old else 'reverse':>8} {100 * dup:6.1f} {volume:10.3g} "
                f"{comm * 1e3:8.3f} {compute * 1e3:11.1f} {ideal / (compute + comm):10.3f}"
            )
    for total in (1e6, 1e8):
        ranks = [p for p in (8, 64, 512, 4096, 32768) if total / p >= 100]
        cells = []
        for p in ranks:
            compute, comm, _, _ = step(total / p, p, False)
            cells.append(f"P={p}: {total * edges_per_atom * t_edge / (compute + comm):.3g}")
        print(f"strong scaling, {total:.0e} atoms, speed-up over one rank: " + ", ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[8], help="4·n³ atoms each")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--census-worker", nargs=2, type=float, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cost-model",
        nargs=2,
        type=float,
        metavar=("T_EDGE_US", "EDGES_PER_ATOM"),
        help="only print the cost-model estimate for this time per edge and edges per atom",
    )
    parser.add_argument("--latency", type=float, default=2.0, help="µs per message (estimate)")
    parser.add_argument("--bandwidth", type=float, default=10.0, help="GB/s per rank (estimate)")
    parser.add_argument(
        "--host-ns-per-ghost",
        type=float,
        default=100.0,
        help="host time of the reverse exchange per ghost, ns (NumPy packing and summing)",
    )
    args = parser.parse_args()
    if args.census_worker:
        census_worker(int(args.census_worker[0]), args.census_worker[1])
        return
    if args.cost_model:
        cost_model(args.cost_model[0] * 1e-6, args.cost_model[1], args)
        return
    from allegro_ref.model import presets

    r_max = presets.cu_small().r_max  # run_md.py's model; its default skin is 1 Å
    if args.ranks[0] != 1:
        parser.error("the first rank count must be 1 (the reference run)")
    print(
        f"# NVE fcc Cu, {args.steps} steps, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; times in ms per step; communication in bytes per rank "
        f"per step"
    )
    print(
        f"{'atoms':>6} {'ranks':>5} {'wall':>8} {'allegro':>8} {'evaluate':>8} {'exchange':>8} "
        f"{'cpu':>8} "
        f"{'reduce':>7} {'edges/rank':>10} {'dup %':>6} {'fwd':>8} {'rev':>8} {'fwd@2r':>8} "
        f"{'max|dx| Å':>10} {'|dE| eV':>9}"
    )
    for cells in args.cells:
        with tempfile.TemporaryDirectory() as folder:
            reference = Path(folder) / "out1.npz"
            for n_ranks in args.ranks:
                r = run(n_ranks, cells, args, reference)
                if n_ranks == 1:
                    edges_one = r["edges"]
                duplicated = 100.0 * (1.0 - edges_one / (n_ranks * r["edges"]))
                old_forward = 24.0 * census(n_ranks, cells, 2 * r_max + 1.0)
                print(
                    f"{4 * cells**3:6d} {n_ranks:5d} {r['wall']:8.1f} {r['allegro']:8.1f} "
                    f"{r['evaluate']:8.1f} {r['exchange']:8.1f} {r['cpu']:8.1f} {r['reduce']:7.1f} "
                    f"{r['edges']:10.0f} {duplicated:6.1f} {r['fwd']:8.0f} {r['rev']:8.0f} "
                    f"{old_forward:8.0f} {r['dx']:10.1e} {r['de']:9.1e}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
