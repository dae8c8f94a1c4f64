"""Adam (closed form for a constant gradient, scalar recurrences of the paper), the EMA warm-up
of the official trainer, the plateau schedule, early stopping, and exact state round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from allegro_ref.train.optim import Adam, EarlyStopping, ExponentialMovingAverage, ReduceLROnPlateau


def test_adam_constant_gradient_closed_form(backend):
    """With a constant gradient g the bias-corrected moments are exactly g and g², so every
    step moves θ by −lr·g/(|g| + ε)."""
    g = np.array([0.5, -2.0, 1e-3])
    params = {"w": backend.asarray(np.ones(3)), "frozen": backend.asarray(np.zeros(2))}
    adam = Adam(params, trainable=["w"], lr=0.01)
    for _ in range(7):
        params = adam.step(params, {"w": backend.asarray(g), "frozen": backend.asarray(np.ones(2))})
    expected = 1.0 - 7 * 0.01 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(backend.to_numpy(params["w"]), expected, rtol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(params["frozen"]), 0.0)


def test_adam_matches_the_scalar_recurrence():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal(20)
    lr, (b1, b2), eps = 0.003, (0.8, 0.99), 1e-6
    theta, m, v = 0.3, 0.0, 0.0
    params = {"x": np.array([0.3])}
    adam = Adam(params, ["x"], lr, (b1, b2), eps)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        params = adam.step(params, {"x": np.array([g])})
        assert params["x"][0] == pytest.approx(theta, rel=1e-13)


def test_ema_warm_up_formula():
    """θ̄ starts as θ₀; update n (n = 1, 2, ...) uses d = min(decay, (1 + n)/(10 + n))."""
    ema = ExponentialMovingAverage({"x": np.array([1.0])}, decay=0.9)
    average = 1.0
    for n, value in enumerate([3.0, -1.0, 2.0, 5.0, 0.0, 4.0] * 5, start=1):
        d = min(0.9, (1 + n) / (10 + n))
        average = d * average + (1 - d) * value
        ema.update({"x": np.array([value])})
        assert ema.average["x"][0] == pytest.approx(average, rel=1e-14)
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage({"x": np.zeros(1)}, decay=1.5)


def test_plateau_schedule_and_early_stopping():
    schedule = ReduceLROnPlateau(factor=0.5, patience=2, threshold=0.1, min_lr=0.2)
    lrs, lr = [], 1.0
    for value in [1.0, 0.95, 0.94, 0.93, 0.5, 0.49, 0.48, 0.47, 0.46, 0.455, 0.451]:
        lr = schedule.step(value, lr)
        lrs.append(lr)
    # 0.95, 0.94 are not 10 % better than 1.0; the third such epoch halves lr; 0.5 resets;
    # 0.49, 0.48 bad, 0.47 halves; 0.46, 0.455 bad, 0.451 would halve but min_lr = 0.2 stops it
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2]
    stopping = EarlyStopping(patience=2, min_delta=0.01)
    assert [stopping.step(v) for v in [1.0, 0.5, 0.495, 0.3, 0.3, 0.3]] == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.0)


def test_state_round_trips_continue_exactly():
    rng = np.random.default_rng(1)
    grads = [{"w": rng.standard_normal(4)} for _ in range(6)]

    def run(split: int | None):
        params = {"w": np.ones(4)}
        adam, ema = Adam(params, ["w"], lr=0.1), ExponentialMovingAverage(params, 0.99)
        schedule, stopping = ReduceLROnPlateau(), EarlyStopping()
        for k, g in enumerate(grads):
            if k == split:  # rebuild everything from the state dicts
                states = [o.state_dict() for o in (adam, ema, schedule, stopping)]
                adam, ema = Adam(params, ["w"]), ExponentialMovingAverage(params)
                schedule, stopping = ReduceLROnPlateau(), EarlyStopping()
                for o, s in zip((adam, ema, schedule, stopping), states, strict=True):
                    o.load_state_dict(s)
            params = adam.step(params, g)
            ema.update(params)
            adam.lr = schedule.step(float(np.sum(params["w"])), adam.lr)
            stopping.step(float(np.sum(params["w"])))
        return params["w"], ema.average["w"], adam.lr

    for a, b in zip(run(None), run(3), strict=True):
        np.testing.assert_array_equal(a, b)
