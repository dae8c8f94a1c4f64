"""Training comparison: allegro_ref against the official trainer (nequip-train), same data,
same model, same optimizer, in one sitting (the acceptance test of issue 6).

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--epochs 30] [--seeds 0 1 2]
        [--workdir DIR] [--official-threads N] [--official-python PYTHON] [--skip-official]

Recipe (shared/reference/allegro_official.md §5): 120 rattled fcc Cu₃₂ cells labelled with
EMT (scripts/make_dataset.py cu-rattled, seed 0), split once by seed into 100 train / 10 val /
10 test files that both codes read; Allegro l_max 1, 2 layers, S 32, U 8, every MLP width 32,
r_max 4.5 Å, float32; avg_num_neighbors, shift (per-atom energy mean) and scale (force RMS) from
the training data; Adam lr 2e-3, EMA 0.999, per-atom energy MSE + force MSE 1 : 1, batch 5,
30 epochs; the model with the best validation score is tested. Each code runs as its own
process (``python -m allegro_ref.train.cli`` / ``nequip-train``) with the thread settings of
this process's environment (``--official-threads`` overrides the official run's
OMP_NUM_THREADS); wall times include start-up, data loading and neighbour lists, and CPU
times are the child process's user + system time over all its threads. With several
``--seeds`` (initialization and batch order) the two codes alternate, so both see the same
machine load.

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

ROOT = Path(__file__).resolve().parents[1]
MODEL = dict(
    r_max=4.5,
    l_max=1,
    parity=True,
    num_layers=2,
    num_scalar_features=32,
    num_tensor_features=8,
    num_bessels=8,
    polynomial_cutoff_p=6,
    scalar_embed_mlp_hidden_layers_width=32,
    allegro_mlp_hidden_layers_width=32,
    readout_mlp_hidden_layers_width=32,
)

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


def make_split(workdir: Path, seed: int) -> dict[str, str]:
    """The 120-frame set and its 100/10/10 split, written as three extxyz files."""
    sys.path.insert(0, str(ROOT))
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


def run_ours(workdir: Path, paths: dict[str, str], epochs: int, seed: int) -> dict:
    import yaml

    out = workdir / f"allegro_ref_seed{seed}"
    config = dict(
        model={**MODEL, "per_type_energy_shifts": "per_atom_mean"},
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
    )
    path = workdir / f"allegro_ref_seed{seed}.yaml"
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
    args = parser.parse_args(argv)

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
            run = run_ours(workdir, paths, args.epochs, seed)
            results["runs"].append({"code": "allegro_ref", "seed": seed, **run})
        if not args.skip_official:
            run = run_official(
                workdir, paths, args.epochs, seed, args.official_python, args.official_threads
            )
            results["runs"].append({"code": "official", "seed": seed, **run})
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(
        f"{'code':12s} {'seed':>4s} {'wall s':>7s} {'CPU s':>7s} {'E MAE meV/at':>12s} "
        f"{'F MAE eV/Å':>11s}"
    )
    for r in results["runs"]:
        print(
            f"{r['code']:12s} {r['seed']:4d} {r['wall_s']:7.0f} {r['cpu_s']:7.0f} "
            f"{r['test_energy_mae_mev_atom']:12.2f} {r['test_forces_mae_ev_a']:11.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
