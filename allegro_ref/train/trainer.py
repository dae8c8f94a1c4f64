"""The training loop: data in, a trained `Potential` out.

One epoch = one pass over the training structures in a random order (``seed``), in batches of
``batch_size``; per batch: predictions, loss and its exact parameter gradient
(``allegro_ref.train.loss``), one Adam step on the trainable parameters, one update of the
weight average (EMA). After each epoch the averaged weights are evaluated on the validation
set; its loss drives the optional learning-rate schedule and early stopping, and the best
averaged weights are saved as the model. Everything is written to ``output_dir``:

- ``metrics.csv``: one row per epoch (losses, MAEs and RMSEs, learning rate, wall time);
- ``checkpoint.npz``: weights, Adam moments, EMA, schedule, random state: `Trainer.resume`
  continues a run exactly as if it had not stopped;
- ``model.npz``: the best averaged weights (``Potential.load``);
- ``test_metrics.json``, ``learning_curve.png``, ``parity.png`` at the end.

Metrics: energy per atom (eV/atom), force components (eV/Å), stress components (eV/Å³).

Both model families train the same way: ``model.family`` of the config (`TrainConfig`) picks
today's `AllegroModel` or the paper's `Allegro2022Model`; the loss and its gradient
(``allegro_ref.train.loss``) only call the model's ``forward`` and ``backward``.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._execution import tune_host_memory
from .._files import atomic_write
from .._validation import CHEMICAL_SYMBOLS
from .._weights_file import FAMILIES
from ..backend import to_numpy
from ..model import Allegro2022Config, Allegro2022Model, AllegroConfig, AllegroModel
from ..potential import Potential
from .config import AUTO, DEFAULT_FAMILY, TrainConfig
from .data import Graph, Structure, batches, build_graph, read_structures, split_structures
from .loss import LossWeights, loss_and_gradient
from .optim import Adam, EarlyStopping, ExponentialMovingAverage, ReduceLROnPlateau
from .statistics import (
    average_num_neighbors,
    force_rms,
    per_atom_energy_mean,
    per_type_average_num_neighbors,
    per_type_energy_shifts,
)

__all__ = ["Trainer", "train", "evaluate"]

Model = AllegroModel | Allegro2022Model
ModelConfig = AllegroConfig | Allegro2022Config

_CHECKPOINT = "checkpoint.npz"
_MODEL = "model.npz"
_METRICS = "metrics.csv"
_STATE_KEY = "__state__"


def train(config: TrainConfig | dict[str, Any]) -> Trainer:
    """Run a whole training (Python API): ``Trainer(config).fit()``; returns the trainer
    (``trainer.potential()`` is the best model, ``trainer.history`` the metrics)."""
    trainer = Trainer(config)
    trainer.fit()
    return trainer


class Trainer:
    """A training run (module docstring).

    Args:
        config: a `TrainConfig` or a dict of its fields.
    """

    def __init__(self, config: TrainConfig | dict[str, Any]):
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        self.config = config
        self.output_dir = config.path("output_dir")
        train_set, val_set, test_set = self._read_data()
        start = None if config.init_from is None else Potential.load(config.path("init_from"))
        # The neighbour lists need only the species and cutoffs; the statistics need them.
        if start is None:
            base_config = self._model_config(train_set, val_set, test_set)
        else:
            base_config = start.config
        self.graphs = {
            name: self._graphs(structures, base_config)
            for name, structures in (("train", train_set), ("val", val_set), ("test", test_set))
        }
        self.weights = LossWeights(config.energy_weight, config.forces_weight, config.stress_weight)
        self._check_labels()
        if start is None:
            self.model_config = self._with_statistics(base_config, train_set)
            model_class = FAMILIES[config.family][1]
            model = model_class.init(self.model_config, seed=config.seed, dtype=config.dtype)
        else:
            self.model_config = base_config
            model = type(start.model)(base_config, start.model.params, config.dtype)
        self.model = model.to(config.backend)

        frozen = _frozen_parameters(self.model_config, config.train_scales_shifts)
        trainable = [name for name in self.model.params if name not in frozen]
        self.optimizer = Adam(self.model.params, trainable, config.lr, config.betas, config.eps)
        self.ema = ExponentialMovingAverage(self.model.params, config.ema_decay)
        schedule = config.lr_schedule
        self.schedule = ReduceLROnPlateau(**schedule) if schedule is not None else None
        stopping = config.early_stopping
        self.early_stopping = EarlyStopping(**stopping) if stopping is not None else None
        self.rng = np.random.default_rng(config.seed)
        self.epoch = 0
        self.best_val_loss = float("inf")
        self.history: list[dict[str, float]] = []
        self.wall_time = 0.0

    # ---------------------------------------------------------------------------------------
    # Set-up
    # ---------------------------------------------------------------------------------------
    def _read_data(self) -> tuple[list[Structure], list[Structure], list[Structure]]:
        c = self.config
        keys = dict(energy_key=c.energy_key, forces_key=c.forces_key, stress_key=c.stress_key)
        if c.data_path is not None:
            structures = read_structures(c.path("data_path"), **keys)
            return split_structures(structures, c.n_train, c.n_val, c.n_test, c.split_seed)
        test = read_structures(c.path("test_path"), **keys) if c.test_path else []
        return (
            read_structures(c.path("train_path"), **keys),
            read_structures(c.path("val_path"), **keys),
            test,
        )

    def _model_config(self, *sets: Sequence[Structure]) -> ModelConfig:
        """The model family's config without the data statistics (placeholders until they are
        known): `AllegroConfig` or `Allegro2022Config` (``model.family``)."""
        fields = dict(self.config.model)
        config_class = FAMILIES[fields.pop("family", DEFAULT_FAMILY)][0]
        if "type_names" not in fields:
            species = {name for structures in sets for s in structures for name in s.species}
            fields["type_names"] = sorted(species, key=_atomic_number)
        placeholders = {"avg_num_neighbors": 2.0, "per_type_energy_shifts": 0.0}
        for name in ("avg_num_neighbors", "per_type_energy_shifts", "per_type_energy_scales"):
            if isinstance(fields.get(name, AUTO), str):
                fields[name] = placeholders.get(name, 1.0)
        return config_class.from_dict(fields)

    def _with_statistics(self, config: ModelConfig, train_set: list[Structure]) -> ModelConfig:
        """Fill the ``auto`` normalizations from the training data (statistics module).

        The 2022 family stores its scales and shifts divided by its ``global_energy_scale`` g
        (it multiplies them by g), so the statistics are divided by g there.
        """
        requested = self.config.model
        values = self._neighbor_statistic(config)
        shifts = requested.get("per_type_energy_shifts", AUTO)
        if shifts == AUTO:
            values["per_type_energy_shifts"] = per_type_energy_shifts(train_set, config.type_names)
        elif shifts == "per_atom_mean":
            values["per_type_energy_shifts"] = per_atom_energy_mean(train_set)
        if requested.get("per_type_energy_scales", AUTO) == AUTO:
            values["per_type_energy_scales"] = force_rms(train_set)
        for name in ("avg_num_neighbors", "per_type_energy_shifts", "per_type_energy_scales"):
            given = requested.get(name, AUTO)
            if isinstance(given, str) and name not in values:
                raise ValueError(f"model.{name}: unknown setting {given!r}")
        g = getattr(config, "global_energy_scale", 1.0)
        for name in ("per_type_energy_shifts", "per_type_energy_scales"):
            if name in values:
                values[name] = _divided(values[name], g)
        return type(config).from_dict({**config.to_dict(), **values})

    def _neighbor_statistic(self, config: ModelConfig) -> dict[str, Any]:
        """``{"avg_num_neighbors": N̄}`` from the training graphs for ``auto`` (the mean
        coordination) or ``per_type`` (one value per center type; today's family only), else
        ``{}``."""
        neighbors = self.config.model.get("avg_num_neighbors", AUTO)
        if neighbors == AUTO:
            return {"avg_num_neighbors": average_num_neighbors(self.graphs["train"])}
        if neighbors != "per_type":
            return {}
        if isinstance(config, Allegro2022Config):
            raise ValueError(
                "model.avg_num_neighbors: per_type needs family allegro (the allegro-2022 "
                "family has one N̄ for all types); use auto or a number"
            )
        return {
            "avg_num_neighbors": per_type_average_num_neighbors(
                self.graphs["train"], config.type_names
            )
        }

    @staticmethod
    def _graphs(structures: Sequence[Structure], c: ModelConfig) -> list[Graph]:
        return [build_graph(s, c.type_names, c.r_max, c.cutoff_matrix()) for s in structures]

    def _check_labels(self) -> None:
        w_energy, w_forces, w_stress = self.weights.normalized()
        for name, graphs in self.graphs.items():
            for i, g in enumerate(graphs):
                s = g.structure
                if w_energy > 0 and not np.isfinite(s.energy):
                    raise ValueError(f"{name} structure {i} has no energy (energy weight > 0)")
                if w_forces > 0 and not np.all(np.isfinite(s.forces)):
                    raise ValueError(f"{name} structure {i} has no forces (forces weight > 0)")
        if w_stress > 0 and not any(
            np.all(np.isfinite(g.structure.stress)) for g in self.graphs["train"]
        ):
            raise ValueError("the stress weight is > 0 but no training structure has a stress")

    # ---------------------------------------------------------------------------------------
    # Training
    # ---------------------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train until ``max_epochs`` (or early stopping); returns the metrics history."""
        c = self.config
        os.makedirs(self.output_dir, exist_ok=True)
        # Every step allocates and frees tens of MB of temporaries: unless glibc keeps them,
        # the kernel maps and zeroes them anew each step (1.7x the CPU time of a bench_train step)
        tune_host_memory(c.keep_host_memory)
        bar = _progress_bar(c, total=c.max_epochs, initial=self.epoch)
        try:
            while self.epoch < c.max_epochs:
                start = time.perf_counter()
                row = self._train_epoch(bar)
                row.update(self._prefixed("val", self.evaluate(self.graphs["val"])))
                self.wall_time += time.perf_counter() - start
                self.epoch += 1
                row = {"epoch": self.epoch, "lr": self.optimizer.lr, **row}
                row["wall_time_s"] = self.wall_time
                self.history.append(row)
                stop = self._end_of_epoch(row["val_loss"])
                self._write_metrics()
                self.save_checkpoint()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{row['train_loss']:.3g}",
                        val_E=f"{row['val_energy_mae'] * 1e3:.2f} meV/at",
                        val_F=f"{row['val_forces_mae'] * 1e3:.1f} meV/Å",
                    )
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        self.finish()
        return self.history

    def _train_epoch(self, bar) -> dict[str, float]:
        errors = _Errors()
        losses, sizes = [], []
        for batch in batches(
            self.graphs["train"], self.config.batch_size, self.rng, like=self.model
        ):
            result = loss_and_gradient(self.model, batch, self.weights)
            self.model.params = self.optimizer.step(self.model.params, result.gradients)
            self.ema.update(self.model.params)
            errors.add(result.predictions, batch)
            losses.append(result.loss)
            sizes.append(batch.num_structures)
        return {
            "train_loss": float(np.average(losses, weights=sizes)),
            **self._prefixed("train", errors.summary()),
        }

    def _end_of_epoch(self, val_loss: float) -> bool:
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self.potential().save(os.path.join(self.output_dir, _MODEL))
        if self.schedule is not None:
            self.optimizer.lr = self.schedule.step(val_loss, self.optimizer.lr)
        return self.early_stopping is not None and self.early_stopping.step(val_loss)

    def averaged_model(self) -> Model:
        """The model with the EMA weights (what validation and the saved model use)."""
        model = copy.copy(self.model)
        model.params = self.ema.average
        return model

    def potential(self) -> Potential:
        """A `Potential` with the current averaged weights."""
        return Potential(self.averaged_model())

    def evaluate(self, graphs: Sequence[Graph], model: Model | None = None) -> dict:
        """Loss and errors of ``model`` (default: the averaged weights) on ``graphs``: ``loss``,
        ``energy_mae``/``_rmse`` (eV/atom), ``forces_mae``/``_rmse`` (eV/Å), ``stress_mae``/
        ``_rmse`` (eV/Å³; NaN without stresses)."""
        return evaluate(
            model or self.averaged_model(), graphs, self.weights, self.config.batch_size
        )

    def finish(self) -> None:
        """Test the best model and draw the figures (end of `fit`)."""
        out = self.output_dir
        best = Potential.load(os.path.join(out, _MODEL)) if self.history else self.potential()
        best = best.to(self.config.backend)
        results = {"epochs": self.epoch, "wall_time_s": self.wall_time}
        for name in ("val", "test"):
            if self.graphs[name]:
                results[name] = evaluate(
                    best.model, self.graphs[name], self.weights, self.config.batch_size
                )
        with atomic_write(os.path.join(out, "test_metrics.json"), "w") as handle:
            json.dump(_nan_to_none(results), handle, indent=2)  # strict JSON: null, not NaN
        self.final_metrics = results
        if self.config.plots and self.history:
            from .plots import learning_curve, parity_plot

            learning_curve(self.history, os.path.join(out, "learning_curve.png"))
            graphs = self.graphs["test"] or self.graphs["val"]
            parity_plot(best.model, graphs, os.path.join(out, "parity.png"))

    @staticmethod
    def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
        return {f"{prefix}_{k}": v for k, v in metrics.items()}

    def _write_metrics(self) -> None:
        path = os.path.join(self.output_dir, _METRICS)
        with atomic_write(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)

    # ---------------------------------------------------------------------------------------
    # Checkpoints
    # ---------------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | None = None) -> None:
        """Write everything needed to continue exactly (weights, Adam, EMA, schedule, early
        stopping, random state, history) to ``path`` (default ``output_dir/checkpoint.npz``)."""
        path = path or os.path.join(self.output_dir, _CHECKPOINT)
        adam, ema = self.optimizer.state_dict(), self.ema.state_dict()
        arrays = {f"params/{k}": to_numpy(v) for k, v in self.model.params.items()}
        arrays.update({f"adam.m/{k}": v for k, v in adam.pop("m").items()})
        arrays.update({f"adam.v/{k}": v for k, v in adam.pop("v").items()})
        arrays.update({f"ema/{k}": v for k, v in ema.pop("average").items()})
        state = {
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "epoch": self.epoch,
            "best_val_loss": self.best_val_loss,
            "wall_time": self.wall_time,
            "history": self.history,
            "adam": adam,
            "ema": ema,
            "schedule": self.schedule.state_dict() if self.schedule else None,
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "rng": self.rng.bit_generator.state,
        }
        with atomic_write(path) as handle:
            np.savez(handle, **{_STATE_KEY: np.asarray(json.dumps(state))}, **arrays)

    @classmethod
    def resume(cls, path: str | os.PathLike, max_epochs: int | None = None) -> Trainer:
        """A trainer continuing the run saved in the checkpoint ``path`` (optionally with a
        new ``max_epochs``); `fit` then goes on from the saved epoch."""
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        state = json.loads(str(arrays.pop(_STATE_KEY)))
        config = TrainConfig.from_dict(state["config"])
        if max_epochs is not None:
            config.max_epochs = int(max_epochs)
        trainer = cls(config)
        try:
            saved = type(trainer.model_config).from_dict(state["model_config"])
        except ValueError:  # a config of the other family
            saved = None
        if saved is None or saved.to_dict() != trainer.model_config.to_dict():
            raise ValueError(f"{os.fspath(path)!r} was written for another model configuration")

        def group(prefix: str) -> dict[str, np.ndarray]:
            return {
                k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "/")
            }

        params = group("params")
        xp = trainer.model.namespace
        trainer.model.params = {
            k: xp.astype(xp.asarray(params[k]), v.dtype) for k, v in trainer.model.params.items()
        }
        trainer.optimizer.load_state_dict(
            {**state["adam"], "m": group("adam.m"), "v": group("adam.v")}
        )
        trainer.ema.load_state_dict({**state["ema"], "average": group("ema")})
        if trainer.schedule is not None:
            trainer.schedule.load_state_dict(state["schedule"])
        if trainer.early_stopping is not None:
            trainer.early_stopping.load_state_dict(state["early_stopping"])
        trainer.rng.bit_generator.state = state["rng"]
        trainer.epoch = int(state["epoch"])
        trainer.best_val_loss = float(state["best_val_loss"])
        trainer.wall_time = float(state["wall_time"])
        trainer.history = state["history"]
        return trainer


def evaluate(
    model: Model,
    graphs: Sequence[Graph],
    weights: LossWeights | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Loss (with ``weights``, default 1 : 1 energy and forces) and errors of ``model`` on
    ``graphs`` (see `Trainer.evaluate`)."""
    weights = LossWeights() if weights is None else weights
    if not graphs:
        raise ValueError("evaluate needs at least one structure")
    errors = _Errors()
    total, count = 0.0, 0
    for batch in batches(graphs, batch_size, None, like=model):
        result = loss_and_gradient(model, batch, weights, gradient=False)
        errors.add(result.predictions, batch)
        total += result.loss * batch.num_structures
        count += batch.num_structures
    return {"loss": total / count, **errors.summary()}


class _Errors:
    """Accumulates prediction errors over batches (host NumPy)."""

    def __init__(self):
        self.energy, self.forces, self.stress = [], [], []

    def add(self, predictions: dict[str, Any], batch) -> None:
        n_atoms = to_numpy(batch.num_atoms)
        self.energy.append((to_numpy(predictions["energy"]) - to_numpy(batch.energy)) / n_atoms)
        self.forces.append((to_numpy(predictions["forces"]) - to_numpy(batch.forces)).reshape(-1))
        stress = to_numpy(predictions["stress"]) - to_numpy(batch.stress)
        self.stress.append(stress[np.all(np.isfinite(stress), axis=(1, 2))].reshape(-1))

    def summary(self) -> dict[str, float]:
        out = {}
        for name, parts in (
            ("energy", self.energy),
            ("forces", self.forces),
            ("stress", self.stress),
        ):
            values = np.concatenate(parts) if parts else np.zeros(0)
            values = values[np.isfinite(values)]
            out[f"{name}_mae"] = float(np.mean(np.abs(values))) if values.size else float("nan")
            out[f"{name}_rmse"] = (
                float(np.sqrt(np.mean(values**2))) if values.size else float("nan")
            )
        return out


def _frozen_parameters(config: ModelConfig, train_scales_shifts: bool) -> set[str]:
    """The parameters the optimizer leaves as they are: the Bessel frequencies unless
    ``bessel_trainable``, the 2022 family's ResNet coefficients unless
    ``latent_resnet_coefficients_learnable``, the per-type energy scales and shifts unless
    ``train_scales_shifts``."""
    frozen = set() if config.bessel_trainable else {"bessel_frequencies"}
    if not getattr(config, "latent_resnet_coefficients_learnable", True):
        frozen.add("latent_resnet_coefficients")
    if not train_scales_shifts:
        frozen |= {"per_type_energy_scales", "per_type_energy_shifts"}
    return frozen


def _divided(value: float | dict[str, float], g: float) -> float | dict[str, float]:
    """A per-type statistic (a number or {type: number}) divided by g."""
    if isinstance(value, dict):
        return {name: v / g for name, v in value.items()}
    return value / g


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return None if isinstance(value, float) and np.isnan(value) else value


def _atomic_number(symbol: str) -> int:
    return CHEMICAL_SYMBOLS.index(symbol) if symbol in CHEMICAL_SYMBOLS else len(CHEMICAL_SYMBOLS)


def _progress_bar(config: TrainConfig, total: int, initial: int):
    if not config.progress:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", file=sys.stderr, dynamic_ncols=True)
