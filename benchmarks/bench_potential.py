"""One MD step (energy + forces + stress) of allegro_ref against the official nequip-allegro model,
eager and AOTInductor-compiled, on the same weights and structures: the single source of truth
for docs/benchmarks.md.

    python benchmarks/bench_potential.py --quick                 # 256 + 1000 atoms, l_max 2
    python benchmarks/bench_potential.py --sizes 2048 16384 131072 --codes allegro_ref
    python benchmarks/bench_potential.py --cost-model --sizes 1000
    python benchmarks/bench_potential.py --backend cupy --codes allegro_ref   # on a GPU
    python benchmarks/bench_potential.py ... --json results.json  # plot: plot_benchmarks.py

The files beside this one:

    potential_systems.py     the structures (``--system cu`` or ``ethanol``), the model of each
                             (``allegro_ref.model.presets``) and the official builder's arguments
    make_official_models.py  (official stack) the official checkpoint and its AOTInductor build,
                             in benchmarks/.cache/; run by this script when they are missing
    potential_worker.py      one process per code, one timed step per request
    profile_stages.py        seconds per stage of allegro_ref (``--cost-model``)
    cost_model.py            flops and bytes per edge and stage, and the machine's peaks

Timing: every code runs in its own worker process (its peak RSS is its own, imports included),
kept alive across the measurement; the driver asks the workers for one step each in turn
(allegro_ref, eager, compiled, allegro_ref, ...) so that the load of a shared machine hits all
of them alike, and reports medians and ratios. A step includes the neighbor list and the input
conversion in every code: ``Potential.compute`` for allegro_ref (``chunk_bytes`` default, one
BLAS thread, ``num_processes`` = threads; its peak memory adds the worker processes'),
``model(data)`` after nequip's transforms for the eager model, ``NequIPCalculator.calculate``
for the compiled one (torch threads = threads).

Load: every row records the machine's load while it ran (``load_1min``: the median of the
1-minute load average sampled after each round; ``other_cores``: the cores that processes other
than the workers kept busy, from the machine's CPU time in /proc/stat minus the workers' own
process CPU time, over the wall time of the timed rounds). A row is flagged ``loaded`` (the
table's last column, and the JSON) when ``other_cores`` exceeds ``--max-other-cores`` (default
0.5: other jobs kept more than half a core busy on average); without /proc/stat, when the load
average exceeds the row's own cores by that much. ``--refuse-loaded`` stops at the first
loaded row instead, and leaves it out of the JSON. A loaded row's wall times are inflated by the
competition; its CPU times (``cpu s``, and the ``cpu ×`` ratio of process CPU times, meaningful
for one core) less so.

Without the official stack (``--compare-python``) only allegro_ref is timed, on the official
checkpoint's weights where benchmarks/.cache/ has them, else on the preset with allegro_ref's
own seed-0 weights (the same shapes and cost; the energies differ).

Cost model (``--cost-model``): per stage of allegro_ref (1 thread), the floating-point
operations and the bytes an ideal implementation must move per edge, against this machine's
matrix-multiply rate and memory bandwidth measured in a process of its own.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import potential_systems as systems
from cost_model import peaks_in_subprocess, print_cost_model
from potential_worker import CODES, Worker

HERE = Path(__file__).resolve().parent
COMPARE_PYTHON = systems.ROOT / ".venv-compare" / "bin" / "python"
# (timed steps, warm-up steps) per code by default: fewer for the large sizes
STEPS = {131072: (1, 1), 16384: (2, 1)}
# official eager peak memory grows ~11 MB per atom in float64: skip it above this size unless
# asked
OFFICIAL_MAX_ATOMS = 1000
# a row is "loaded" when other processes kept more than this many cores busy on average
MAX_OTHER_CORES = 0.5


class LoadMeter:
    """The machine's load during a row: 1-minute load averages sampled after each round, and
    the cores other processes kept busy (machine CPU time from /proc/stat minus the workers')."""

    def __init__(self):
        self.samples, self.own_cpu = [], 0.0
        self.start = (time.perf_counter(), _busy_cpu_seconds())

    def sample(self, own_cpu: float) -> None:
        """After one round: ``own_cpu`` the workers' process CPU seconds in that round."""
        self.samples.append(os.getloadavg()[0])
        self.own_cpu += own_cpu

    def summary(self, threads: int, max_other_cores: float) -> dict:
        wall, busy = time.perf_counter() - self.start[0], _busy_cpu_seconds()
        load = statistics.median(self.samples) if self.samples else os.getloadavg()[0]
        summary = {"load_1min": round(load, 2), "other_cores": None}
        if busy is not None and self.start[1] is not None and wall > 0:
            other = (busy - self.start[1] - self.own_cpu) / wall
            summary["other_cores"] = round(max(other, 0.0), 2)
            summary["loaded"] = other > max_other_cores
        else:
            summary["loaded"] = load - threads > max_other_cores
        return summary


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (/proc/stat: all but idle
    and iowait; so steal, the time a hypervisor gave to other machines, counts as load too), or
    None where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
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
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=MAX_OTHER_CORES,
        help="flag a row 'loaded' when other processes kept more cores than this busy",
    )
    parser.add_argument("--refuse-loaded", action="store_true", help="stop at the first loaded row")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    args.sizes = args.sizes or systems.DEFAULT_SIZES[args.system]
    if args.backend == "cupy" or not args.compare_python.exists():
        if set(args.codes) != {"allegro_ref"}:
            print("# official codes skipped: no CPU torch comparison here")
        args.codes = ["allegro_ref"]
    return args


def make_official_models(args) -> None:
    """Build the official checkpoints and compiled models that the cache lacks, with the
    official stack; without it allegro_ref runs the preset with its own weights."""
    suffixes = (".ckpt", ".nequip.pt2")
    for dtype in args.dtypes:
        files = [systems.artifact(args.system, args.lmax, dtype, s) for s in suffixes]
        missing = [s for s, path in zip(suffixes, files, strict=True) if not path.exists()]
        if not missing:
            continue
        name = systems.artifact(args.system, args.lmax, dtype, "")
        if not args.compare_python.exists():
            if ".ckpt" in missing:
                print(f"# {name.name}: no official checkpoint; allegro_ref uses its own weights")
            continue
        print(f"# building {name}{missing} (a few minutes)", flush=True)
        command = [str(args.compare_python), str(HERE / "make_official_models.py")]
        command += ["--system", args.system, "--lmax", str(args.lmax), "--dtypes", dtype]
        env = dict(os.environ, PYTHONPATH=str(systems.ROOT))
        subprocess.run(command, check=True, env=env)


def time_rounds(workers: list, repeats: int, warmup: int) -> tuple[dict, LoadMeter]:
    """One step per worker in turn, ``warmup`` rounds untimed, then ``repeats`` timed rounds;
    the load is measured over the timed rounds."""
    for _ in range(warmup):
        for worker in workers:
            worker.ask("step")
    times = {worker.code: [] for worker in workers}
    meter = LoadMeter()
    for _ in range(repeats):
        answers = [worker.ask("step") for worker in workers]
        for worker, answer in zip(workers, answers, strict=True):
            times[worker.code].append(answer)
        # the workers' CPU time, with that of their children (allegro_ref's worker processes)
        meter.sample(sum(answer.get("tree_cpu", answer["cpu"]) for answer in answers))
    return times, meter


def measure_row(args, n_atoms: int, dtype: str, threads: int) -> list[dict]:
    """One (size, dtype, threads) row per code, measured alternately."""
    codes = [c for c in args.codes if c == "allegro_ref" or n_atoms <= args.official_max_atoms]
    workers = []
    try:
        for code in codes:
            workers.append(Worker(code, args, n_atoms, dtype, threads))
        times, meter = time_rounds(workers, *STEPS.get(n_atoms, (args.repeats, args.warmup)))
        load = meter.summary(threads, args.max_other_cores)
        profile = None
        if args.cost_model and workers[0].code == "allegro_ref":
            profile = [workers[0].ask("stages") for _ in range(len(times["allegro_ref"]))]
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
                    **load,
                }
            )
        if profile:
            rows[0]["stages"] = min(profile, key=lambda p: p["total"])
        workers = []
        return rows
    finally:
        for worker in workers:
            worker.process.kill()


def print_row(row: dict, ours: dict | None) -> None:
    ratio = f"{row['median_s'] / ours['median_s']:6.2f}" if ours else f"{'-':>6}"
    if ours:  # the same function: energies agree to the model dtype's rounding
        row["energy_rel_diff"] = abs(row["energy"] - ours["energy"]) / abs(ours["energy"])
        row["cpu_ratio"] = row["cpu_s"] / ours["cpu_s"]
        ratio += f" | {row['cpu_ratio']:6.2f} | {row['energy_rel_diff']:.0e}"
    else:
        ratio += f" | {'-':>6} | -"
    other = "-" if row["other_cores"] is None else f"{row['other_cores']:.2f}"
    print(
        f"| {row['code']:<11} | {row['dtype']:<7} | {row['threads']} | {row['atoms']:>6} | "
        f"{row['median_s']:8.3f} | {row['min_s']:8.3f} | {row['cpu_s']:7.2f} | "
        f"{row['atoms'] / row['median_s']:8.0f} | {row['peak_rss_gb']:6.2f} | {ratio} | "
        f"{row['load_1min']:.2f} / {other}{' loaded' if row['loaded'] else ''} |",
        flush=True,
    )


def print_header(args) -> None:
    model = f"l_max {args.lmax}" if args.system == "cu" else "tutorial config"
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; system {args.system}, {model}; backend {args.backend}; "
        f"{args.repeats} steps per code, alternated"
    )
    print(
        "| code | dtype | threads | atoms | median s | min s | cpu s | atom·step/s | "
        "peak GB | ratio | cpu × | ΔE/E | load / other cores |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def cost_models(args, rows: list[dict]) -> dict:
    """Print the cost model of every row with a stage profile; the machine's peaks."""
    peaks = peaks_in_subprocess(1)
    config = systems.model_config(args.system, args.lmax)
    for row in rows:
        if "stages" in row:
            print_cost_model(row, peaks, config)
    return peaks


def write_json(path: Path, rows: list[dict], peaks: dict) -> None:
    """Append the rows (and the peaks, if measured) to the JSON file at ``path``."""
    previous = json.loads(path.read_text()) if path.exists() else {"rows": []}
    previous["rows"].extend(rows)
    previous.setdefault("peaks", {}).update({"1": peaks} if peaks else {})
    path.write_text(json.dumps(previous, indent=1))


def main() -> None:
    args = parse_args()
    make_official_models(args)
    print_header(args)
    all_rows, refused = [], None
    for n_atoms, dtype, threads in itertools.product(args.sizes, args.dtypes, args.threads):
        rows = measure_row(args, n_atoms, dtype, threads)
        ours = next((r for r in rows if r["code"] == "allegro_ref"), None)
        for row in rows:
            print_row(row, ours if row is not ours else None)
        if args.refuse_loaded and rows[0]["loaded"]:
            refused = f"# refused: other processes kept {rows[0]['other_cores']} cores busy"
            break
        all_rows.extend(rows)
    print(
        "# ratio = official median / allegro_ref median (> 1: allegro_ref is faster); cpu × = "
        "the same for the process CPU time; peak = process peak RSS, imports included; "
        f"loaded: other processes kept > {args.max_other_cores} cores busy"
    )
    peaks = cost_models(args, all_rows) if args.cost_model else {}
    if args.json:
        write_json(args.json, all_rows, peaks)
    if refused:
        sys.exit(refused + " (that row is not in the JSON; the rows before it are)")


if __name__ == "__main__":
    main()
