"""Generate tests/fixtures/e3nn_wigner.npz: e3nn 0.6.0's Wigner 3j symbols and D matrices.

Run with the comparison environment (torch, e3nn 0.6.0), never from the library's own tests:

    /work/main/.venv-compare/bin/python scripts/make_e3nn_fixtures_wigner.py

Stored (float64):
- ``w3j/<l1>_<l2>_<l3>``: ``e3nn.o3.wigner_3j(l1, l2, l3)`` for every triple with all l <= 4
  satisfying the triangle rule.
- ``rotations``: [n, 3, 3] elements of O(3): Haar-random proper rotations, their negatives
  (improper), a rotation about y (gimbal lock of Y-X-Y Euler angles, b = 0) and one with b = pi.
- ``D/<l><p>``: ``e3nn.o3.Irrep(l, p).D_from_matrix(rotations)`` [n, 2l+1, 2l+1], l <= 4,
  p in {e, o}.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from e3nn import o3

torch.set_default_dtype(torch.float64)

L_MAX = 4


def rotations() -> torch.Tensor:
    torch.manual_seed(0)
    proper = o3.rand_matrix(3)
    gimbal = torch.stack(
        [
            o3.angles_to_matrix(torch.tensor(0.7), torch.tensor(0.0), torch.tensor(-1.9)),
            o3.angles_to_matrix(torch.tensor(0.4), torch.tensor(math.pi), torch.tensor(2.3)),
        ]
    )
    return torch.cat([proper, -proper[:2], gimbal])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "e3nn_wigner.npz"
    parser.add_argument("--out", type=Path, default=default)
    out_path = parser.parse_args().out

    store: dict[str, np.ndarray] = {}
    for l1 in range(L_MAX + 1):
        for l2 in range(L_MAX + 1):
            for l3 in range(abs(l1 - l2), min(l1 + l2, L_MAX) + 1):
                store[f"w3j/{l1}_{l2}_{l3}"] = o3.wigner_3j(l1, l2, l3).numpy()
    matrices = rotations()
    store["rotations"] = matrices.numpy()
    for degree in range(L_MAX + 1):
        for p, letter in ((1, "e"), (-1, "o")):
            d = o3.Irrep(degree, p).D_from_matrix(matrices)
            store[f"D/{degree}{letter}"] = d.numpy()
    np.savez_compressed(out_path, **store)
    print(f"wrote {len(store)} arrays to {out_path} ({out_path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
