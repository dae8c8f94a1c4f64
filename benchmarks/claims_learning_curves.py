"""Learning curves of Allegro for l_max 0, 1 and 2: test force MAE against the number of
training structures (issue 17, the paper's claims measured: data efficiency).

    OMP_NUM_THREADS=1 python benchmarks/claims_learning_curves.py            # the full grid
    OMP_NUM_THREADS=1 python benchmarks/claims_learning_curves.py --resume   # finish it
    OMP_NUM_THREADS=1 python benchmarks/claims_learning_curves.py --quick    # one point, ~10 s
    OMP_NUM_THREADS=1 python benchmarks/claims_learning_curves.py --l-max 1 --sizes 8 16 \\
        --seeds 0 --output /tmp/lc.json

The claim (NequIP, Batzner et al., Nat. Commun. 13, 2453 (2022), and the Allegro paper,
Musaelian et al. 2022): equivariant features of degree l > 0 make a model more data
efficient: the log-log learning curve is steeper for larger l_max, and an invariant model
needs far more data for the same accuracy.

Data: the shipped ``ethanol-gfn2`` set (1000 frames of 500 K Langevin MD of ethanol, one
frame per 5 fs; labels are GFN2-xTB energies and forces, not DFT). The test set is the last
200 frames (800-999), fixed for every run; frames 0-789 are the pool (a 10-frame, 50 fs gap
keeps the test frames from being near-copies of training frames). For each seed the pool is
permuted once: the training set of size N is the first N frames of that permutation (nested
sets), the validation set its last ``N_VAL`` frames (disjoint from every training set; used
only to pick the best epoch and drive the learning-rate schedule, as the Trainer does).

Model: today's Allegro (``AllegroConfig``), 1 layer, S 16, U 8, MLP widths 16, r_max 5 Å,
float32, statistics (N̄, energy shifts, force-RMS scale) from the training set. l_max 0 is an
invariant model whose features see only the distances from each centre (no angles).

Training: ``allegro_ref.train.Trainer``; per-atom energy MSE + force MSE 1 : 1, Adam lr 5e-3
halved when the validation loss stalls for 5 epochs, EMA 0.999, batch 8 and a budget of
``steps_for(N)`` optimizer steps, 1000·√(N/8): more steps but fewer passes for larger sets.
This is a fixed budget, not training to convergence: most runs still improve slowly at the end
(their best epoch is the last). ``--budget 3`` (three times the steps, written to
``learning_curves_budget3.json`` by default) measures how much the curves move with more
training. An epoch is at least ``MIN_EPOCH`` structures: a small training set is repeated in
the training file (each copy is one more draw of the same structures), so that validation
runs every ``MIN_EPOCH / batch`` steps whatever N.

Writes ``benchmarks/results/claims/learning_curves.json``: the config, every run's test force
and energy MAE, wall and CPU time, and per l_max the mean ± standard error over seeds, the
fitted slope of log MAE against log N (of the mean curve, and per seed) and the training-set
size at which the mean curve crosses each of ``THRESHOLDS`` (log-log interpolation between the
measured sizes, and, for a curve that does not get there, the extrapolation of its fitted
line). Runs go from the smallest N up (the outermost loop), and the file is rewritten after
each run; ``--resume`` keeps the runs already in the file and adds the missing ones (e.g.
``--resume --sizes 512`` adds a size; with nothing missing it only recomputes the summary).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # no install needed

import allegro_ref.data  # noqa: E402
from allegro_ref.train import TrainConfig, Trainer  # noqa: E402
from allegro_ref.train.data import Structure, read_structures, write_structures  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "claims" / "learning_curves.json"
DATASET = "ethanol-gfn2"
TEST_FRAMES = (800, 1000)  # the last 200 frames
POOL_END = 790  # frames 0..789 may be drawn for training or validation
N_VAL = 50
BATCH = 8
MIN_EPOCH = 128  # structures per epoch at least (small sets repeated)
L_MAX = (0, 1, 2)
SIZES = (8, 16, 32, 64, 128, 256, 512)
SEEDS = (0, 1, 2)
THRESHOLDS = (0.100, 0.060)  # eV/Å, the force MAEs at which N is read off the curves
MODEL = {
    "r_max": 5.0,
    "num_layers": 1,
    "num_scalar_features": 16,
    "num_tensor_features": 8,
    "scalar_embed_mlp_hidden_layers_width": 16,
    "allegro_mlp_hidden_layers_width": 16,
    "readout_mlp_hidden_layers_width": 16,
}
TRAINING = {
    "dtype": "float32",
    "energy_weight": 1.0,
    "forces_weight": 1.0,
    "lr": 5e-3,
    "ema_decay": 0.999,
    "batch_size": BATCH,
    "lr_schedule": {"factor": 0.5, "patience": 5, "threshold": 0.01, "min_lr": 1e-5},
}


def steps_for(n_train: int, budget: float = 1.0) -> int:
    """The optimizer-step budget for ``n_train`` structures: 1000·√(N/8), rounded to whole
    epochs by `epoch_plan` (1000 steps at N = 8, 4000 at 128, 5657 at 256), times
    ``budget`` (the convergence check: ``--budget 3``)."""
    return round(budget * 1000 * math.sqrt(n_train / 8))


def epoch_plan(n_train: int, budget: float = 1.0) -> tuple[int, int]:
    """``(copies, epochs)``: the training file holds ``copies`` copies of the N structures
    (an epoch of at least ``MIN_EPOCH``), and ``epochs`` of them make ≈ `steps_for` steps."""
    copies = max(1, math.ceil(MIN_EPOCH / n_train))
    steps_per_epoch = math.ceil(copies * n_train / BATCH)
    return copies, max(1, round(steps_for(n_train, budget) / steps_per_epoch))


def split(structures: list[Structure], n_train: int, seed: int) -> dict[str, list[Structure]]:
    """Training (first ``n_train`` of the seed's permutation of the pool), validation (its
    last ``N_VAL``) and the fixed test frames."""
    if n_train > POOL_END - N_VAL:
        raise ValueError(f"n_train must be at most {POOL_END - N_VAL}, got {n_train}")
    order = np.random.default_rng(seed).permutation(POOL_END)
    return {
        "train": [structures[int(i)] for i in order[:n_train]],
        "val": [structures[int(i)] for i in order[-N_VAL:]],
        "test": structures[TEST_FRAMES[0] : TEST_FRAMES[1]],
    }


def train_config(
    l_max: int, n_train: int, seed: int, folder: str, budget: float = 1.0
) -> TrainConfig:
    """The `TrainConfig` of one run, reading the files `write_split` put in ``folder``."""
    _, epochs = epoch_plan(n_train, budget)
    return TrainConfig.from_dict(
        {
            "model": {**MODEL, "l_max": l_max},
            "train_path": os.path.join(folder, "train.xyz"),
            "val_path": os.path.join(folder, "val.xyz"),
            "test_path": os.path.join(folder, "test.xyz"),
            **TRAINING,
            "seed": seed,
            "max_epochs": epochs,
            "output_dir": os.path.join(folder, "run"),
            "progress": False,
            "plots": False,
        }
    )


def write_split(sets: dict[str, list[Structure]], folder: str) -> None:
    """The three extended-XYZ files of a run (the training set repeated, `epoch_plan`)."""
    copies, _ = epoch_plan(len(sets["train"]))
    write_structures(os.path.join(folder, "train.xyz"), sets["train"] * copies)
    write_structures(os.path.join(folder, "val.xyz"), sets["val"])
    write_structures(os.path.join(folder, "test.xyz"), sets["test"])


def run_one(
    structures: list[Structure], l_max: int, n_train: int, seed: int, budget: float = 1.0
) -> dict[str, Any]:
    """Train one model and return its test errors (eV/Å, eV/atom) and costs (s)."""
    with tempfile.TemporaryDirectory(prefix="allegro_lc_") as folder:
        write_split(split(structures, n_train, seed), folder)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer = Trainer(train_config(l_max, n_train, seed, folder, budget))
        trainer.fit()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test = trainer.final_metrics["test"]
    history = trainer.history
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    return {
        "l_max": l_max,
        "n_train": n_train,
        "seed": seed,
        "test_forces_mae": float(test["forces_mae"]),
        "test_energy_mae": float(test["energy_mae"]),
        "epochs": len(history),
        "steps": len(history) * math.ceil(epoch_plan(n_train)[0] * n_train / BATCH),
        "best_epoch": best + 1,
        "final_lr": float(history[-1]["lr"]),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
    }


def fit_slope(sizes: list[float], maes: list[float]) -> float:
    """The least-squares slope of log MAE against log N."""
    return float(np.polyfit(np.log(sizes), np.log(maes), 1)[0])


def extrapolated_n(sizes: list[float], maes: list[float], threshold: float) -> float:
    """The N where the least-squares line log MAE = a + b log N reaches ``threshold``."""
    slope, intercept = np.polyfit(np.log(sizes), np.log(maes), 1)
    return float(math.exp((math.log(threshold) - intercept) / slope))


def n_at_threshold(sizes: list[float], maes: list[float], threshold: float) -> float | None:
    """The N where the curve first falls to ``threshold``: linear interpolation of log MAE
    in log N between the two sizes around the crossing; None if it never gets there
    (``sizes`` increasing); the smallest size if it starts below."""
    if maes[0] <= threshold:
        return float(sizes[0])
    for i in range(1, len(sizes)):
        (n0, m0), (n1, m1) = (sizes[i - 1], maes[i - 1]), (sizes[i], maes[i])
        if m1 <= threshold:
            t = (math.log(threshold) - math.log(m0)) / (math.log(m1) - math.log(m0))
            return float(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))
    return None


def curve(runs: list[dict[str, Any]], l_max: int) -> dict[str, Any]:
    """Mean ± standard error per N over the seeds, the slopes and N at ``THRESHOLDS``
    (keys: the threshold in meV/Å)."""
    mine = [r for r in runs if r["l_max"] == l_max]
    sizes = sorted({r["n_train"] for r in mine})
    per_n = [[r["test_forces_mae"] for r in mine if r["n_train"] == n] for n in sizes]
    means = [float(np.mean(m)) for m in per_n]
    errors = [float(np.std(m, ddof=1) / math.sqrt(len(m))) if len(m) > 1 else None for m in per_n]
    seeds = sorted({r["seed"] for r in mine})
    per_seed = {}
    for seed in seeds:
        points = sorted((r["n_train"], r["test_forces_mae"]) for r in mine if r["seed"] == seed)
        if len(points) >= 2:
            per_seed[str(seed)] = fit_slope(*zip(*points, strict=True))
    return {
        "sizes": sizes,
        "forces_mae_mean": means,
        "forces_mae_sem": errors,
        "num_seeds": [len(m) for m in per_n],
        "slope": fit_slope(sizes, means) if len(sizes) >= 2 else None,
        "slope_per_seed": per_seed,
        "n_at_threshold": {f"{t * 1e3:.0f}": n_at_threshold(sizes, means, t) for t in THRESHOLDS},
        "n_at_threshold_extrapolated": {
            f"{t * 1e3:.0f}": extrapolated_n(sizes, means, t) if len(sizes) >= 2 else None
            for t in THRESHOLDS
        },
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The curves of every l_max in ``runs`` (keys are strings: JSON)."""
    return {str(l): curve(runs, l) for l in sorted({r["l_max"] for r in runs})}


def settings(runs: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    """What the runs did, for the JSON file."""
    return {
        "dataset": DATASET,
        "labels": "GFN2-xTB (tblite) energies and forces",
        "test_frames": list(TEST_FRAMES),
        "pool_frames": [0, POOL_END],
        "n_val": N_VAL,
        "model": {"family": "allegro", **MODEL},
        "training": TRAINING,
        "min_epoch_structures": MIN_EPOCH,
        "steps_rule": "round(1000 * sqrt(N / 8)) optimizer steps, rounded to whole epochs",
        "budget": budget,
        "l_max": sorted({r["l_max"] for r in runs}),
        "sizes": sorted({r["n_train"] for r in runs}),
        "seeds": sorted({r["seed"] for r in runs}),
        "thresholds_forces_mae": list(THRESHOLDS),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }


def write(path: Path, runs: list[dict[str, Any]], start: float, budget: float) -> None:
    """The JSON file of the experiment so far (rewritten after each run)."""
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": settings(runs, budget),
        "runs": runs,
        "total_wall_s": round(time.perf_counter() - start, 1),
        "total_cpu_s": round(sum(r["cpu_s"] for r in runs), 1),
        "curves": summary(runs),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--l-max", type=int, nargs="+", default=list(L_MAX))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--quick", action="store_true", help="l_max 1, N 8, seed 0 only")
    parser.add_argument("--output", type=Path, default=None, help=f"default {OUTPUT}")
    parser.add_argument("--resume", action="store_true", help="keep the runs in --output")
    parser.add_argument("--budget", type=float, default=1.0, help="times the step budget")
    args = parser.parse_args(argv)
    if args.quick:
        args.l_max, args.sizes, args.seeds = [1], [min(SIZES)], [0]
    if args.output is None and args.quick:
        args.output = OUTPUT.with_name("learning_curves_quick.json")
    elif args.output is None:
        suffix = "" if args.budget == 1 else f"_budget{args.budget:g}"
        args.output = OUTPUT.with_name(f"learning_curves{suffix}.json")
    return args


def previous_runs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    """With ``--resume``, the runs already in the output file and their total wall time."""
    if not (args.resume and args.output.exists()):
        return [], 0.0
    stored = json.loads(args.output.read_text(encoding="utf-8"))
    return stored["runs"], stored["total_wall_s"]


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    structures = read_structures(allegro_ref.data.path(DATASET))
    runs, wall_before = previous_runs(args)
    done = {(r["l_max"], r["n_train"], r["seed"]) for r in runs}
    start = time.perf_counter() - wall_before
    for n_train in sorted(args.sizes):
        for seed in args.seeds:
            for l_max in [l for l in args.l_max if (l, n_train, seed) not in done]:
                runs.append(run_one(structures, l_max, n_train, seed, args.budget))
                r = runs[-1]
                print(
                    f"seed {seed} N {n_train:4d} l_max {l_max}: force MAE "
                    f"{r['test_forces_mae'] * 1e3:6.1f} meV/Å, energy MAE "
                    f"{r['test_energy_mae'] * 1e3:5.2f} meV/atom, {r['epochs']} epochs, "
                    f"{r['cpu_s']:.0f} CPU s",
                    flush=True,
                )
                write(args.output, runs, start, args.budget)
    write(args.output, runs, start, args.budget)  # re-summarizes a file even if nothing was missing
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"process CPU time {usage.ru_utime + usage.ru_stime:.0f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
