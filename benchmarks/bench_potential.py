"""One MD step (energy + forces + stress) of allegro_ref against the official nequip-allegro model,
eager and AOTInductor-compiled, on the same weights and structures: the single source of truth
for docs/benchmarks.md.

Systems (``--system``):
    cu       rattled (0.02 Å) cubic fcc Cu supercells, a = 3.61 Å, 42 edges per atom at r_max 5 Å;
             model: 1 species, r_max 5.0 Å, l_max ``--lmax`` (1/2/3), parity, 2 layers,
             S = 64, U = 32, MLP widths 64/64/32, 8 Bessels, p = 6, N̄ = 42.
    ethanol  liquid-like ethanol (9 atoms per molecule, random orientations on a cubic grid of
             5 Å, periodic), variable numbers of neighbours; model: the official tutorial
             config (l_max 1, S 64, U 32, all MLP widths 64, r_max 5.0 Å, species C H O).

Weights: the official builder ``allegro.model.AllegroModel(seed=0, ...)`` in the benchmark's
dtype, written as a checkpoint (benchmarks/.cache/, from the Lightning checkpoint format of
tests/fixtures/nequip_tiny.ckpt) and compiled with ``nequip-compile --mode aotinductor
--device cpu --target ase``; allegro_ref imports that checkpoint (``Potential.from_nequip``), so
the three codes compute the same function.

Timing: every code runs in its own worker process (its peak RSS is its own, imports included),
kept alive across the measurement; the driver asks the workers for one step each in turn
(allegro_ref, eager, compiled, allegro_ref, ...) so that the load of a shared machine hits all
of them alike, and reports medians and ratios. A step includes the neighbour list and the
input conversion in every code: ``Potential.compute`` for allegro_ref (``chunk_bytes`` default,
one BLAS thread, ``num_processes`` = threads; its peak memory adds the worker processes'),
``model(data)`` after nequip's transforms for the
eager model, ``NequIPCalculator.calculate`` for the compiled one (torch threads = threads).

Cost model (``--cost-model``): per stage of allegro_ref (1 thread), the floating-point
operations and the bytes an ideal implementation must move per edge, against this machine's
matrix-multiply rate and memory bandwidth measured by the same script (``--peaks``).

    python benchmarks/bench_potential.py --quick                 # 256 + 1000 atoms, l_max 2
    python benchmarks/bench_potential.py --sizes 2048 16384 131072 --codes allegro_ref
    python benchmarks/bench_potential.py --cost-model --sizes 1000
    python benchmarks/bench_potential.py --backend cupy --codes allegro_ref   # on a GPU
    python benchmarks/bench_potential.py ... --json results.json  # plot: plot_benchmarks.py
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
COMPARE_PYTHON = ROOT / ".venv-compare" / "bin" / "python"
TINY_CHECKPOINT = ROOT / "tests" / "fixtures" / "nequip_tiny.ckpt"
CODES = ("allegro_ref", "eager", "compiled")
CU_SIZES = {256: (4, 4, 4), 1000: (5, 5, 10), 2048: (8, 8, 8), 16384: (16, 16, 16)}
CU_SIZES[131072] = (32, 32, 32)
# (timed steps, warm-up steps) per code by default: fewer for the large sizes
STEPS = {131072: (1, 1), 16384: (2, 1)}
# official eager peak memory grows ~11 MB per atom in float64 (shared/reference §6): skip it
# above this size unless asked
OFFICIAL_MAX_ATOMS = 1000
EMBED = {
    "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
    "num_bessels": 8,
    "bessel_trainable": False,
    "polynomial_cutoff_p": 6,
}
CU_MODEL = dict(
    type_names=["Cu"],
    r_max=5.0,
    parity=True,
    num_layers=2,
    num_scalar_features=64,
    num_tensor_features=32,
    scalar_embed_mlp_hidden_layers_width=64,
    allegro_mlp_hidden_layers_width=64,
    readout_mlp_hidden_layers_width=32,
    avg_num_neighbors=42.0,
)
TUTORIAL_MODEL = dict(
    type_names=["C", "H", "O"],
    r_max=5.0,
    l_max=1,
    parity=True,
    num_layers=2,
    num_scalar_features=64,
    num_tensor_features=32,
    scalar_embed_mlp_hidden_layers_width=64,
    allegro_mlp_hidden_layers_width=64,
    readout_mlp_hidden_layers_width=64,
    avg_num_neighbors=33.0,
)


# ---------------------------------------------------------------------------------------------
# Systems and models
# ---------------------------------------------------------------------------------------------


def structure(system: str, n_atoms: int):
    """The ``ase.Atoms`` of a benchmark row."""
    from ase.build import bulk, molecule

    if system == "cu":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(CU_SIZES[n_atoms])
        atoms.rattle(0.02, seed=0)
        return atoms
    # ethanol: n_atoms / 9 molecules, randomly rotated, on a cubic grid of 5 Å
    n_side = round((n_atoms / 9) ** (1 / 3))
    if 9 * n_side**3 != n_atoms:
        raise ValueError(f"ethanol rows need 9·n³ atoms (e.g. 243, 1125), got {n_atoms}")
    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")
    base.positions -= base.positions.mean(axis=0)
    atoms = None
    for index in np.ndindex(n_side, n_side, n_side):
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        m = base.copy()
        m.positions = m.positions @ (q * np.sign(np.diag(r))).T + 5.0 * (np.array(index) + 0.5)
        atoms = m if atoms is None else atoms + m
    atoms.cell = np.eye(3) * 5.0 * n_side
    atoms.pbc = True
    return atoms


def builder_kwargs(system: str, lmax: int, dtype: str) -> dict:
    model = dict(CU_MODEL, l_max=lmax) if system == "cu" else dict(TUTORIAL_MODEL)
    return dict(model, seed=0, model_dtype=dtype, radial_chemical_embed=dict(EMBED))


def artefact(system: str, lmax: int, dtype: str, suffix: str) -> Path:
    tag = f"{system}_l{lmax}" if system == "cu" else system
    return CACHE / f"allegro_{tag}_{dtype}{suffix}"


def make_official(system: str, lmax: int, dtype: str) -> None:
    """(official stack) The checkpoint of the official model with the builder's seed-0 weights,
    and its AOTInductor build, in benchmarks/.cache/."""
    import torch
    from allegro.model import AllegroModel
    from nequip.utils.global_state import set_global_state

    set_global_state()
    kwargs = builder_kwargs(system, lmax, dtype)
    model = AllegroModel(**kwargs)
    # A Lightning checkpoint of an EMA training module (nequip-train's format): the tiny
    # fixture's, with this model's config and weights (EMA weights = the weights).
    ckpt = torch.load(TINY_CHECKPOINT, map_location="cpu", weights_only=False)
    config = {"_target_": "allegro.model.AllegroModel", **copy.deepcopy(kwargs)}
    ckpt["hyper_parameters"]["model"] = config
    info = ckpt["hyper_parameters"]["info_dict"]
    info["training_module"]["model"] = copy.deepcopy(config)
    # compile traces the model on a frame of the checkpoint's data set (EMT copper, read as
    # the model's first type)
    dataset = info["data"]["split_dataset"]["dataset"]
    for transform in dataset["transforms"]:
        if transform["_target_"].endswith("NeighborListTransform"):
            transform["r_max"] = kwargs["r_max"]
            transform.pop("per_edge_type_cutoff", None)
            transform["type_names"] = kwargs["type_names"]
        else:
            transform["model_type_names"] = kwargs["type_names"]
            transform["chemical_species_to_atom_type_map"] = {"Cu": kwargs["type_names"][0]}
    state = {
        k: v
        for k, v in ckpt["state_dict"].items()
        if not k.startswith(("model.", "ema.ema_weight_"))
    }
    state.update({f"model.sole_model.{k}": v for k, v in model.state_dict().items()})
    for i, parameter in enumerate(model.parameters()):
        state[f"ema.ema_weight_{i}"] = parameter.detach().clone()
    ckpt["state_dict"] = state
    ckpt["optimizer_states"] = []
    CACHE.mkdir(parents=True, exist_ok=True)
    path = artefact(system, lmax, dtype, ".ckpt")
    torch.save(ckpt, path)
    compiled = artefact(system, lmax, dtype, ".nequip.pt2")
    command = [str(Path(sys.executable).parent / "nequip-compile"), str(path), str(compiled)]
    command += ["--mode", "aotinductor", "--device", "cpu", "--target", "ase"]
    subprocess.run(command, check=True, capture_output=True)


# ---------------------------------------------------------------------------------------------
# Workers: one process per code, one step per request
# ---------------------------------------------------------------------------------------------


class Stopwatch:
    """Wall and process CPU time of one call."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> dict:
        return {"wall": time.perf_counter() - self.wall, "cpu": time.process_time() - self.cpu}


def worker_allegro_ref(args) -> tuple:
    from allegro_ref.potential import Potential

    atoms = structure(args.system, args.atoms)
    potential = Potential.from_nequip(artefact(args.system, args.lmax, args.dtype, ".ckpt"))
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

    info = {"edges": None, "chunk_edges": potential.chunk_edges}
    from allegro_ref.neighbors import neighbor_list

    info["edges"] = int(neighbor_list(positions, cell, pbc, potential.config.r_max)[0].shape[0])
    return step, stages, info, potential.close


def worker_eager(args) -> tuple:
    import torch
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.utils.global_state import set_global_state

    set_global_state()
    torch.set_num_threads(args.threads)
    kwargs = builder_kwargs(args.system, args.lmax, args.dtype)
    model = load_saved_model(str(artefact(args.system, args.lmax, args.dtype, ".ckpt"))).eval()
    atoms = structure(args.system, args.atoms)
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


def worker_compiled(args) -> tuple:
    import torch
    from ase.calculators.calculator import all_changes
    from nequip.integrations.ase import NequIPCalculator

    torch.set_num_threads(args.threads)
    path = artefact(args.system, args.lmax, args.dtype, ".nequip.pt2")
    calculator = NequIPCalculator.from_compiled_model(
        str(path), device="cpu", chemical_species_to_atom_type_map=True
    )
    atoms = structure(args.system, args.atoms)

    def step() -> dict:
        watch = Stopwatch()
        calculator.calculate(atoms, ["energy", "forces", "stress"], all_changes)
        return {**watch.stop(), "energy": float(calculator.results["energy"])}

    return step, None, {"torch": torch.__version__}, None


def run_worker(args) -> None:
    """Serve requests on stdin: ``step`` (one timed step), ``stages`` (allegro_ref's profile),
    ``quit`` (peak RSS); one JSON line per answer on stdout."""
    make = {"allegro_ref": worker_allegro_ref, "eager": worker_eager}
    make["compiled"] = worker_compiled
    step, stages, info, close = make[args.worker](args)
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
        env["PYTHONPATH"] = str(ROOT)
        command = [python, __file__, "--worker", code, "--system", args.system]
        command += ["--lmax", str(args.lmax), "--atoms", str(n_atoms), "--dtypes", dtype]
        command += ["--threads", str(threads), "--backend", args.backend]
        self.code = code
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
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


# ---------------------------------------------------------------------------------------------
# Stage profile and cost model (allegro_ref)
# ---------------------------------------------------------------------------------------------

STAGES = (
    "neighbour list",
    "geometry",
    "two-body MLP",
    "embedding linears",
    "irrep weights",
    "environment density",
    "tensor products",
    "latent MLPs",
    "readout MLP",
    "forces, stress",
    "other",
)


def stage_profile(potential, positions, species, cell, pbc) -> dict:
    """Seconds per stage of one ``Potential.compute`` (run on one thread), by timing every block
    the model calls (wrapped in the model module's namespace for the duration)."""
    import allegro_ref.model.allegro as allegro_module
    import allegro_ref.potential as potential_module

    model = potential.model
    names = {}
    for name, value in model.params.items():
        names[id(value)] = name.rsplit(".", 1)[0]
    mlp_stage = {
        "basis_linear": "two-body MLP",
        "scalar_embed_mlp": "two-body MLP",
        "tensor_embed": "embedding linears",
        "first_projection": "embedding linears",
        "readout": "readout MLP",
    }
    blocks = {
        "bessel_basis_forward": "geometry",
        "bessel_basis_backward": "geometry",
        "polynomial_cutoff_forward": "geometry",
        "polynomial_cutoff_backward": "geometry",
        "spherical_harmonics_forward": "geometry",
        "spherical_harmonics_backward": "geometry",
        "irrep_weighted_forward": "irrep weights",
        "irrep_weighted_backward": "irrep weights",
        "environment_density_forward": "environment density",
        "environment_density_backward": "environment density",
        "group_edges": "environment density",
        "mlp_forward": None,
        "mlp_backward": None,
    }
    seconds: dict[str, float] = collections.defaultdict(float)

    def timed(function, stage):
        def call(*a, **k):
            watch = time.perf_counter()
            result = function(*a, **k)
            which = stage
            if which is None:  # an MLP: its stage from its first weight's name
                prefix = names[id(a[0][0])]
                which = mlp_stage.get(prefix, "latent MLPs")
            seconds[which] += time.perf_counter() - watch
            return result

        return call

    patched = [
        (allegro_module, name, timed(getattr(allegro_module, name), s))
        for name, s in blocks.items()
    ]
    for tp in model._tensor_products:
        patched += [(tp, "forward", timed(tp.forward, "tensor products"))]
        patched += [(tp, "backward", timed(tp.backward, "tensor products"))]
    patched += [
        (
            potential_module,
            "neighbor_list",
            timed(potential_module.neighbor_list, "neighbour list"),
        ),
        (potential_module, "edge_vectors", timed(potential_module.edge_vectors, "neighbour list")),
        (potential_module, "segment_sum", timed(potential_module.segment_sum, "forces, stress")),
    ]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in patched]
    single = copy.copy(potential)
    single.num_threads, single.num_processes = 1, 1
    try:
        for obj, name, function in patched:
            setattr(obj, name, function)
        watch = time.perf_counter()
        single.compute(positions, species, cell, pbc)
        total = time.perf_counter() - watch
    finally:
        for obj, name, function in originals:
            if isinstance(obj, type(model._tensor_products[0])):
                delattr(obj, name)  # back to the class's methods
            else:
                setattr(obj, name, function)
    seconds["other"] = total - sum(seconds.values())
    return {"total": total, **{stage: seconds[stage] for stage in STAGES}}


def cost_per_edge(config, n_edges: int, n_atoms: int, itemsize: int) -> dict:
    """Per stage: (flops, bytes) per edge of forward + backward (energy and forces), counting
    the multiply-adds of matrix products (2 flops) and elementwise operations, and the bytes an
    implementation that streams each stage's inputs and outputs once must move."""
    U, D, B = config.num_tensor_features, config.sh_irreps.dim, config.num_bessels
    k = n_edges / max(n_atoms, 1)
    shapes = config.parameter_shapes()

    def mlp(prefix: str) -> tuple[float, float]:
        weights = [shapes[f"{prefix}.{i}"] for i in range(10) if f"{prefix}.{i}" in shapes]
        macs = sum(a * b for a, b in weights)
        hidden = sum(b for _, b in weights[:-1])
        widths = weights[0][0] + sum(b for _, b in weights)
        # forward 2·macs, backward 2·macs (input gradients only: forces need no weight
        # gradient); SiLU and its slope ~20 flops forward, 1 backward
        flops = 4 * macs + 21 * hidden
        return flops, itemsize * 3 * widths

    cost = {stage: [0.0, 0.0] for stage in STAGES}
    for prefix, stage in (
        ("basis_linear", "two-body MLP"),
        ("scalar_embed_mlp", "two-body MLP"),
        ("tensor_embed", "embedding linears"),
        ("first_projection", "embedding linears"),
        ("readout", "readout MLP"),
        *((f"latent.{i}", "latent MLPs") for i in range(config.num_layers)),
    ):
        f, b = mlp(prefix)
        cost[stage][0] += f
        cost[stage][1] += b
    # geometry: Bessel (B sines), envelope, harmonics and their derivatives, in float64
    cost["geometry"] = [30.0 * B + 20.0 * D, 8 * (3 + 2 * B + 2 * D) * 2]
    # irrep weights: V⁰ = w ⊙ Y and its two-way backward
    cost["irrep weights"] = [3.0 * U * D, itemsize * 6 * U * D]
    # environment density per layer: Σ_e w ⊙ Y onto the centre, and ∂/∂w, ∂/∂Y
    n_l, layers = config.num_sh_irreps, config.num_layers
    cost["environment density"] = [
        layers * 3 * 2.0 * U * D,
        layers * itemsize * (3 * U * n_l + 3 * D),
    ]
    flops_tp = bytes_tp = 0.0
    for irreps_in, irreps_out in config.layer_irreps():
        d1, d2, d_out = irreps_in.dim, config.sh_irreps.dim, irreps_out.dim
        flops_tp += 3 * 2 * U * d1 * d_out + 3 * 2 * U * d1 * d2 * d_out / k  # edges + atoms
        bytes_tp += itemsize * U * (3 * d1 + 3 * d_out)  # x, out; g, x, grad_x (+ layouts)
    cost["tensor products"] = [flops_tp, bytes_tp]
    cost["forces, stress"] = [3 * 3 + 9 * 2, 8 * (3 + 3 + 9) * 2]
    return {stage: tuple(v) for stage, v in cost.items()}


# ---------------------------------------------------------------------------------------------
# Machine peaks
# ---------------------------------------------------------------------------------------------


def measure_peaks(threads: int) -> dict:
    """(in a worker with ``threads`` BLAS threads) Matrix-multiply rate (GFLOP/s) of a 2048²
    product in float32 and float64, and memory bandwidth (GB/s, read + write) of copying a
    512 MB array in ``threads`` threads, best of 5."""
    from concurrent.futures import ThreadPoolExecutor

    peaks = {}
    for dtype in ("float32", "float64"):
        a = np.random.default_rng(0).random((2048, 2048)).astype(dtype)
        best = min(_time(lambda a=a: a @ a) for _ in range(5))
        peaks[f"gemm_{dtype}_gflops"] = 2 * 2048**3 / best / 1e9
    source = np.ones(2**26)  # 512 MB
    target = np.empty_like(source)
    halves = np.array_split(np.arange(source.size), threads)
    bounds = [(int(h[0]), int(h[-1]) + 1) for h in halves]

    def copy_part(bound):
        target[bound[0] : bound[1]] = source[bound[0] : bound[1]]

    with ThreadPoolExecutor(threads) as pool:
        best = min(_time(lambda: list(pool.map(copy_part, bounds))) for _ in range(5))
    peaks["bandwidth_gbs"] = 2 * source.nbytes / best / 1e9
    return peaks


def _time(function) -> float:
    watch = time.perf_counter()
    function()
    return time.perf_counter() - watch


def peaks_in_subprocess(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--peaks-worker", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def measure_row(args, n_atoms: int, dtype: str, threads: int) -> list[dict]:
    """One (size, dtype, threads) row per code, measured alternately."""
    codes = [c for c in args.codes if c == "allegro_ref" or n_atoms <= args.official_max_atoms]
    workers = []
    try:
        for code in codes:
            workers.append(Worker(code, args, n_atoms, dtype, threads))
        repeats, warmup = STEPS.get(n_atoms, (args.repeats, args.warmup))
        for _ in range(warmup):
            for worker in workers:
                worker.ask("step")
        times = {worker.code: [] for worker in workers}
        for _ in range(repeats):
            for worker in workers:
                times[worker.code].append(worker.ask("step"))
        profile = None
        if args.cost_model and workers[0].code == "allegro_ref":
            profile = [workers[0].ask("stages") for _ in range(repeats)]
        rows = []
        for worker in workers:
            walls = [t["wall"] for t in times[worker.code]]
            rows.append(
                {
                    "code": worker.code,
                    "system": args.system,
                    "lmax": args.lmax,
                    "dtype": dtype,
                    "threads": threads,
                    "atoms": n_atoms,
                    **worker.info,
                    "median_s": statistics.median(walls),
                    "min_s": min(walls),
                    "cpu_s": statistics.median(t["cpu"] for t in times[worker.code]),
                    "energy": times[worker.code][-1]["energy"],
                    "peak_rss_gb": worker.close(),
                }
            )
        if profile:
            best = min(profile, key=lambda p: p["total"])
            rows[0]["stages"] = best
        workers = []
        return rows
    finally:
        for worker in workers:
            worker.process.kill()


def print_row(row: dict, ours: dict | None) -> None:
    ratio = f"{row['median_s'] / ours['median_s']:6.2f}" if ours else f"{'-':>6}"
    if ours:  # the same function: energies agree to the model dtype's rounding
        row["energy_rel_diff"] = abs(row["energy"] - ours["energy"]) / abs(ours["energy"])
        ratio += f" | {row['energy_rel_diff']:.0e}"
    else:
        ratio += " | -"
    print(
        f"| {row['code']:<11} | {row['dtype']:<7} | {row['threads']} | {row['atoms']:>6} | "
        f"{row['median_s']:8.3f} | {row['min_s']:8.3f} | {row['cpu_s']:7.2f} | "
        f"{row['atoms'] / row['median_s']:8.0f} | {row['peak_rss_gb']:6.2f} | {ratio} |",
        flush=True,
    )


def print_cost_model(row: dict, peaks: dict, config) -> None:
    stages = row["stages"]
    itemsize = 4 if row["dtype"] == "float32" else 8
    edges = row["edges"]
    cost = cost_per_edge(config, edges, row["atoms"], itemsize)
    gemm = peaks[f"gemm_{row['dtype']}_gflops"]
    print(
        f"\ncost model: {row['system']} {row['atoms']} atoms, {edges} edges, {row['dtype']}, "
        f"1 thread; machine: matmul {gemm:.1f} GFLOP/s, copy {peaks['bandwidth_gbs']:.1f} GB/s"
    )
    print("| stage | ms | % | flop/edge | byte/edge | GFLOP/s | % matmul | GB/s | % bandwidth |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stage in STAGES:
        seconds = stages[stage]
        flops, nbytes = cost.get(stage, (0.0, 0.0))
        line = f"| {stage} | {1e3 * seconds:.1f} | {100 * seconds / stages['total']:.0f} |"
        if flops and seconds > 0:
            rate, traffic = flops * edges / seconds / 1e9, nbytes * edges / seconds / 1e9
            line += f" {flops:.3g} | {nbytes:.3g} | {rate:.2f} | {100 * rate / gemm:.0f} |"
            line += f" {traffic:.2f} | {100 * traffic / peaks['bandwidth_gbs']:.0f} |"
        else:
            line += " | | | | | |"
        print(line)
    print(f"| total | {1e3 * stages['total']:.1f} | 100 | | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", choices=["cu", "ethanol"], default="cu")
    parser.add_argument("--lmax", type=int, choices=[1, 2, 3], default=2)
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--codes", nargs="*", default=list(CODES), choices=CODES)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed steps per code (fewer above 2048 atoms)"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="256 and 1000 atoms, 3 repeats")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--official-max-atoms", type=int, default=OFFICIAL_MAX_ATOMS)
    parser.add_argument("--compare-python", type=Path, default=COMPARE_PYTHON)
    parser.add_argument("--cost-model", action="store_true", help="stage profile + cost model")
    parser.add_argument("--json", type=Path, help="append the rows to this JSON file")
    parser.add_argument("--worker", choices=CODES, help=argparse.SUPPRESS)
    parser.add_argument("--atoms", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--make-official", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peaks-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.peaks_worker:
        print(json.dumps(measure_peaks(args.peaks_worker)))
        return
    if args.make_official:
        for dtype in args.dtypes:
            make_official(args.system, args.lmax, dtype)
        return
    if args.worker:
        args.dtype, args.threads = args.dtypes[0], args.threads[0]
        run_worker(args)
        return

    if args.quick:
        args.repeats = 3
    sizes = args.sizes or ([256, 1000] if args.system == "cu" else [243, 1125])
    if args.backend == "cupy" or not args.compare_python.exists():
        if set(args.codes) != {"allegro_ref"}:
            print("# official codes skipped: no CPU torch comparison here")
        args.codes = ["allegro_ref"]
    for dtype in args.dtypes:
        missing = [
            s
            for s in (".ckpt", ".nequip.pt2")
            if not artefact(args.system, args.lmax, dtype, s).exists()
        ]
        if missing:
            name = artefact(args.system, args.lmax, dtype, "")
            if not args.compare_python.exists():
                raise SystemExit(f"{name}: missing {missing} and no official stack to build them")
            print(f"# building {name}{missing} (a few minutes)", flush=True)
            command = [str(args.compare_python), __file__, "--make-official", "--system"]
            command += [args.system, "--lmax", str(args.lmax), "--dtypes", dtype]
            subprocess.run(command, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; system {args.system}, "
        f"{'l_max ' + str(args.lmax) if args.system == 'cu' else 'tutorial config'}; backend "
        f"{args.backend}; {args.repeats} steps per code, alternated"
    )
    print(
        "| code | dtype | threads | atoms | median s | min s | cpu s | atom·step/s | "
        "peak GB | ratio | ΔE/E |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    all_rows = []
    peaks = {}
    for n_atoms in sizes:
        for dtype in args.dtypes:
            for threads in args.threads:
                rows = measure_row(args, n_atoms, dtype, threads)
                ours = next((r for r in rows if r["code"] == "allegro_ref"), None)
                for row in rows:
                    print_row(row, ours if row is not ours else None)
                all_rows.extend(rows)
    print(
        "# ratio = official median / allegro_ref median (> 1: allegro_ref is faster); "
        "peak = process peak RSS, imports included"
    )
    if args.cost_model:
        from allegro_ref.io import load_nequip

        peaks = peaks_in_subprocess(1)
        for row in all_rows:
            if "stages" in row:
                config = load_nequip(artefact(args.system, args.lmax, row["dtype"], ".ckpt")).config
                print_cost_model(row, peaks, config)
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
        previous["rows"].extend(all_rows)
        previous.setdefault("peaks", {}).update({"1": peaks} if peaks else {})
        args.json.write_text(json.dumps(previous, indent=1))


if __name__ == "__main__":
    main()
