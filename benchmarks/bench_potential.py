"""Time one MD step (energy + forces + stress) of allegro_ref, and of the official nequip-allegro
model where it is installed, on rattled fcc Cu.

Model (both codes): 1 species, r_max 5.0 Å, l_max 2, parity, 2 layers, S = 64, U = 32, MLP
widths 64/64/32 (official defaults), 8 Bessels, p = 6, avg_num_neighbors 42, random weights.
System: cubic fcc Cu (a = 3.61 Å) supercells of 256, 1000, 2048 and 16384 atoms, rattled by
0.02 Å (42 edges per atom).

Every row runs in its own subprocess, so its peak memory (``ru_maxrss``, imports included) is
its own. allegro_ref rows are split by stage: neighbour list (host, with the edge vectors and
input checks), forward, backward (edge gradients), and the rest (forces, stress, virials); the
total is one ``Potential.compute`` call. Official rows time ``model(data)`` with forces and stress
by autograd, plus the neighbour list transform (matscipy), run by the interpreter given in
``--compare-python`` (default ``.venv-compare/bin/python``; skipped if it is missing).

    python benchmarks/bench_potential.py            # all rows (long: minutes)
    python benchmarks/bench_potential.py --quick    # 256 and 1000 atoms, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPEATS = {256: (3, 2), 1000: (3, 1), 2048: (2, 1), 16384: (1, 0)}  # (timed, warm-up) calls
SIZES = {256: (4, 4, 4), 1000: (5, 5, 10), 2048: (8, 8, 8), 16384: (16, 16, 16)}
MODEL = dict(
    type_names=["Cu"],
    r_max=5.0,
    l_max=2,
    parity=True,
    num_layers=2,
    num_scalar_features=64,
    num_tensor_features=32,
    scalar_embed_mlp_hidden_layers_width=64,
    allegro_mlp_hidden_layers_width=64,
    readout_mlp_hidden_layers_width=32,
    avg_num_neighbors=42.0,
)


def copper(n_atoms: int):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(SIZES[n_atoms])
    atoms.rattle(0.02, seed=0)
    return atoms


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# One row, in a child process
# ---------------------------------------------------------------------------------------------


def row_allegro_ref(n_atoms: int, dtype: str, repeats: int, warmup: int) -> dict:
    from allegro_ref.backend import segment_sum
    from allegro_ref.model import AllegroConfig
    from allegro_ref.neighbors import edge_vectors, neighbor_list
    from allegro_ref.potential import Potential

    atoms = copper(n_atoms)
    potential = Potential.from_config(AllegroConfig(**MODEL), seed=0, dtype=dtype)
    model = potential.model
    positions, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    types = np.zeros(n_atoms, dtype=np.int64)
    stages: dict[str, list[float]] = {
        "neighbors": [],
        "forward": [],
        "backward": [],
        "total": [],
        "cpu": [],
    }
    n_edges = 0
    for call in range(warmup + repeats):
        t0 = time.perf_counter()
        centers, neighbors, shifts = neighbor_list(positions, cell, pbc, MODEL["r_max"])
        vectors = edge_vectors(positions, cell, centers, neighbors, shifts)
        t1 = time.perf_counter()
        energies, cache = model.forward(vectors, centers, neighbors, types)
        t2 = time.perf_counter()
        grads = model.backward(cache, np.ones(n_atoms))
        t3 = time.perf_counter()
        segment_sum(grads, centers, n_atoms) - segment_sum(grads, neighbors, n_atoms)
        del cache
        t4, c4 = time.perf_counter(), time.process_time()
        potential.compute(positions, ["Cu"] * n_atoms, cell, pbc)
        t5, c5 = time.perf_counter(), time.process_time()
        if call >= warmup:
            stages["neighbors"].append(t1 - t0)
            stages["forward"].append(t2 - t1)
            stages["backward"].append(t3 - t2)
            stages["total"].append(t5 - t4)
            stages["cpu"].append(c5 - c4)
        n_edges = int(centers.shape[0])
    row = {name: float(np.median(times)) for name, times in stages.items()}
    row["min"] = float(np.min(stages["total"]))
    row["rest"] = row["total"] - row["neighbors"] - row["forward"] - row["backward"]
    return {"code": "allegro_ref", "edges": n_edges, **row}


def row_official(n_atoms: int, dtype: str, repeats: int, warmup: int) -> dict:
    import torch
    from allegro.model import AllegroModel
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.utils.global_state import set_global_state

    set_global_state()
    kwargs = dict(MODEL)
    kwargs.update(
        seed=0,
        model_dtype=dtype,
        radial_chemical_embed={
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
            "num_bessels": 8,
            "bessel_trainable": False,
            "polynomial_cutoff_p": 6,
        },
    )
    model = AllegroModel(**kwargs).eval()
    atoms = copper(n_atoms)
    transforms = [
        ChemicalSpeciesToAtomTypeMapper(
            model_type_names=["Cu"], chemical_species_to_atom_type_map={"Cu": "Cu"}
        ),
        NeighborListTransform(r_max=MODEL["r_max"]),
    ]
    stages: dict[str, list[float]] = {"neighbors": [], "total": [], "cpu": []}
    n_edges = 0
    for call in range(warmup + repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        data = from_ase(atoms)
        for transform in transforms:
            data = transform(data)
        t1 = time.perf_counter()
        out = model(data)
        _ = (out[AtomicDataDict.FORCE_KEY].sum() + out[AtomicDataDict.STRESS_KEY].sum()).item()
        t2, c2 = time.perf_counter(), time.process_time()
        if call >= warmup:
            stages["neighbors"].append(t1 - t0)
            stages["total"].append(t2 - t0)
            stages["cpu"].append(c2 - c0)
        n_edges = int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1])
    row = {name: float(np.median(times)) for name, times in stages.items()}
    row["min"] = float(np.min(stages["total"]))
    return {"code": f"nequip-allegro (torch {torch.__version__})", "edges": n_edges, **row}


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def run_child(python: str, code: str, n_atoms: int, dtype: str, repeats: int, warmup: int):
    command = [python, __file__, "--row", code, str(n_atoms), dtype, str(repeats), str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return {"code": code, "error": tail[0] if tail else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 and 1000 atoms, 2 repeats")
    parser.add_argument("--sizes", type=int, nargs="*", default=None, choices=list(SIZES))
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    parser.add_argument("--compare-python", default=str(ROOT / ".venv-compare" / "bin" / "python"))
    parser.add_argument(
        "--official-max-atoms",
        type=int,
        default=1000,
        help="skip official rows above this size (eager torch needs ~11 GB at 1000 atoms, f64)",
    )
    parser.add_argument("--row", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.row:
        code, n_atoms, dtype, repeats, warmup = args.row
        function = row_allegro_ref if code == "allegro_ref" else row_official
        row = function(int(n_atoms), dtype, int(repeats), int(warmup))
        row.update(atoms=int(n_atoms), dtype=dtype, peak_rss_gb=peak_rss_gb())
        print(json.dumps(row))
        return

    sizes = args.sizes or ([256, 1000] if args.quick else list(SIZES))
    official = os.path.exists(args.compare_python)
    print(f"# fcc Cu, r_max 5.0, l_max 2, 2 layers, S 64, U 32; {os.cpu_count()} CPUs")
    header = (
        f"{'code':<22} {'dtype':<8} {'atoms':>6} {'edges':>8} {'nl s':>7} {'fwd s':>7} "
        f"{'bwd s':>7} {'rest s':>7} {'total s':>8} {'min s':>7} {'cpu s':>7} "
        f"{'atom·step/s':>11} {'peak GB':>8} {'ratio':>6}"
    )
    print(header)
    for n_atoms in sizes:
        for dtype in args.dtypes:
            repeats, warmup = (2, 1) if args.quick else REPEATS[n_atoms]
            rows = [run_child(sys.executable, "allegro_ref", n_atoms, dtype, repeats, warmup)]
            if official and n_atoms <= args.official_max_atoms:
                rows.append(
                    run_child(args.compare_python, "official", n_atoms, dtype, repeats, warmup)
                )
            ours = rows[0].get("total")
            for row in rows:
                if "error" in row:
                    print(f"{row['code']:<22} {dtype:<8} {n_atoms:>6}  failed: {row['error']}")
                    continue

                def cell(key, row=row):
                    return f"{row[key]:7.3f}" if key in row else f"{'-':>7}"

                ratio = f"{row['total'] / ours:6.2f}" if ours else "-"
                print(
                    f"{row['code'][:22]:<22} {dtype:<8} {n_atoms:>6} {row['edges']:>8} "
                    f"{cell('neighbors')} {cell('forward')} {cell('backward')} {cell('rest')} "
                    f"{row['total']:8.3f} {cell('min')} {cell('cpu')} "
                    f"{n_atoms / row['total']:11.0f} "
                    f"{row['peak_rss_gb']:8.2f} {ratio}",
                    flush=True,
                )
    print(
        "# total = median wall s/step, min = fastest, cpu = process CPU s/step; "
        "ratio = total / allegro_ref total (> 1: allegro_ref is faster)"
    )


if __name__ == "__main__":
    main()
