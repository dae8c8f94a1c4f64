"""Generate tests/fixtures/e3nn_spherical_harmonics.npz: e3nn 0.6.0's real spherical harmonics
and their autograd vector-Jacobian products, for l_max = 0..8.

Run with the comparison environment (torch, e3nn 0.6.0), never from the library's own tests:

    /work/main/.venv-compare/bin/python scripts/make_e3nn_fixtures_sh.py

Stored (float64 unless stated; D = 81 = (8+1)^2, the l_max = 8 harmonics; a smaller l_max
is the first (l_max+1)^2 columns):
- ``vectors`` [n, 3]: the zero vector, the six axis directions (y is e3nn's polar axis), vectors
  within 1e-8..1e-17 of the poles, norms 1e-11, 1e-6, 1e100 and 1e150, and random Gaussian
  vectors scaled by log-uniform factors.
- ``cotangent`` [n, D] int8: the cotangent of the VJPs is ``cotangent / 4``.
- ``component`` [n, D]: ``spherical_harmonics(range(9), vectors, True, "component")``.
- ``vjp_component`` [9, n, 3]: for each l_max, d/dv of sum(Y_{<=l_max} * cotangent / 4).
- ``norm``, ``integral`` [k, D] and ``vjp_norm``, ``vjp_integral`` [9, k, 3]: the same for
  the first k vectors.
- ``raw_vectors`` [k, 3] (norms 0..3, incl. zero and axes), ``raw`` [k, D] and
  ``vjp_raw`` [9, k, 3]: ``normalize=False`` ("component").

e3nn normalizes with v / max(|v|, 1e-12): below that norm, and for the gradient at the zero
vector (1e12 times the l = 1 term), it is not a reference; allegro_ref's choice there is
documented in docs/conventions.md and tested separately.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from e3nn import o3

torch.set_default_dtype(torch.float64)

L_MAX = 8
N_MAIN = 128
N_SUBSET = 24


def main_vectors(rng: np.random.Generator) -> np.ndarray:
    axes = np.concatenate([np.eye(3), -np.eye(3)])
    near_poles = np.array(
        [[1e-8, 1.0, -2e-8], [3e-12, -1.0, 1e-12], [1e-17, 2.5, 0.0], [0.0, -0.3, 4e-9]]
    )
    directions = rng.standard_normal((4, 3))
    scaled = directions * np.array([1e-11, 1e-6, 1e100, 1e150])[:, None]
    n_random = N_MAIN - 1 - len(axes) - len(near_poles) - len(scaled)
    random = rng.standard_normal((n_random, 3)) * 10.0 ** rng.uniform(-3, 3, (n_random, 1))
    return np.concatenate([np.zeros((1, 3)), axes, near_poles, scaled, random])


def raw_vectors(rng: np.random.Generator) -> np.ndarray:
    axes = np.concatenate([np.eye(3), -np.eye(3)]) * 1.7
    n_random = N_SUBSET - 1 - len(axes)
    random = rng.standard_normal((n_random, 3)) * rng.uniform(0.1, 1.7, (n_random, 1))
    return np.concatenate([np.zeros((1, 3)), axes, random])


def harmonics_and_vjps(vectors, cotangent, normalize, normalization):
    x = torch.tensor(vectors, requires_grad=True)
    values = o3.spherical_harmonics(list(range(L_MAX + 1)), x, normalize, normalization)
    vjps = []
    for lmax in range(L_MAX + 1):
        dim = (lmax + 1) ** 2
        (grad,) = torch.autograd.grad(
            (values[:, :dim] * torch.tensor(cotangent[:, :dim])).sum(), x, retain_graph=True
        )
        vjps.append(grad.numpy())
    return values.detach().numpy(), np.stack(vjps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "tests/fixtures/e3nn_spherical_harmonics.npz"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()

    rng = np.random.default_rng(20261124)
    vectors = main_vectors(rng)
    raw = raw_vectors(rng)
    cotangent = rng.integers(-8, 9, (N_MAIN, (L_MAX + 1) ** 2)).astype(np.int8)
    g = cotangent / 4.0

    data = {"vectors": vectors, "cotangent": cotangent, "raw_vectors": raw}
    data["component"], data["vjp_component"] = harmonics_and_vjps(vectors, g, True, "component")
    for normalization in ("norm", "integral"):
        values, vjps = harmonics_and_vjps(vectors[:N_SUBSET], g[:N_SUBSET], True, normalization)
        data[normalization], data[f"vjp_{normalization}"] = values, vjps
    data["raw"], data["vjp_raw"] = harmonics_and_vjps(raw, g[:N_SUBSET], False, "component")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
