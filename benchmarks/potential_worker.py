"""One worker process of benchmarks/bench_potential.py: one code on one structure, answering the
driver one request per line on stdin, one JSON line per answer on stdout. Both ends of that
exchange live here: ``serve`` in the worker, ``Worker`` in the driver.

    python benchmarks/potential_worker.py allegro_ref --system cu --lmax 2 --atoms 256 \
        --dtype float32 --threads 1          # then type: step, stages, quit

Codes: ``allegro_ref`` (``Potential.compute``: ``chunk_bytes`` default, one BLAS thread,
``num_processes`` = threads), ``eager`` (the official model: nequip's transforms and
``model(data)``) and ``compiled`` (``NequIPCalculator.calculate`` on the AOTInductor build); the
official codes need the official stack (``--compare-python`` of the driver) and its files in
benchmarks/.cache/ (make_official_models.py). A step includes the neighbor list and the input
conversion in every code.

Requests: ``step`` (one timed step: wall and CPU seconds, energy), ``stages`` (allegro_ref only:
seconds per stage, profile_stages.py), ``quit`` (the peak RSS in GB, imports included; for
allegro_ref on several processes plus an upper bound of its workers').
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import potential_systems as systems

CODES = ("allegro_ref", "eager", "compiled")


def children_cpu_seconds() -> float:
    """CPU seconds used so far by this process's live child processes (allegro_ref's worker
    processes with ``num_processes > 1``), from /proc; 0 where there is no /proc."""
    me, total = str(os.getpid()), 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """Wall and process CPU time of one call; ``tree_cpu`` adds the CPU time of the process's
    children (the driver's load measurement counts it as the benchmark's own, not as load)."""

    def __init__(self):
        self.children = children_cpu_seconds()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> dict:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        tree = cpu + children_cpu_seconds() - self.children
        return {"wall": wall, "cpu": cpu, "tree_cpu": tree}


def allegro_ref_worker(args) -> tuple:
    from allegro_ref.neighbors import neighbor_list
    from allegro_ref.potential import Potential
    from profile_stages import stage_profile

    atoms = systems.structure(args.system, args.atoms)
    potential = systems.allegro_ref_potential(args.system, args.lmax, args.dtype)
    potential = Potential(potential.model, num_threads=1, num_processes=args.threads)
    if args.backend == "cupy":
        potential = potential.to("cupy")
    positions, species = atoms.positions, atoms.get_chemical_symbols()
    cell, pbc = atoms.cell.array, atoms.pbc

    def step() -> dict:
        watch = Stopwatch()
        result = potential.compute(positions, species, cell, pbc)
        return {**watch.stop(), "energy": result["energy"]}

    def stages() -> dict:
        return stage_profile(potential, positions, species, cell, pbc)

    edges = neighbor_list(positions, cell, pbc, potential.config.r_max)[0].shape[0]
    info = {"edges": int(edges), "chunk_edges": potential.chunk_edges}
    return step, stages, info, potential.close


def eager_worker(args) -> tuple:
    import torch
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    set_global_state()
    torch.set_num_threads(args.threads)
    kwargs = systems.builder_kwargs(args.system, args.lmax, args.dtype)
    model = load_saved_model(
        str(systems.artifact(args.system, args.lmax, args.dtype, ".ckpt"))
    ).eval()
    atoms = systems.structure(args.system, args.atoms)
    names = kwargs["type_names"]
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(
            model_type_names=names, chemical_species_to_atom_type_map={n: n for n in names}
        ),
        NeighborListTransform(r_max=kwargs["r_max"]),
    ]

    def step() -> dict:
        watch = Stopwatch()
        data = from_ase(atoms)
        for transform in transforms:
            data = transform(data)
        out = model(data)
        energy = float(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().sum())
        _ = out[AtomicDataDict.FORCE_KEY].numpy(), out[AtomicDataDict.STRESS_KEY].numpy()
        return {**watch.stop(), "energy": energy}

    return step, None, {"torch": torch.__version__}, None


def compiled_worker(args) -> tuple:
    import torch
    from ase.calculators.calculator import all_changes
    from nequip.integrations.ase import NequIPCalculator

    torch.set_num_threads(args.threads)
    path = systems.artifact(args.system, args.lmax, args.dtype, ".nequip.pt2")
    calculator = NequIPCalculator.from_compiled_model(
        str(path), device="cpu", chemical_species_to_atom_type_map=True
    )
    atoms = systems.structure(args.system, args.atoms)

    def step() -> dict:
        watch = Stopwatch()
        calculator.calculate(atoms, ["energy", "forces", "stress"], all_changes)
        return {**watch.stop(), "energy": float(calculator.results["energy"])}

    return step, None, {"torch": torch.__version__}, None


def serve(args) -> None:
    """Serve requests on stdin: ``step`` (one timed step), ``stages`` (allegro_ref's profile),
    ``quit`` (peak RSS); one JSON line per answer on stdout."""
    make = {"allegro_ref": allegro_ref_worker, "eager": eager_worker, "compiled": compiled_worker}
    step, stages, info, close = make[args.code](args)
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        request = line.strip()
        if request == "step":
            answer = step()
        elif request == "stages":
            answer = stages()
        else:  # quit: peak RSS of this process, plus (an upper bound) allegro_ref's workers'
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if close is not None:
                close()  # the workers end: their peak is in RUSAGE_CHILDREN (the largest one)
                if args.threads > 1:
                    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                    peak += args.threads * largest
            answer = {"peak_rss_gb": peak / 2**20}
        print(json.dumps(answer), flush=True)
        if request == "quit":
            return


class Worker:
    """The driver's handle on a worker process."""

    def __init__(self, code: str, args, n_atoms: int, dtype: str, threads: int):
        python = sys.executable if code == "allegro_ref" else str(args.compare_python)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["OPENBLAS_NUM_THREADS"] = "1" if code == "allegro_ref" else str(threads)
        env["PYTHONPATH"] = str(systems.ROOT)
        command = [python, __file__, code, "--system", args.system]
        command += ["--lmax", str(args.lmax), "--atoms", str(n_atoms), "--dtype", dtype]
        command += ["--threads", str(threads), "--backend", args.backend]
        self.code = code
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=systems.ROOT,
        )
        self.info = self._read()
        self.info.pop("ready")

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.code} worker exited with status {self.process.wait()}")
        return json.loads(line)

    def ask(self, request: str) -> dict:
        self.process.stdin.write(request + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> float:
        peak = self.ask("quit")["peak_rss_gb"]
        self.process.wait()
        return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("code", choices=CODES)
    parser.add_argument("--system", choices=["cu", "ethanol"], default="cu")
    parser.add_argument("--lmax", type=int, choices=[1, 2, 3], default=2)
    parser.add_argument("--atoms", type=int, required=True)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    parser.add_argument("--threads", type=int, default=1, help="cores (processes or threads)")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    serve(parser.parse_args())


if __name__ == "__main__":
    main()
