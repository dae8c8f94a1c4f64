"""`python -m allegro_ref train config.yaml`: train a model from a YAML config.

```bash
python -m allegro_ref train config.yaml                  # a new run
python -m allegro_ref train config.yaml --resume         # continue output_dir/checkpoint.npz
python -m allegro_ref train config.yaml --max-epochs 50  # override the config's epochs
python -m allegro_ref train config.yaml --output-dir runs/a  # override output_dir
```

Writes metrics.csv, checkpoint.npz, model.npz (the best averaged weights, `Potential.load`),
test_metrics.json and the figures to the config's `output_dir`; prints the final validation
and test errors. A missing or invalid config ends with exit status 2 and one line on standard
error, a run that fails with status 1 and one line (`--debug` shows the traceback instead).
Needs the `train` extra (ase, vesin, tqdm, pyyaml, matplotlib).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from .._cli import ArgumentParser, non_negative_int, one_line, run_reporting_errors
from .config import TrainConfig

__all__ = ["main"]

DESCRIPTION = (
    "Train an Allegro model from a YAML config (see docs/training.md). Writes metrics, "
    "checkpoints, the model (model.npz) and figures to the config's output_dir. A missing or "
    "invalid config exits with status 2, a failed run with status 1, each with a one-line "
    "message (--debug: the traceback)."
)


def build_parser() -> ArgumentParser:
    """The parser of `python -m allegro_ref train`."""
    parser = ArgumentParser(
        prog="python -m allegro_ref train",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("config", help="YAML file of TrainConfig settings")
    parser.add_argument(
        "--resume", action="store_true", help="continue from output_dir/checkpoint.npz"
    )
    parser.add_argument(
        "--max-epochs",
        type=non_negative_int,
        default=None,
        help="override the config's max_epochs (None: keep it)",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="override output_dir (relative to the current folder; None: keep it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failed run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; `argv` are the arguments after `train` (default: `sys.argv[1:]`). Returns
    the exit status; usage errors (a missing or invalid config) raise `SystemExit(2)`."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    config = read_config(args, parser)
    return run_reporting_errors(run, args, config, prog=parser.prog, debug=args.debug)


def read_config(args: argparse.Namespace, parser: ArgumentParser) -> TrainConfig:
    """The config file with the command line's overrides; a missing file or an invalid setting
    ends through `parser.error`."""
    if not os.path.isfile(args.config):
        parser.error(f"config {args.config}: no such file")
    try:
        config = TrainConfig.from_yaml(args.config)
    except ImportError as error:  # PyYAML
        if args.debug:
            raise
        parser.exit(1, f"{parser.prog}: error: {one_line(error)} (the train extra brings it)\n")
    except Exception as error:  # noqa: BLE001 - YAML, type and value errors of a user's file
        if args.debug:
            raise
        parser.error(f"config {args.config}: {type(error).__name__}: {one_line(error)}")
    _check_paths(config, args.config, parser)
    _apply_overrides(config, args)
    if args.resume:
        checkpoint = os.path.join(config.path("output_dir"), "checkpoint.npz")
        if not os.path.exists(checkpoint):
            parser.error(f"--resume: no checkpoint at {checkpoint}")
    return config


def _apply_overrides(config: TrainConfig, args: argparse.Namespace) -> None:
    """The command line's `--max-epochs`, `--output-dir` and `--no-progress`."""
    if args.max_epochs is not None:
        config.max_epochs = args.max_epochs
    if args.output_dir is not None:
        config.output_dir = os.path.abspath(args.output_dir)
    if args.no_progress:
        config.progress = False


def _check_paths(config: TrainConfig, source: str, parser: ArgumentParser) -> None:
    """Every input file the config names exists."""
    for name in ("init_from", "data_path", "train_path", "val_path", "test_path"):
        path = config.path(name)
        if path is not None and not os.path.exists(path):
            parser.error(f"config {source}: {name} {path}: no such file")


def run(args: argparse.Namespace, config: TrainConfig) -> int:
    """Train (or resume) and print the model, the data and the final errors."""
    from .trainer import Trainer

    if args.resume:
        checkpoint = os.path.join(config.path("output_dir"), "checkpoint.npz")
        trainer = Trainer.resume(checkpoint, max_epochs=config.max_epochs)
    else:
        trainer = Trainer(config)
    c = trainer.model_config
    print(
        f"model: {list(c.type_names)}, r_max {c.r_max} Å, l_max {c.l_max}, {c.num_layers} "
        f"layers, S={c.num_scalar_features}, U={c.num_tensor_features}, {config.dtype}; "
        f"{sum(int(v.size) for v in trainer.model.params.values())} parameters"
    )
    print(
        f"data: {len(trainer.graphs['train'])} train / {len(trainer.graphs['val'])} val / "
        f"{len(trainer.graphs['test'])} test structures; avg_num_neighbors "
        f"{c.avg_num_neighbors}"
    )
    trainer.fit()
    for split in ("val", "test"):
        m = trainer.final_metrics.get(split)
        if m:
            print(
                f"{split}: energy MAE {m['energy_mae'] * 1e3:.2f} meV/atom, force MAE "
                f"{m['forces_mae'] * 1e3:.1f} meV/Å (RMSE {m['forces_rmse'] * 1e3:.1f})"
                + (
                    ""
                    if math.isnan(m["stress_mae"])
                    else f", stress MAE {m['stress_mae'] * 1e3:.3f} meV/Å³"
                )
            )
    print(f"wall time {trainer.wall_time:.0f} s; outputs in {trainer.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
