"""Figures of a training run (matplotlib, written to files): the learning curve and the parity
plots of predicted against reference energies, forces and stresses."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._files import atomic_write
from ..backend import to_numpy
from .data import Graph, batches
from .loss import predict

__all__ = ["learning_curve", "parity_plot", "parity_data"]

_GPA_PER_EV_A3 = 160.21766208  # 1 eV/Å³ in GPa


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: Sequence[dict[str, float]], path: str | os.PathLike) -> None:
    """Loss, energy MAE and force MAE against epoch (log scale), from ``Trainer.history`` rows:
    on the training batches with the weights of the moment (averaged over the epoch), and on
    the validation set with the averaged (EMA) weights at the end of the epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    panels = (
        ("loss", "loss", 1.0),
        ("energy_mae", "energy MAE (meV/atom)", 1e3),
        ("forces_mae", "force MAE (meV/Å)", 1e3),
    )
    for ax, (key, quantity, factor) in zip(axes, panels, strict=True):
        for split, style, legend in (("train", "-", "train"), ("val", "o-", "validation (EMA)")):
            values = [row.get(f"{split}_{key}", np.nan) * factor for row in history]
            ax.plot(epochs, values, style, ms=3, label=legend)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.legend()
    with atomic_write(path) as handle:
        fig.savefig(handle, format=os.path.splitext(path)[1][1:] or "png", dpi=120)
    plt.close(fig)


def parity_data(model, graphs: Sequence[Graph], batch_size: int = 8) -> dict[str, np.ndarray]:
    """Reference and predicted values (host arrays): ``energy`` [2, B] eV/atom, ``forces``
    [2, 3N] eV/Å, ``stress`` [2, 9 B_periodic] eV/Å³."""
    ref: dict[str, list] = {"energy": [], "forces": [], "stress": []}
    pred: dict[str, list] = {"energy": [], "forces": [], "stress": []}
    for batch in batches(graphs, batch_size, None, like=model):
        p = {k: to_numpy(v) for k, v in predict(model, batch).items()}
        n_atoms = to_numpy(batch.num_atoms)
        ref["energy"].append(to_numpy(batch.energy) / n_atoms)
        pred["energy"].append(p["energy"] / n_atoms)
        ref["forces"].append(to_numpy(batch.forces).reshape(-1))
        pred["forces"].append(p["forces"].reshape(-1))
        stress_ref = to_numpy(batch.stress)
        keep = np.all(np.isfinite(stress_ref), axis=(1, 2)) & np.all(
            np.isfinite(p["stress"]), axis=(1, 2)
        )
        ref["stress"].append(stress_ref[keep].reshape(-1))
        pred["stress"].append(p["stress"][keep].reshape(-1))
    return {k: np.stack([np.concatenate(ref[k]), np.concatenate(pred[k])]) for k in ref}


def parity_plot(model, graphs: Sequence[Graph], path: str | os.PathLike, batch_size: int = 8):
    """Predicted vs reference energy per atom, force components and (if any) stress
    components of ``graphs``, with each panel's MAE."""
    plt = _pyplot()
    data = parity_data(model, graphs, batch_size)
    panels: list[tuple[str, str, float, Any]] = [
        ("energy", "eV/atom", 1.0, data["energy"]),
        ("force component", "eV/Å", 1.0, data["forces"]),
    ]
    if data["stress"].shape[1]:
        panels.append(("stress component", "GPa", _GPA_PER_EV_A3, data["stress"]))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4), constrained_layout=True
    )
    for ax, (name, unit, factor, values) in zip(np.atleast_1d(axes), panels, strict=True):
        reference, predicted = values * factor
        low, high = float(np.min(values * factor)), float(np.max(values * factor))
        ax.plot([low, high], [low, high], color="0.6", lw=1)
        ax.plot(reference, predicted, ".", ms=3, alpha=0.6)
        mae = float(np.mean(np.abs(predicted - reference)))
        ax.set_title(f"{name}: MAE {mae:.3g} {unit}")
        ax.set_xlabel(f"reference {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        ax.set_aspect("equal")
    with atomic_write(path) as handle:
        fig.savefig(handle, format=os.path.splitext(path)[1][1:] or "png", dpi=120)
    plt.close(fig)
