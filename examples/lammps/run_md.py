"""NVE molecular dynamics of fcc copper in LAMMPS with allegro_ref, on any number of MPI ranks.

    OMP_NUM_THREADS=1 mpiexec -n 4 python examples/lammps/run_md.py --cells 10 --output out4.npz

(one BLAS thread per rank: more threads than cores make NumPy several times slower.)

LAMMPS reads the set-up from ``in.cu_fcc.lammps`` (next to this file), decomposes the box over
the MPI ranks, and calls allegro_ref on every rank at every step through ``fix external``
(``allegro_ref.lammps.AllegroFix``). At the end rank 0 prints the final energies with 12 decimals
(identical for every rank count, to float64 rounding), the time per step, the edges evaluated
per rank, and the bytes of ghost forces each rank sends to its neighbors per step.

The potential is ``--model FILE`` (written by ``Potential.save``, e.g. the shipped
``allegro_ref/pretrained/cu_emt.npz``), else a seeded random model with the architecture of the
shipped cu-emt model (``presets.cu_small()``): then the dynamics exercises the code, not copper's
physics.

``--output FILE`` saves the final positions and velocities (ordered by initial lattice site) and
``--compare FILE`` prints the largest difference from such a file, e.g. the 1-rank run's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from allegro_ref.lammps import AllegroFix, open_lammps
from allegro_ref.model import presets
from allegro_ref.potential import Potential

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=10, help="fcc cells per edge (4·n³ atoms)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=600.0, help="initial T, K")
    parser.add_argument("--skin", type=float, default=1.0, help="neighbor skin, Å")
    parser.add_argument("--seed", type=int, default=4928)
    parser.add_argument("--model", default=None, help="Potential.save file (default: random)")
    parser.add_argument("--output", default=None, help="save final x, v (by lattice site) to .npz")
    parser.add_argument("--compare", default=None, help="compare final x, v with this .npz")
    parser.add_argument("--screen", action="store_true", help="show LAMMPS's own output")
    return parser.parse_args()


def set_up(lmp, args, potential: Potential) -> tuple[AllegroFix, int, np.ndarray]:
    """The box, atoms and velocities of in.cu_fcc.lammps with allegro_ref attached; also the
    number of atoms and the order of the atoms by initial lattice site."""
    variables = dict(
        cells=args.cells,
        rmax=potential.config.r_max,
        skin=args.skin,
        temperature=args.temperature,
        seed=args.seed,
    )
    for name, value in variables.items():
        lmp.command(f"variable {name} equal {value}")
    lmp.file(str(HERE / "in.cu_fcc.lammps"))
    fix = AllegroFix(lmp, potential, ["Cu"])
    lmp.command("compute unwrapped all property/atom xu yu zu")
    # create_atoms numbers atoms differently on different rank counts: compare atoms by their
    # initial lattice site instead of their ID
    natoms = lmp.get_natoms()
    sites = np.array(lmp.gather_atoms("x", 1, 3)).reshape(natoms, 3)
    return fix, natoms, np.lexsort(np.round(sites / 1e-3).T)


def final_state(lmp, natoms: int, by_site: np.ndarray) -> dict:
    """Thermodynamic quantities, unwrapped positions and velocities (by lattice site)."""
    thermo = {key: lmp.get_thermo(key) for key in ("pe", "ke", "etotal", "temp", "press")}
    unwrapped = np.array(lmp.gather("c_unwrapped", 1, 3)).reshape(natoms, 3)[by_site]
    v = np.array(lmp.gather_atoms("v", 1, 3)).reshape(natoms, 3)[by_site]
    return {"thermo": thermo, "positions": unwrapped, "velocities": v}


def report(args, comm, fix: AllegroFix, natoms: int, elapsed: float, state: dict) -> None:
    """(every rank) Reduce the timings, edge counts and message sizes; rank 0 prints them and
    the final state, and saves or compares it."""
    s = fix.stats
    slowest = np.array([s.seconds, s.seconds_evaluate, s.seconds_exchange, s.seconds_reduce])
    totals = np.array(
        [s.edges, s.remote_ghosts, s.bytes_sent, s.cpu_seconds_evaluate], dtype=np.float64
    )
    comm.Allreduce(MPI.IN_PLACE, slowest, op=MPI.MAX)
    comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
    if comm.rank != 0:
        return
    print(
        f"system: {natoms} Cu atoms, {args.steps} NVE steps of 1 fs on {comm.size} MPI "
        f"rank(s); {s.rebuilds} neighbor-list rebuilds on rank 0"
    )
    thermo = state["thermo"]
    for key, value in thermo.items():
        print(f"final {key:6s} {value:22.12f}")
    # `run N` evaluates the forces N + 1 times (once in its set-up): times are per evaluation
    per_step = 1e3 / s.calls
    print(
        f"time: {elapsed * per_step:.1f} ms/step wall (per force evaluation, {s.calls} of them); "
        f"slowest rank per step: "
        f"{slowest[0] * per_step:.1f} ms in allegro_ref, of which "
        f"{slowest[1] * per_step:.1f} ms evaluating, {slowest[2] * per_step:.1f} ms in the ghost "
        f"force exchange and {slowest[3] * per_step:.1f} ms in reductions (waiting included)"
    )
    print(f"cpu: {totals[3] * per_step:.1f} ms of CPU time evaluating per step, all ranks together")
    per_rank_step = 1.0 / s.calls / comm.size
    print(
        f"work: {totals[0] * per_rank_step:.0f} edges per rank per step (all centered on owned "
        f"atoms); {totals[1] * per_rank_step:.0f} ghosts per rank owned by another rank"
    )
    print(
        f"communication: {totals[2] * per_rank_step:.0f} bytes of ghost forces sent per rank "
        f"per step"
    )
    if args.output:
        np.savez(
            args.output, positions=state["positions"], velocities=state["velocities"], **thermo
        )
    if args.compare:
        with np.load(args.compare) as other:
            dx = np.max(np.abs(state["positions"] - other["positions"]))
            dv = np.max(np.abs(state["velocities"] - other["velocities"]))
            de = abs(thermo["etotal"] - float(other["etotal"]))
        print(f"vs {args.compare}: max |dx| {dx:.2e} Å, max |dv| {dv:.2e} Å/ps, |dE| {de:.2e} eV")


def main() -> None:
    args = parse_args()
    if args.model is None:
        potential = Potential.from_config(presets.cu_small(), seed=0)
        model_note = "random weights, seed 0"
    else:
        potential = Potential.load(args.model)
        model_note = args.model

    screen = [] if args.screen else ["-screen", "none"]
    lmp = open_lammps(["-log", "none", "-nocite", *screen])
    comm = lmp.get_mpi_comm()
    fix, natoms, by_site = set_up(lmp, args, potential)
    lmp.command("run 0")  # set-up: first forces (not timed)
    fix.reset_stats()
    comm.Barrier()
    start = time.perf_counter()
    lmp.command(f"run {args.steps}")
    elapsed = time.perf_counter() - start
    state = final_state(lmp, natoms, by_site)
    if comm.rank == 0:
        print(
            f"model: {model_note}; r_max {potential.config.r_max} Å, "
            f"ghost cutoff {fix.ghost_cutoff:g} Å"
        )
    report(args, comm, fix, natoms, elapsed, state)
    lmp.close()


if __name__ == "__main__":
    main()
