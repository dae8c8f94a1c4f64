"""The cost model of benchmarks/bench_potential.py (``--cost-model``): per stage of allegro_ref,
the floating-point operations and the bytes an ideal implementation must move per edge, against
this machine's matrix-multiply rate and memory bandwidth.

    python benchmarks/cost_model.py --peaks 1    # the machine's peaks, one JSON line

The peaks are measured in a process of their own (``peaks_in_subprocess``), with ``threads``
BLAS threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from profile_stages import STAGES


def cost_per_edge(config, n_edges: int, n_atoms: int, itemsize: int) -> dict:
    """Per stage: (flops, bytes) per edge of forward + backward (energy and forces), counting
    the multiply-adds of matrix products (2 flops) and elementwise operations, and the bytes an
    implementation that streams each stage's inputs and outputs once must move."""
    U, D, B = config.num_tensor_features, config.sh_irreps.dim, config.num_bessels
    k = n_edges / max(n_atoms, 1)
    shapes = config.parameter_shapes()

    def mlp(prefix: str) -> tuple[float, float]:
        weights = [shapes[f"{prefix}.{i}"] for i in range(10) if f"{prefix}.{i}" in shapes]
        macs = sum(a * b for a, b in weights)
        hidden = sum(b for _, b in weights[:-1])
        widths = weights[0][0] + sum(b for _, b in weights)
        # forward 2·macs, backward 2·macs (input gradients only: forces need no weight
        # gradient); SiLU and its slope ~20 flops forward, 1 backward
        flops = 4 * macs + 21 * hidden
        return flops, itemsize * 3 * widths

    cost = {stage: [0.0, 0.0] for stage in STAGES}
    for prefix, stage in (
        ("basis_linear", "two-body embedding"),
        ("scalar_embed_mlp", "two-body embedding"),
        ("tensor_embed", "initial tracks"),
        ("first_projection", "initial tracks"),
        ("readout", "readout"),
        *((f"latent.{i}", "density, latent MLPs") for i in range(config.num_layers)),
    ):
        f, b = mlp(prefix)
        cost[stage][0] += f
        cost[stage][1] += b
    # geometry: Bessel (B sines), envelope, harmonics and their derivatives, in float64
    cost["geometry"] = [30.0 * B + 20.0 * D, 8 * (3 + 2 * B + 2 * D) * 2]
    # initial tracks: also the irrep weights V⁰ = w ⊙ Y and their two-way backward
    cost["initial tracks"][0] += 3.0 * U * D
    cost["initial tracks"][1] += itemsize * 6 * U * D
    # environment density per layer: Σ_e w ⊙ Y onto the center, and ∂/∂w, ∂/∂Y
    n_l, layers = config.num_sh_irreps, config.num_layers
    cost["density, latent MLPs"][0] += layers * 3 * 2.0 * U * D
    cost["density, latent MLPs"][1] += layers * itemsize * (3 * U * n_l + 3 * D)
    flops_tp = bytes_tp = 0.0
    for irreps_in, irreps_out in config.layer_irreps():
        d1, d2, d_out = irreps_in.dim, config.sh_irreps.dim, irreps_out.dim
        flops_tp += 3 * 2 * U * d1 * d_out + 3 * 2 * U * d1 * d2 * d_out / k  # edges + atoms
        bytes_tp += itemsize * U * (3 * d1 + 3 * d_out)  # x, out; g, x, grad_x (+ layouts)
    cost["tensor products"] = [flops_tp, bytes_tp]
    cost["forces, stress"] = [3 * 3 + 9 * 2, 8 * (3 + 3 + 9) * 2]
    return {stage: tuple(v) for stage, v in cost.items()}


def measure_peaks(threads: int) -> dict:
    """(in a worker with ``threads`` BLAS threads) Matrix-multiply rate (GFLOP/s) of a 2048²
    product in float32 and float64, and memory bandwidth (GB/s, read + write) of copying a
    512 MB array in ``threads`` threads, best of 5."""
    from concurrent.futures import ThreadPoolExecutor

    peaks = {}
    for dtype in ("float32", "float64"):
        a = np.random.default_rng(0).random((2048, 2048)).astype(dtype)
        best = min(_time(lambda a=a: a @ a) for _ in range(5))
        peaks[f"gemm_{dtype}_gflops"] = 2 * 2048**3 / best / 1e9
    source = np.ones(2**26)  # 512 MB
    target = np.empty_like(source)
    halves = np.array_split(np.arange(source.size), threads)
    bounds = [(int(h[0]), int(h[-1]) + 1) for h in halves]

    def copy_part(bound):
        target[bound[0] : bound[1]] = source[bound[0] : bound[1]]

    with ThreadPoolExecutor(threads) as pool:
        best = min(_time(lambda: list(pool.map(copy_part, bounds))) for _ in range(5))
    peaks["bandwidth_gbs"] = 2 * source.nbytes / best / 1e9
    return peaks


def _time(function) -> float:
    watch = time.perf_counter()
    function()
    return time.perf_counter() - watch


def peaks_in_subprocess(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--peaks", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_cost_model(row: dict, peaks: dict, config) -> None:
    stages = row["stages"]
    itemsize = 4 if row["dtype"] == "float32" else 8
    edges = row["edges"]
    cost = cost_per_edge(config, edges, row["atoms"], itemsize)
    gemm = peaks[f"gemm_{row['dtype']}_gflops"]
    print(
        f"\ncost model: {row['system']} {row['atoms']} atoms, {edges} edges, {row['dtype']}, "
        f"1 thread; machine: matmul {gemm:.1f} GFLOP/s, copy {peaks['bandwidth_gbs']:.1f} GB/s"
    )
    print("| stage | ms | % | flop/edge | byte/edge | GFLOP/s | % matmul | GB/s | % bandwidth |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stage in STAGES:
        seconds = stages[stage]
        flops, nbytes = cost.get(stage, (0.0, 0.0))
        line = f"| {stage} | {1e3 * seconds:.1f} | {100 * seconds / stages['total']:.0f} |"
        if flops and seconds > 0:
            rate, traffic = flops * edges / seconds / 1e9, nbytes * edges / seconds / 1e9
            line += f" {flops:.3g} | {nbytes:.3g} | {rate:.2f} | {100 * rate / gemm:.0f} |"
            line += f" {traffic:.2f} | {100 * traffic / peaks['bandwidth_gbs']:.0f} |"
        else:
            line += " | | | | | |"
        print(line)
    print(f"| total | {1e3 * stages['total']:.1f} | 100 | | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--peaks",
        type=int,
        metavar="THREADS",
        required=True,
        help="print the matrix-multiply rates and the bandwidth (JSON)",
    )
    args = parser.parse_args()
    print(json.dumps(measure_peaks(args.peaks)))


if __name__ == "__main__":
    main()
