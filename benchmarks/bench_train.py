"""Training comparison: allegro_ref against the official trainer (nequip-train), same data,
same model, same optimizer, in one sitting (the acceptance test of issue 6).

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--epochs 30] [--seeds 0 1 2]
        [--same-init] [--workdir DIR] [--official-threads N] [--official-python PYTHON]
        [--skip-official] [--skip-ours]

Recipe: 120 rattled fcc Cu₃₂ cells labelled with
EMT (scripts/make_dataset.py cu-rattled, seed 0), split once by seed into 100 train / 10 val /
10 test files that both codes read; Allegro l_max 1, 2 layers, S 32, U 8, every MLP width 32,
r_max 4.5 Å, float32; avg_num_neighbors, shift (per-atom energy mean) and scale (force RMS) from
the training data; Adam lr 2e-3, EMA 0.999, per-atom energy MSE + force MSE 1 : 1, batch 5,
30 epochs; the model with the best validation score is tested. Each code runs as its own
process (``python -m allegro_ref.train.cli`` / ``nequip-train``) with the thread settings of
this process's environment (``--official-threads`` overrides the official run's
OMP_NUM_THREADS); wall times include start-up, data loading and neighbor lists, and CPU
times are the child process's user + system time over all its threads. With several
``--seeds`` (initialization and batch order) the two codes alternate, so both see the same
machine load. ``--same-init`` adds runs of allegro_ref started from the official builder's
initial weights of each seed (``allegro_ref*``; imported with ``allegro_ref.io.nequip``): then
the two trainers differ only in the order of the batches.

Prints one table and writes ``results.json`` in the work directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # no install needed

from allegro_ref.model import presets  # noqa: E402

# The cu-emt architecture without its random-weight normalizations: training takes N̄, the
# energy shift and the scale from the data (the official run: OFFICIAL_CONFIG below)
STATISTICS = ("avg_num_neighbors", "per_type_energy_scales", "per_type_energy_shifts")
MODEL = {k: v for k, v in presets.cu_small().to_dict().items() if k not in STATISTICS}

OFFICIAL_CONFIG = """\
run: [train, test]
seed: {seed}
cutoff_radius: {r_max}
model_type_names: [Cu]
dataloader:
  _target_: torch.utils.data.DataLoader
  batch_size: {batch_size}
data:
  _target_: nequip.data.datamodule.ASEDataModule
  seed: ${{seed}}
  train_file_path: {train}
  val_file_path: {val}
  test_file_path: {test}
  transforms:
    - _target_: nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper
      model_type_names: ${{model_type_names}}
      chemical_species_to_atom_type_map: {{Cu: Cu}}
    - _target_: nequip.data.transforms.NeighborListTransform
      r_max: ${{cutoff_radius}}
  train_dataloader:
    _target_: torch.utils.data.DataLoader
    batch_size: {batch_size}
    shuffle: true
  val_dataloader: ${{dataloader}}
  test_dataloader: ${{dataloader}}
  stats_manager:
    _target_: nequip.data.CommonDataStatisticsManager
    type_names: ${{model_type_names}}
trainer:
  _target_: lightning.Trainer
  accelerator: cpu
  max_epochs: {epochs}
  check_val_every_n_epoch: 1
  log_every_n_steps: 20
  enable_progress_bar: false
  logger:
    _target_: lightning.pytorch.loggers.CSVLogger
    save_dir: ${{hydra:runtime.output_dir}}
    name: csv
  callbacks:
    - _target_: lightning.pytorch.callbacks.ModelCheckpoint
      monitor: val0_epoch/weighted_sum
      dirpath: ${{hydra:runtime.output_dir}}
      filename: best
      save_top_k: 1
training_module:
  _target_: nequip.train.EMALightningModule
  ema_decay: 0.999
  loss:
    _target_: nequip.train.EnergyForceLoss
    per_atom_energy: true
    coeffs: {{total_energy: 1.0, forces: 1.0}}
  val_metrics:
    _target_: nequip.train.EnergyForceMetrics
    coeffs: {{per_atom_energy_mae: 1.0, forces_mae: 1.0}}
  test_metrics: ${{training_module.val_metrics}}
  optimizer:
    _target_: torch.optim.Adam
    lr: {lr}
  model:
    _target_: allegro.model.AllegroModel
    seed: ${{seed}}
    model_dtype: float32
    type_names: ${{model_type_names}}
    r_max: ${{cutoff_radius}}
    radial_chemical_embed:
      _target_: allegro.nn.TwoBodyBesselScalarEmbed
      num_bessels: 8
      bessel_trainable: false
      polynomial_cutoff_p: 6
    l_max: 1
    parity: true
    num_layers: 2
    num_scalar_features: 32
    num_tensor_features: 8
    scalar_embed_mlp_hidden_layers_width: 32
    allegro_mlp_hidden_layers_width: 32
    readout_mlp_hidden_layers_width: 32
    avg_num_neighbors: ${{training_data_stats:num_neighbors_mean}}
    per_type_energy_shifts: ${{training_data_stats:per_atom_energy_mean}}
    per_type_energy_scales: ${{training_data_stats:forces_rms}}
"""


# Run with the official Python: the official builder's initial weights for a seed (argv: seed,
# avg_num_neighbors, shift, scale, output .npz).
EXPORT_OFFICIAL_INIT = """
import json, sys
import numpy as np
from nequip.utils.global_state import set_global_state
set_global_state()
import allegro.model
seed, nbar, shift, scale, out = int(sys.argv[1]), *map(float, sys.argv[2:5]), sys.argv[5]
builder = dict(seed=seed, model_dtype="float32", type_names=["Cu"], r_max=4.5,
    radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8,
                           "bessel_trainable": False, "polynomial_cutoff_p": 6},
    l_max=1, parity=True, num_layers=2, num_scalar_features=32, num_tensor_features=8,
    scalar_embed_mlp_hidden_layers_width=32, allegro_mlp_hidden_layers_width=32,
    readout_mlp_hidden_layers_width=32, avg_num_neighbors=nbar,
    per_type_energy_shifts=shift, per_type_energy_scales=scale)
model = allegro.model.AllegroModel(**builder)
state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
arrays = {"state/" + k: v for k, v in state.items()}
np.savez(out, builder=np.asarray(json.dumps(builder)), **arrays)
"""


def official_initial_model(workdir: Path, paths: dict[str, str], seed: int, python: str) -> str:
    """The official builder's initial weights for ``seed`` (with the training-set statistics),
    converted to an allegro_ref model file, for ``init_from``."""
    from allegro_ref.io.nequip import model_from_nequip
    from allegro_ref.potential import Potential
    from allegro_ref.train.data import build_graph, read_structures
    from allegro_ref.train.statistics import average_num_neighbors, force_rms, per_atom_energy_mean

    train = read_structures(paths["train"])
    nbar = average_num_neighbors([build_graph(s, ["Cu"], MODEL["r_max"]) for s in train])
    stats = [str(nbar), str(per_atom_energy_mean(train)), str(force_rms(train))]
    exported = workdir / f"official_init_seed{seed}_state.npz"
    subprocess.run(
        [python, "-c", EXPORT_OFFICIAL_INIT, str(seed), *stats, str(exported)], check=True
    )
    with np.load(exported) as archive:
        builder = json.loads(str(archive["builder"]))
        state = {k[len("state/") :]: archive[k] for k in archive.files if k.startswith("state/")}
    path = workdir / f"official_init_seed{seed}.npz"
    Potential(model_from_nequip(builder, state)).save(path)
    return str(path)


def make_split(workdir: Path, seed: int) -> dict[str, str]:
    """The 120-frame set and its 100/10/10 split, written as three extxyz files."""
    from allegro_ref.train.data import read_structures, split_structures, write_structures

    data = workdir / "cu_emt_120.xyz"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/make_dataset.py"), "cu-rattled", str(data)],
        check=True,
    )
    parts = split_structures(read_structures(data), 100, 10, 10, seed=seed)
    paths = {}
    for name, structures in zip(("train", "val", "test"), parts, strict=True):
        paths[name] = str(workdir / f"{name}.xyz")
        write_structures(paths[name], structures)
    return paths


def _timed(command: list[str], **kwargs) -> tuple[float, float]:
    """Run ``command``; (wall seconds, CPU seconds of the child: user + system, all threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_ours(
    workdir: Path, paths: dict[str, str], epochs: int, seed: int, init_from: str | None
) -> dict:
    import yaml

    name = f"allegro_ref_seed{seed}" + ("_official_init" if init_from else "")
    out = workdir / name
    model = {} if init_from else {**MODEL, "per_type_energy_shifts": "per_atom_mean"}
    config = dict(
        model=model,
        init_from=init_from,
        train_path=paths["train"],
        val_path=paths["val"],
        test_path=paths["test"],
        dtype="float32",
        seed=seed,
        energy_weight=1.0,
        forces_weight=1.0,
        lr=2e-3,
        ema_decay=0.999,
        batch_size=5,
        max_epochs=epochs,
        output_dir=str(out),
        progress=False,
        plots=False,  # the official trainer draws no figures either
    )
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    wall, cpu = _timed([sys.executable, "-m", "allegro_ref.train.cli", str(path)], cwd=ROOT)
    test = json.loads((out / "test_metrics.json").read_text())["test"]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "test_energy_mae_mev_atom": test["energy_mae"] * 1e3,
        "test_forces_mae_ev_a": test["forces_mae"],
    }


def run_official(
    workdir: Path, paths: dict[str, str], epochs: int, seed: int, python: str, threads
) -> dict:
    config = OFFICIAL_CONFIG.format(
        seed=seed, r_max=MODEL["r_max"], batch_size=5, epochs=epochs, lr=2e-3, **paths
    )
    name = f"official_seed{seed}"
    (workdir / f"{name}.yaml").write_text(config)
    out = workdir / name
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [
        str(Path(python).with_name("nequip-train")),
        "-cp",
        str(workdir),
        "-cn",
        f"{name}.yaml",
        f"hydra.run.dir={out}",
    ]
    wall, cpu = _timed(command, env=env, cwd=workdir)
    metrics = {}
    for csv_path in sorted(out.glob("csv/*/metrics.csv")):
        with open(csv_path) as handle:
            for row in csv.DictReader(handle):
                metrics.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "test_energy_mae_mev_atom": metrics["test0_epoch/per_atom_energy_mae"] * 1e3,
        "test_forces_mae_ev_a": metrics["test0_epoch/forces_mae"],
    }


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per code: the number of seeds, the median CPU and wall seconds, and the mean and standard
    error (standard deviation / √n) of the test errors over the seeds."""
    table = {}
    for code in dict.fromkeys(r["code"] for r in runs):
        rows = [r for r in runs if r["code"] == code]
        entry = {"n": len(rows)}
        for key in ("cpu_s", "wall_s"):
            entry[key] = float(np.median([r[key] for r in rows]))
        for key in ("test_energy_mae_mev_atom", "test_forces_mae_ev_a"):
            values = np.array([r[key] for r in rows])
            entry[key] = float(values.mean())
            entry[key + "_se"] = (
                float(values.std(ddof=1) / np.sqrt(len(rows))) if len(rows) > 1 else float("nan")
            )
        table[code] = entry
    return table


def pooled(results: list[dict]) -> dict:
    """The runs of several ``results.json`` as one (they must share the number of epochs)."""
    epochs = {r["epochs"] for r in results}
    if len(epochs) != 1:
        raise SystemExit(f"--report: the runs have different numbers of epochs: {sorted(epochs)}")
    return {**results[0], "runs": [run for r in results for run in r["runs"]]}


def print_report(results: dict) -> None:
    """Every run, then the summary per code (CPU s per epoch: the whole run's CPU time over
    the epochs, start-up and testing included)."""
    epochs = results["epochs"]
    print(
        f"{'code':12s} {'seed':>4s} {'wall s':>7s} {'CPU s':>7s} {'CPU s/epoch':>11s} "
        f"{'E MAE meV/at':>12s} {'F MAE eV/Å':>11s}"
    )
    for r in results["runs"]:
        print(
            f"{r['code']:12s} {r['seed']:4d} {r['wall_s']:7.0f} {r['cpu_s']:7.1f} "
            f"{r['cpu_s'] / epochs:11.2f} "
            f"{r['test_energy_mae_mev_atom']:12.2f} {r['test_forces_mae_ev_a']:11.4f}"
        )
    print(f"\n{'code':12s} {'seeds':>5s} {'median CPU s':>12s} {'E MAE meV/at (± s.e.)':>22s} "
          f"{'F MAE eV/Å (± s.e.)':>22s}")  # fmt: skip
    for code, e in summarize(results["runs"]).items():
        energy = f"{e['test_energy_mae_mev_atom']:.2f} ± {e['test_energy_mae_mev_atom_se']:.2f}"
        forces = f"{e['test_forces_mae_ev_a']:.4f} ± {e['test_forces_mae_ev_a_se']:.4f}"
        print(f"{code:12s} {e['n']:5d} {e['cpu_s']:12.1f} {energy:>22s} {forces:>22s}")
    print_differences(results["runs"])


def print_differences(runs: list[dict], reference: str = "official") -> None:
    """Each code's mean test force MAE minus the reference's, with the standard error of the
    difference √(s.e.₁² + s.e.₂²) and Welch's two-sided p-value (unequal variances)."""
    from scipy.stats import ttest_ind

    by_code: dict[str, list[float]] = {}
    for r in runs:
        by_code.setdefault(r["code"], []).append(r["test_forces_mae_ev_a"])
    if len(by_code.get(reference, ())) < 2:
        return
    ref = np.array(by_code.pop(reference))
    for code, maes in by_code.items():
        if len(maes) < 2:
            continue
        values = np.array(maes)
        se = np.sqrt(values.var(ddof=1) / len(values) + ref.var(ddof=1) / len(ref))
        p_value = ttest_ind(values, ref, equal_var=False).pvalue
        print(
            f"{code} - {reference}: force MAE {values.mean() - ref.mean():+.4f} ± {se:.4f} eV/Å "
            f"(Welch p = {p_value:.2f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workdir", default="bench_train_run")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--official-python", default=str(ROOT / ".venv-compare/bin/python"))
    parser.add_argument("--official-threads", type=int, default=None)
    parser.add_argument("--skip-official", action="store_true")
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument(
        "--same-init",
        action="store_true",
        help="also train allegro_ref from the official builder's initial weights of each seed",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="RESULTS_JSON",
        help="only print the tables of one run, or of several pooled (same number of epochs)",
    )
    args = parser.parse_args(argv)
    if args.report:
        print_report(pooled([json.loads(Path(path).read_text()) for path in args.report]))
        return 0

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    paths = make_split(workdir, args.split_seed)
    results = {
        "epochs": args.epochs,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "official_threads": args.official_threads,
        "runs": [],
    }
    for seed in args.seeds:  # alternate the codes, so both see the same machine load
        if not args.skip_ours:
            run = run_ours(workdir, paths, args.epochs, seed, None)
            results["runs"].append({"code": "allegro_ref", "seed": seed, **run})
        if args.same_init:
            init = official_initial_model(workdir, paths, seed, args.official_python)
            run = run_ours(workdir, paths, args.epochs, seed, init)
            results["runs"].append({"code": "allegro_ref*", "seed": seed, **run})
        if not args.skip_official:
            run = run_official(
                workdir, paths, args.epochs, seed, args.official_python, args.official_threads
            )
            results["runs"].append({"code": "official", "seed": seed, **run})
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print_report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
