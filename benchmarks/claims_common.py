"""What the ``claims_*.py`` scripts share: fcc copper cells, CPU timing of several steps in
alternation with the machine's load measured as benchmarks/bench_potential.py measures it, the
power-law fit, and the JSON files in benchmarks/results/claims/.

Not run by itself; imported by claims_cost.py, claims_locality.py and claims_speed.py (and by
the notebook notebooks/09_paper_claims_cost.ipynb, which re-runs one small point of each).

Timing: CPU seconds of this process (``time.process_time``), one BLAS thread
(``Potential.num_threads = 1``, ``one_core``). The steps are called in turn, round after round, so
that a change of the machine's load hits them all alike; the medians over rounds are reported.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench_potential import MAX_OTHER_CORES, LoadMeter

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "claims"
CU_LATTICE = 3.61  # Å, fcc copper


def fcc_copper(repeat: Sequence[int], lattice: float = CU_LATTICE, rattle: float = 0.02):
    """A periodic cubic fcc cell of ``4 · prod(repeat)`` atoms, lattice constant ``lattice`` Å,
    positions rattled by a Gaussian of ``rattle`` Å (seed 0)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=lattice, cubic=True).repeat(tuple(repeat))
    if rattle:
        atoms.rattle(rattle, seed=0)
    return atoms


def time_alternating(
    steps: Sequence[Callable[[], object]], repeats: int, warmup: int = 1
) -> tuple[list[list[float]], dict]:
    """CPU seconds of each step, called in turn for ``warmup`` untimed rounds and ``repeats``
    timed rounds (round ``r`` starts with step ``r`` mod the number of steps):
    ``(seconds[step][round], load)``, ``load`` as bench_potential.py records it
    (``load_1min``, ``other_cores``, ``loaded``)."""
    for _ in range(warmup):
        for step in steps:
            step()
    seconds: list[list[float]] = [[] for _ in steps]
    meter = LoadMeter()
    for r in range(repeats):
        round_start = time.process_time()
        for k in range(len(steps)):
            index = (k + r) % len(steps)  # each round starts one step later: no fixed order
            start = time.process_time()
            steps[index]()
            seconds[index].append(time.process_time() - start)
        meter.sample(time.process_time() - round_start)
    return seconds, meter.summary(1, MAX_OTHER_CORES)


def one_core(potential):
    """``potential`` with one BLAS thread and no worker processes (``Potential.num_threads``)."""
    potential.num_threads = 1
    return potential


def spread(times: Sequence[float]) -> float:
    """The relative spread of repeated timings, ``(max - min) / median``: the noise a check
    against a stored number must allow."""
    return (max(times) - min(times)) / statistics.median(times)


def power_law_fit(x: Sequence[float], y: Sequence[float]) -> dict:
    """Least squares of ``log y = a + k log x``: the exponent ``k``, the prefactor ``exp(a)``
    and the largest relative residual of the fit."""
    log_x, log_y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    k, a = np.polyfit(log_x, log_y, 1)
    residual = np.exp(log_y - (a + k * log_x)) - 1.0
    return {
        "exponent": float(k),
        "prefactor": float(np.exp(a)),
        "max_rel_residual": float(np.abs(residual).max()),
        "x_range": [float(min(x)), float(max(x))],
    }


def machine() -> dict:
    """Where and when: UTC date, processor, CPU count, BLAS threads."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "timing": "process CPU time (time.process_time), medians of alternated rounds",
    }


def write_result(path: Path, payload: dict) -> Path:
    """Write ``payload`` plus ``machine()`` as JSON to ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=1) + "\n")
    return path


def read_result(name: str) -> dict:
    """The stored benchmarks/results/claims/``name``.json."""
    return json.loads((RESULTS / f"{name}.json").read_text())
