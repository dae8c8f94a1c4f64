"""Shared pytest set-up: hypothesis profiles and the array backends every test runs on.

Profiles (select with ``HYPOTHESIS_PROFILE`` or ``--hypothesis-profile``):
- ``ci``: derandomized (same examples every run), few examples, no deadline; used by ``.ci/run``.
- ``dev`` (default locally): a moderate random search.
- ``thorough``: many examples, for a long local run before a release.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


class Backend:
    """An array library the tests run the library on, with explicit host <-> backend moves.

    ``strict`` uses array-api-strict on its simulated ``Device("device1")``: any hidden
    conversion to NumPy inside the library raises there, which is how the CuPy path is proven
    without a GPU.
    """

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp

            self.xp = xp
            self.device = None
        elif name == "strict":
            import array_api_strict as xp

            self.xp = xp
            self.device = xp.Device("device1")
        else:
            raise ValueError(name)

    def asarray(self, value, dtype: str | None = None):
        """A host NumPy array (or scalar) as an array of this backend."""
        value = np.asarray(value)
        if dtype is not None:
            value = value.astype(dtype)
        if self.name == "numpy":
            return value
        return self.xp.asarray(value, device=self.device)

    def to_numpy(self, array) -> np.ndarray:
        if self.name == "numpy":
            return np.asarray(array)
        import array_api_strict

        return np.asarray(self.xp.asarray(array, device=array_api_strict.Device("CPU_DEVICE")))

    def __repr__(self) -> str:
        return f"Backend({self.name})"


@pytest.fixture(params=["numpy", "strict"])
def backend(request) -> Backend:
    """Runs the test once on NumPy and once on array-api-strict (simulated device)."""
    return Backend(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)
