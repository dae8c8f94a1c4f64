"""``TrainConfig``: everything a training run needs, readable from a YAML file.

A config has four parts (the YAML file mirrors it; see docs/training.md for a full example):

- data: one file split by seed (``data_path``, ``n_train``, ``n_val``, ``n_test``) or three
  files (``train_path``, ``val_path``, ``test_path``);
- ``model``: the model family and its config's fields. ``family: allegro`` (the default:
  today's `AllegroConfig`) or ``family: allegro-2022`` (the paper's architecture,
  `Allegro2022Config`); the other keys are that config's fields. ``type_names`` defaults to
  the species of the data (by atomic number). The normalizations the official trainer takes from
  the training data may be given as numbers or left to the data:
  ``avg_num_neighbors: auto`` (mean coordination; ``per_type`` for one value per centre type),
  ``per_type_energy_shifts: auto`` (least squares; ``per_atom_mean`` for the official tutorial's
  single mean), ``per_type_energy_scales: auto`` (force RMS);
- the loss weights (``energy_weight``, ``forces_weight``, ``stress_weight``);
- the optimizer and schedule (Adam ``lr``, ``ema_decay``, ``batch_size``, ``max_epochs``,
  optional ``lr_schedule`` and ``early_stopping``), and the run's ``output_dir``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from .._weights_file import FAMILIES

__all__ = ["TrainConfig"]

AUTO = "auto"
#: ``model.family`` when not given: today's architecture.
DEFAULT_FAMILY = "allegro"


@dataclass
class TrainConfig:
    """Settings of one training run (defaults: the official trainer's where it has one).

    Attributes:
        data_path: one labelled data file (any ASE-readable file or ``.db``), split by
            ``split_seed`` into ``n_train`` / ``n_val`` / ``n_test`` (rest if None).
        n_train: structures of `data_path` for training.
        n_val: structures of `data_path` for validation.
        n_test: structures of `data_path` for the test (None: the rest).
        split_seed: seed of the random split of `data_path`.
        train_path: alternatively to `data_path`, the training file.
        val_path: the validation file (with `train_path`).
        test_path: the test file (optional, with `train_path`).
        energy_key: the energy label's name when not the standard one.
        forces_key: the forces label's name when not the standard one.
        stress_key: the stress label's name when not the standard one.
        model: ``family`` (``"allegro"``, the default, or ``"allegro-2022"``) and the fields
            of that family's config (`AllegroConfig` or `Allegro2022Config`); ``r_max`` is
            required (see module docstring) unless ``init_from`` is given.
        init_from: a model file (``Potential.save``, e.g. a previous run's ``model.npz`` or an
            imported official model) whose weights start the training (fine-tuning); its
            model settings, normalizations included, replace ``model``.
        dtype: network dtype, ``"float64"`` or ``"float32"``.
        seed: seed of the weight initialization and of the batch order.
        energy_weight: loss weight of the per-atom energy (the three are normalized to sum 1).
        forces_weight: loss weight of the forces.
        stress_weight: loss weight of the stress.
        lr: Adam's learning rate (1e-3 in the official tutorials).
        betas: Adam's decay rates of the moments (PyTorch's defaults).
        eps: Adam's denominator offset (PyTorch's default).
        ema_decay: decay of the weight average used for validation and the saved model.
        train_scales_shifts: also train the per-type energy scales and shifts.
        batch_size: structures per optimizer step.
        max_epochs: epochs to run.
        lr_schedule: None, or ``{"factor", "patience", "threshold", "min_lr"}`` for
            ReduceLROnPlateau on the validation loss.
        early_stopping: None, or ``{"patience", "min_delta"}`` on the validation loss.
        output_dir: where metrics, checkpoints, the model and figures go.
        backend: ``"numpy"`` or ``"cupy"``.
        progress: show a tqdm progress bar.
        plots: write the learning-curve and parity figures at the end (needs matplotlib).
        keep_host_memory: tune glibc's malloc of this process to keep freed memory (up to
            1 GiB; `allegro_ref._execution.keep_host_memory`, process-wide and for good) for
            the training; False leaves its thresholds to glibc's dynamic rule (one step of the
            bench_train model then costs ~1.7x the CPU time).
    """

    model: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    data_path: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    split_seed: int = 0
    train_path: str | None = None
    val_path: str | None = None
    test_path: str | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    dtype: str = "float64"
    seed: int = 0
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 0.0
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    ema_decay: float = 0.999
    train_scales_shifts: bool = False
    batch_size: int = 5
    max_epochs: int = 100
    lr_schedule: dict[str, float] | None = None
    early_stopping: dict[str, float] | None = None
    output_dir: str = "allegro_run"
    backend: str = "numpy"
    progress: bool = True
    plots: bool = True
    keep_host_memory: bool = True
    _base_dir: str = field(default=".", repr=False)

    def __post_init__(self):
        _check_types(self)
        family = self.model.get("family", DEFAULT_FAMILY)
        if family not in FAMILIES:  # the names the weights file records
            raise ValueError(f"model.family must be one of {list(FAMILIES)}, got {family!r}")
        if self.init_from is None and "r_max" not in self.model:
            raise ValueError("the model section needs r_max (the cutoff radius in Å)")
        if self.init_from is not None and self.model:
            raise ValueError(
                f"init_from {self.init_from!r} brings its own model settings; remove the model "
                f"section (got {sorted(self.model)})"
            )
        one_file = self.data_path is not None
        three_files = self.train_path is not None or self.val_path is not None
        if one_file == three_files:
            raise ValueError(
                "give either data_path (one file, split by split_seed) or train_path and "
                "val_path (and optionally test_path), not both"
            )
        if one_file and (self.n_train is None or self.n_val is None):
            raise ValueError("data_path needs n_train and n_val (n_test: the rest if omitted)")
        if three_files and (self.train_path is None or self.val_path is None):
            raise ValueError("separate files need both train_path and val_path")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.batch_size < 1 or self.max_epochs < 0:
            raise ValueError(
                f"batch_size must be >= 1 and max_epochs >= 0, got {self.batch_size} and "
                f"{self.max_epochs}"
            )
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @property
    def family(self) -> str:
        """The model family of a new run: ``model.family``, ``"allegro"`` if not given."""
        return self.model.get("family", DEFAULT_FAMILY)

    def path(self, name: str) -> str | None:
        """A path of the config, relative to the YAML file's folder when it was read from one."""
        value = getattr(self, name)
        return None if value is None else os.path.join(self._base_dir, os.path.expanduser(value))

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str = ".") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**data, _base_dir=base_dir)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a YAML file (paths inside it are relative to its folder)."""
        import yaml

        with open(path) as handle:
            data = yaml.safe_load(handle)
        if not isinstance(data, dict):
            raise ValueError(f"{os.fspath(path)!r} must hold a mapping of settings")
        return cls.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict (paths made absolute), for ``from_dict`` and checkpoints."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.pop("_base_dir")
        for name in ("init_from", "data_path", "train_path", "val_path", "test_path", "output_dir"):
            out[name] = None if out[name] is None else os.path.abspath(self.path(name))
        out["betas"] = list(self.betas)
        return out


_INTEGERS = ("n_train", "n_val", "n_test", "split_seed", "seed", "batch_size", "max_epochs")
_NUMBERS = ("energy_weight", "forces_weight", "stress_weight", "lr", "eps", "ema_decay")
_BOOLEANS = ("train_scales_shifts", "progress", "plots", "keep_host_memory")
_STRINGS = (
    "init_from",
    "data_path",
    "train_path",
    "val_path",
    "test_path",
    "energy_key",
    "forces_key",
    "stress_key",
    "dtype",
    "output_dir",
    "backend",
)
_MAPPINGS = ("model", "lr_schedule", "early_stopping")


def _check_types(config: TrainConfig) -> None:
    """A `ValueError` naming the first setting of the wrong type (a YAML file can hold
    anything): integers, numbers, booleans (`true`/`false`, not strings), strings, mappings."""
    kinds = (
        (_INTEGERS, int, "an integer"),
        (_NUMBERS, int | float, "a number"),
        (_BOOLEANS, bool, "true or false"),
        (_STRINGS, str, "a string"),
        (_MAPPINGS, dict, "a mapping"),
    )
    for names, kind, what in kinds:
        for name in names:
            value = getattr(config, name)
            wrong_bool = isinstance(value, bool) and kind is not bool
            if value is not None and (wrong_bool or not isinstance(value, kind)):
                hint = ""
                if isinstance(value, str) and kind is not str and _is_number(value):
                    hint = " (YAML reads a number like 1e-3 as text: write 1.0e-3)"
                raise ValueError(f"setting {name} must be {what}, got {value!r:.80}{hint}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
