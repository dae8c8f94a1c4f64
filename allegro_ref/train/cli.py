"""``python -m allegro_ref train config.yaml``: train a model from a YAML config.

    python -m allegro_ref train config.yaml                  # a new run
    python -m allegro_ref train config.yaml --resume         # continue output_dir/checkpoint.npz
    python -m allegro_ref train config.yaml --max-epochs 50  # override the config's epochs
    python -m allegro_ref train config.yaml --output-dir runs/a  # override output_dir

Writes metrics.csv, checkpoint.npz, model.npz (the best averaged weights, ``Potential.load``),
test_metrics.json and the figures to the config's ``output_dir``; prints the final validation
and test errors. Needs the ``train`` extra (ase, vesin, tqdm, pyyaml, matplotlib).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from .config import TrainConfig
from .trainer import Trainer

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` are the arguments after ``train`` (default: ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog="python -m allegro_ref train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config", help="YAML file of TrainConfig settings")
    parser.add_argument(
        "--resume", action="store_true", help="continue from output_dir/checkpoint.npz"
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="override max_epochs")
    parser.add_argument(
        "--output-dir", default=None, help="override output_dir (relative to the current folder)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    config = TrainConfig.from_yaml(args.config)
    if args.max_epochs is not None:
        config.max_epochs = args.max_epochs
    if args.output_dir is not None:
        config.output_dir = os.path.abspath(args.output_dir)
    if args.no_progress:
        config.progress = False
    if args.resume:
        checkpoint = os.path.join(config.path("output_dir"), "checkpoint.npz")
        if not os.path.exists(checkpoint):
            parser.error(f"--resume: no checkpoint at {checkpoint}")
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
