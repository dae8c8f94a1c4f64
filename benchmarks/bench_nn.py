"""Benchmark of Allegro's tensor product (allegro_ref.nn.EnvironmentTensorProduct, the product the
model runs) against the same map in e3nn, where e3nn is importable.

    python benchmarks/bench_nn.py --threads 1 --quick                     # allegro_ref alone
    PYTHONPATH=/work/main /work/main/.venv-compare/bin/python benchmarks/bench_nn.py --threads 1

Work: SH(l_max) ⊗ SH(l_max) -> SH(l_max) with SH(2) = 0e+1o+2e (11 paths) and SH(3) =
0e+1o+2e+3o (23 paths), U channels, one weight per (channel, path), E edges; "fwd" is the
output, "fwd+bwd" the output and the gradients with respect to both inputs and the weights.
As in Allegro, the second input is the environment of each edge's center atom: the edges are
sorted by center, K per center (``--edges-per-center``, default 40), so allegro_ref folds the
environment into the couplings once per atom; e3nn and the Contracter multiply per edge by
the environment gathered onto the edges (``env[centers]``).

e3nn's version of the same map is ``o3.TensorProduct`` on U copies of each irrep with one
"uuu" instruction per path (weights [U] per path) and ``path_normalization="none"``, so the
numbers are identical (checked on every case); its backward is autograd. e3nn runs on chunks of
at most 10^4 edges (unchunked it would need ~E·U·dim² floats at once: 13 GB at 10^5 edges,
U 64, l_max 3). The official allegro ``Contracter`` materializes the dense E·U·dim³ product
(3.7 GB at 10^4 edges, U 64, l_max 2, float64, more for autograd): with ``--contracter`` it is
timed at l_max 2 and 10^4 edges only, on chunks of 1000 edges.

Prints a markdown table of wall times in ms, "median (best)" over the repeats, and the ratios
allegro_ref / e3nn of the medians (< 1: allegro_ref is faster).
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
    parser.add_argument("--quick", action="store_true", help="10^4 edges only, fewer repeats")
    parser.add_argument("--contracter", action="store_true", help="also time allegro's Contracter")
    parser.add_argument("--edges", type=int, nargs="+", help="edge counts (default 1e4 1e5)")
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 3], help="default 2 3")
    parser.add_argument("--edges-per-center", type=int, default=40, help="K, default 40")
    return parser.parse_args()


ARGS = parse_args()
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = str(ARGS.threads)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # no install needed

import numpy as np  # noqa: E402

from allegro_ref.nn import EnvironmentTensorProduct, group_edges  # noqa: E402
from allegro_ref.o3 import Irreps  # noqa: E402

try:
    import torch
    from e3nn import o3 as e3nn_o3

    torch.set_num_threads(ARGS.threads)
except ImportError:
    torch = e3nn_o3 = None
try:
    from allegro.nn._strided import Contracter
except ImportError:
    Contracter = None

L_MAXES = tuple(ARGS.lmax)
CHANNELS = (32, 64)
EDGES = tuple(ARGS.edges or ((10_000,) if ARGS.quick else (10_000, 100_000)))
DTYPES = ("float32", "float64")
E3NN_CHUNK = 10_000
CONTRACTER_CHUNK = 1_000


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, best) wall time in ms of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def to_mul_ir(x: np.ndarray, irreps: Irreps) -> np.ndarray:
    """[E, U, dim] -> e3nn's layout [E, Σ U (2l+1)] of U copies of each irrep."""
    return np.concatenate([x[..., s].reshape(x.shape[0], -1) for s in irreps.slices()], axis=-1)


def e3nn_case(irreps: Irreps, tp: EnvironmentTensorProduct, x1, x2, theta, g):
    """Closures (fwd, fwd+bwd) running e3nn's "uuu" TensorProduct on x1, x2, g ``[E, U, dim]``
    (x2: the environments gathered onto the edges), and its output ``[E, U, dim]`` for the
    check."""
    n_channels = tp.num_channels
    wide = e3nn_o3.Irreps([(n_channels, (ir.l, ir.p)) for _, ir in irreps])
    instructions = [(i1, i2, i_out, "uuu", True) for i1, i2, i_out in tp.paths]
    dtype = getattr(torch, str(x1.dtype))
    torch.set_default_dtype(dtype)  # e3nn builds its 3j buffers in the default dtype
    e3nn_tp = e3nn_o3.TensorProduct(
        wide, wide, wide, instructions, path_normalization="none", internal_weights=False
    )
    t1, t2, tg = (torch.from_numpy(to_mul_ir(a, irreps)) for a in (x1, x2, g))
    weights = torch.from_numpy(np.ascontiguousarray(theta.T).reshape(-1)).to(dtype)
    chunks = [slice(s, s + E3NN_CHUNK) for s in range(0, x1.shape[0], E3NN_CHUNK)]

    def forward():
        with torch.no_grad():
            return [e3nn_tp(t1[s], t2[s], weights) for s in chunks]

    def forward_backward():
        w = weights.clone().requires_grad_(True)
        for s in chunks:
            a, b = t1[s].clone().requires_grad_(True), t2[s].clone().requires_grad_(True)
            e3nn_tp(a, b, w).backward(tg[s])

    out = torch.cat(forward()).numpy()
    out_ours_layout = np.concatenate(
        [
            out[:, s].reshape(out.shape[0], n_channels, ir.dim)
            for s, (_, ir) in zip(wide.slices(), wide, strict=True)
        ],
        axis=-1,
    )
    return forward, forward_backward, out_ours_layout


def contracter_case(irreps: Irreps, tp: EnvironmentTensorProduct, x1, x2, theta, g):
    e3nn_irreps = e3nn_o3.Irreps(str(irreps))
    torch.set_default_dtype(getattr(torch, str(x1.dtype)))
    module = Contracter(e3nn_irreps, e3nn_irreps, e3nn_irreps, mul=tp.num_channels)
    with torch.no_grad():
        module.weights.copy_(torch.from_numpy(theta))
    t1, t2, tg = (torch.from_numpy(a) for a in (x1, x2, g))
    chunks = [slice(s, s + CONTRACTER_CHUNK) for s in range(0, x1.shape[0], CONTRACTER_CHUNK)]
    index = torch.arange(CONTRACTER_CHUNK)

    def forward():
        with torch.no_grad():
            return [module(t1[s], t2[s], index[: t1[s].shape[0]]) for s in chunks]

    def forward_backward():
        for s in chunks:
            a, b = t1[s].clone().requires_grad_(True), t2[s].clone().requires_grad_(True)
            module(a, b, index[: a.shape[0]]).backward(tg[s])

    return forward, forward_backward


def fmt(t: tuple[float, float] | None) -> str:
    return "—" if t is None else f"{t[0]:.0f} ({t[1]:.0f})"


def case_row(rng, tp, irreps, n_edges: int, dtype: str) -> list[str]:
    """One row of the table: our tensor product against e3nn's (and the Contracter) on
    ``n_edges`` edges of ``dtype``."""
    n_channels = tp.num_channels
    repeats = 3 if ARGS.quick or n_edges > 10_000 else 5
    n_atoms = -(-n_edges // ARGS.edges_per_center)
    centers = np.minimum(np.arange(n_edges) // ARGS.edges_per_center, n_atoms - 1)
    groups = group_edges(centers)
    x, g = (rng.standard_normal((n_channels, n_edges, irreps.dim)).astype(dtype) for _ in range(2))
    env = rng.standard_normal((n_atoms, n_channels, irreps.dim)).astype(dtype)
    theta = tp.init_weights(rng).astype(dtype)
    ours_out = tp.forward(x, env, groups, theta)[0]
    ours_fwd = timed(lambda: tp.forward(x, env, groups, theta), repeats)
    ours_fb = timed(lambda: tp.backward(tp.forward(x, env, groups, theta)[1], g), repeats)
    row = [str(irreps.lmax), str(n_channels), f"{n_edges:.0e}", dtype]
    row += [fmt(ours_fwd), fmt(ours_fb)]
    # the per-edge operands of e3nn and the Contracter, edge-major [E, U, dim]
    x1, x2, g_edges = (
        np.ascontiguousarray(a) for a in (x.transpose(1, 0, 2), env[centers], g.transpose(1, 0, 2))
    )
    if torch is None:
        row += ["—"] * 4
    else:
        fwd, fb, out = e3nn_case(irreps, tp, x1, x2, theta, g_edges)
        expected = ours_out.transpose(1, 0, 2)
        error = np.abs(out - expected).max() / np.abs(out).max()
        tolerance = 1e-4 if dtype == "float32" else 1e-12
        assert error < tolerance, f"e3nn and allegro_ref differ by {error:.1e}"
        e3nn_fwd, e3nn_fb = timed(fwd, repeats), timed(fb, repeats)
        row += [fmt(e3nn_fwd), fmt(e3nn_fb)]
        row += [f"{ours_fwd[0] / e3nn_fwd[0]:.2f}", f"{ours_fb[0] / e3nn_fb[0]:.2f}"]
    if ARGS.contracter:
        if Contracter is None or n_edges > 10_000 or irreps.lmax > 2:
            row += ["—", "—"]
        else:
            fwd, fb = contracter_case(irreps, tp, x1, x2, theta, g_edges)
            row += [fmt(timed(fwd, 2)), fmt(timed(fb, 2))]
    return row


def main() -> None:
    rng = np.random.default_rng(0)
    header = "| l_max | U | E | dtype | ours fwd | ours fwd+bwd | e3nn fwd | e3nn fwd+bwd |"
    header += " ratio fwd | ratio fwd+bwd |"
    if ARGS.contracter:
        header += " Contracter fwd | Contracter fwd+bwd |"
    k = ARGS.edges_per_center
    print(f"threads {ARGS.threads}; K = {k} edges per center; ms, median (best)\n")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for l_max in L_MAXES:
        irreps = Irreps.spherical_harmonics(l_max)
        for n_channels in CHANNELS:
            tp = EnvironmentTensorProduct(irreps, irreps, irreps, n_channels)
            for n_edges in EDGES:
                for dtype in DTYPES:
                    row = case_row(rng, tp, irreps, n_edges, dtype)
                    print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
