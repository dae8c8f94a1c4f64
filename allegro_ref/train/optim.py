r"""Optimizer, weight averaging, learning-rate schedule and early stopping.

All of them act on parameter dicts ``{name: array}`` (any backend) and have a ``state_dict()``
/ ``load_state_dict()`` pair holding everything needed to resume a run bit for bit.

- `Adam` (Kingma & Ba 2015), with PyTorch's defaults, which the official trainer uses:
  $\beta = (0.9, 0.999)$, $\epsilon = 10^{-8}$, no weight decay. For the gradient $g$ at step
  $t = 1, 2, \dots$: $m \leftarrow \beta_1 m + (1 - \beta_1) g$,
  $v \leftarrow \beta_2 v + (1 - \beta_2) g^2$,
  $\theta \leftarrow \theta - \mathrm{lr} \, \hat m / (\sqrt{\hat v} + \epsilon)$ with
  $\hat m = m / (1 - \beta_1^t)$ and $\hat v = v / (1 - \beta_2^t)$.
- `ExponentialMovingAverage` of the weights, as the official ``EMALightningModule``:
  $\bar\theta \leftarrow d \, \bar\theta + (1 - d) \, \theta$ after every optimizer step, with
  the warm-up $d_n = \min\big(d, (1 + n) / (10 + n)\big)$ ($n$ = number of earlier averaging
  steps; the average starts as a copy of the weights), so the early, poor weights are forgotten
  quickly. Validation, test and the saved model use $\bar\theta$.
- `ReduceLROnPlateau`: multiply the learning rate by ``factor`` when the monitored
  validation loss has not improved by a relative ``threshold`` for ``patience`` epochs.
- `EarlyStopping`: stop when the validation loss has not improved by ``min_delta`` for
  ``patience`` epochs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..backend import device, namespace, to_numpy

__all__ = ["Adam", "ExponentialMovingAverage", "ReduceLROnPlateau", "EarlyStopping"]


def _copy(params: dict[str, Any]) -> dict[str, Any]:
    return {k: namespace(v).asarray(v, copy=True) for k, v in params.items()}


def _like(reference: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """Host arrays ``state`` moved to the namespace, device and dtype of ``reference``."""
    out = {}
    for k, ref in reference.items():
        xp = namespace(ref)
        out[k] = xp.astype(xp.asarray(state[k], device=device(ref)), ref.dtype)
    return out


class Adam:
    """Adam on the parameters named in ``trainable`` (module docstring).

    Args:
        params: the initial parameters (not modified; `step` returns new arrays).
        trainable: names of the parameters to optimize (others are returned unchanged).
        lr: learning rate; betas, eps: Adam's constants.
    """

    def __init__(
        self,
        params: dict[str, Any],
        trainable: Iterable[str],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.trainable = [name for name in params if name in set(trainable)]
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.t = 0
        self.m = {k: namespace(params[k]).zeros_like(params[k]) for k in self.trainable}
        self.v = {k: namespace(params[k]).zeros_like(params[k]) for k in self.trainable}

    def step(self, params: dict[str, Any], grads: dict[str, Any]) -> dict[str, Any]:
        """One update: new parameters from the current ones and their gradients."""
        b1, b2 = self.betas
        self.t += 1
        correction1 = 1.0 - b1**self.t
        correction2 = 1.0 - b2**self.t
        out = dict(params)
        for k in self.trainable:
            xp = namespace(params[k])
            g = grads[k]
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * g
            self.v[k] = b2 * self.v[k] + (1.0 - b2) * (g * g)
            denominator = xp.sqrt(self.v[k] / correction2) + self.eps
            out[k] = params[k] - (self.lr / correction1) * self.m[k] / denominator
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "lr": self.lr,
            "m": {k: to_numpy(v) for k, v in self.m.items()},
            "v": {k: to_numpy(v) for k, v in self.v.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, self.lr = int(state["t"]), float(state["lr"])
        self.m = _like(self.m, state["m"])
        self.v = _like(self.v, state["v"])


class ExponentialMovingAverage:
    """θ̄ ← d_n θ̄ + (1 − d_n) θ with d_n = min(decay, (1 + n) / (10 + n)) (module docstring).

    Args:
        params: the initial weights; the average starts as their copy (n = 1 after it).
        decay: the asymptotic decay d (official default 0.999).
    """

    def __init__(self, params: dict[str, Any], decay: float = 0.999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.average = _copy(params)
        self.num_updates = 1

    def update(self, params: dict[str, Any]) -> None:
        n = self.num_updates
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        self.average = {k: d * self.average[k] + (1.0 - d) * params[k] for k in self.average}
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "num_updates": self.num_updates,
            "average": {k: to_numpy(v) for k, v in self.average.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        self.average = _like(self.average, state["average"])


class ReduceLROnPlateau:
    """lr ← max(lr · factor, min_lr) after ``patience`` epochs without a relative improvement
    of ``threshold`` of the monitored value (PyTorch's defaults: factor 0.1, patience 10,
    threshold 1e-4; the official tutorials use factor 0.6, patience 5)."""

    def __init__(
        self,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
    ):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor}")
        self.factor, self.patience = float(factor), int(patience)
        self.threshold, self.min_lr = float(threshold), float(min_lr)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, value: float, lr: float) -> float:
        """The learning rate to use after an epoch whose monitored value was ``value``."""
        if value < self.best * (1.0 - self.threshold):
            self.best, self.bad_epochs = value, 0
            return lr
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.bad_epochs = 0
            return max(lr * self.factor, self.min_lr)
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


class EarlyStopping:
    """``stop`` becomes True after ``patience`` epochs in which the monitored value did not go
    below (best − min_delta)."""

    def __init__(self, patience: int = 20, min_delta: float = 0.0):
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = math.inf
        self.bad_epochs = 0

    def step(self, value: float) -> bool:
        """Record one epoch's value; returns True when training should stop."""
        if value < self.best - self.min_delta:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])
