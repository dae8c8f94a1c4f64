"""Benchmark of allegro_ref.o3: spherical harmonics (values, values + VJP, values + Jacobian) and
the cold build of the Wigner 3j symbols, against sphericart and e3nn where they are importable.

    python benchmarks/bench_o3.py --threads 1                  # allegro_ref alone
    /work/main/.venv-compare/bin/python benchmarks/bench_o3.py --threads 1   # + sphericart, e3nn

Prints markdown tables of times in ms (wall clock, or with ``--clock cpu`` this process's CPU
time), "median (best)" over the repeats, and the ratios allegro_ref / reference computed on the
best times (the stabler number on a shared machine). The libraries are timed round-robin (one
call of each per repeat), so that a change of load affects them alike. The vectors are Gaussian
(all libraries normalize them); so is the VJP cotangent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads of BLAS/OpenMP/torch")
    parser.add_argument("--quick", action="store_true", help="1e5 vectors only, fewer repeats")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or CPU time of this process (robust to other jobs on a busy machine; "
        "meaningful with --threads 1 only, as it adds up the threads)",
    )
    return parser.parse_args()


ARGS = parse_args()
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = str(ARGS.threads)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # no install needed

import numpy as np  # noqa: E402

import allegro_ref.o3._wigner as wigner_module  # noqa: E402
from allegro_ref.o3 import (  # noqa: E402
    spherical_harmonics,
    spherical_harmonics_backward,
    spherical_harmonics_forward,
    spherical_harmonics_with_grad,
    wigner_3j,
)

try:
    import sphericart
except ImportError:
    sphericart = None
try:
    import torch
    from e3nn import o3 as e3nn_o3

    torch.set_num_threads(ARGS.threads)
except ImportError:
    torch = e3nn_o3 = None

L_MAXES = (2, 3, 6)
SIZES = (100_000,) if ARGS.quick else (100_000, 1_000_000)
DTYPES = ("float64", "float32")


CLOCK = time.perf_counter if ARGS.clock == "wall" else time.process_time


def timed(functions: dict, repeats: int, warmup: int) -> dict:
    """{name: (median, best) time in ms}, calling the functions round-robin."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = CLOCK()
            fn()
            times[name].append(1e3 * (CLOCK() - start))
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def cell(t: tuple[float, float] | None) -> str:
    if t is None:
        return "-"
    return f"{t[0]:.3g} ({t[1]:.3g})"


def ratio(ours, theirs) -> str:
    return "-" if ours is None or theirs is None else f"{ours[1] / theirs[1]:.2f}"


def harmonics_rows(n: int, dtype: str, lmax: int, repeats: int, warmup: int) -> dict:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, 3)).astype(dtype)
    g = rng.standard_normal((n, (lmax + 1) ** 2)).astype(dtype)

    def values_and_vjp():
        _, cache = spherical_harmonics_forward(lmax, v)
        spherical_harmonics_backward(cache, g)

    functions = {
        "ours values": lambda: spherical_harmonics(lmax, v),
        "ours values+vjp": values_and_vjp,
        "ours values+jac": lambda: spherical_harmonics_with_grad(lmax, v),
    }
    if sphericart is not None:
        calculator = sphericart.SphericalHarmonics(lmax)
        functions["sphericart values"] = lambda: calculator.compute(v)
        functions["sphericart values+jac"] = lambda: calculator.compute_with_gradients(v)
    if e3nn_o3 is not None:
        module = e3nn_o3.SphericalHarmonics(list(range(lmax + 1)), True, "component")
        x, cotangent = torch.from_numpy(v), torch.from_numpy(g)

        def e3nn_values():
            with torch.no_grad():
                module(x)

        def e3nn_values_and_vjp():
            xg = x.detach().requires_grad_(True)
            module(xg).backward(cotangent)

        e3nn_values()  # TorchScript compiles on the first calls
        e3nn_values_and_vjp()
        functions["e3nn values"] = e3nn_values
        functions["e3nn values+vjp"] = e3nn_values_and_vjp
    return timed(functions, repeats, warmup)


def clear_caches(module) -> None:
    for obj in vars(module).values():
        if callable(getattr(obj, "cache_clear", None)):
            obj.cache_clear()


def triples(l_max: int) -> list[tuple[int, int, int]]:
    return [
        (l1, l2, l3)
        for l1 in range(l_max + 1)
        for l2 in range(l_max + 1)
        for l3 in range(abs(l1 - l2), min(l1 + l2, l_max) + 1)
    ]


def wigner_rows(repeats: int) -> dict:
    all_triples = triples(6)

    def cold(build, module):
        def run():
            clear_caches(module)
            for t in all_triples:
                build(*t)

        return run

    functions = {"ours": cold(wigner_3j, wigner_module)}
    if e3nn_o3 is not None:
        import e3nn.o3._wigner as e3nn_wigner

        functions["e3nn"] = cold(e3nn_o3.wigner_3j, e3nn_wigner)
    return timed(functions, repeats, 0), len(all_triples)


def main() -> None:
    print(
        f"threads={ARGS.threads}, clock={ARGS.clock}, numpy {np.__version__}, "
        f"sphericart {'yes' if sphericart else 'no'}, e3nn {'yes' if e3nn_o3 else 'no'}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| N | dtype | l_max | ours values | ours values+VJP | ours values+jac "
        "| sphericart values | sphericart values+jac | e3nn values | e3nn values+VJP "
        "| values / sphericart | values+VJP / e3nn | values+jac / sphericart |"
    )
    print("|" + "---|" * 13)
    for n in SIZES:
        repeats, warmup = (7, 2) if n <= 100_000 else (3, 1)
        if ARGS.quick:
            repeats = 3
        for dtype in DTYPES:
            for lmax in L_MAXES:
                r = harmonics_rows(n, dtype, lmax, repeats, warmup)
                get = r.get
                print(
                    f"| {n:.0e} | {dtype[5:]} | {lmax} | {cell(get('ours values'))} "
                    f"| {cell(get('ours values+vjp'))} | {cell(get('ours values+jac'))} "
                    f"| {cell(get('sphericart values'))} | {cell(get('sphericart values+jac'))} "
                    f"| {cell(get('e3nn values'))} | {cell(get('e3nn values+vjp'))} "
                    f"| {ratio(get('ours values'), get('sphericart values'))} "
                    f"| {ratio(get('ours values+vjp'), get('e3nn values+vjp'))} "
                    f"| {ratio(get('ours values+jac'), get('sphericart values+jac'))} |",
                    flush=True,
                )
    row, count = wigner_rows(1 if ARGS.quick else 3)
    print(f"\nWigner 3j, all {count} triples with l <= 6, cold caches (ms, median (best)):\n")
    print("| ours | e3nn | ours / e3nn |\n|---|---|---|")
    ours, e3nn = row["ours"], row.get("e3nn")
    print(f"| {cell(ours)} | {cell(e3nn)} | {ratio(ours, e3nn)} |")


if __name__ == "__main__":
    main()
