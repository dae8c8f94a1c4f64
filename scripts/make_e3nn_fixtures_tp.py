"""Generate tests/fixtures/tp_fixtures.npz: reference values of the official tensor products.

Run with the comparison environment (torch, e3nn 0.6.0, nequip-allegro 0.8.3), never from the
library's own tests:

    /work/main/.venv-compare/bin/python scripts/make_e3nn_fixtures_tp.py

Every case stores float64 inputs, weights, the output, a random cotangent ``grad_out`` and the
autograd VJPs (``grad_x1``, ``grad_x2``, ``grad_weights``), under keys ``<case>/<name>``; the
irreps and options of a case are stored as 0-d string / int arrays next to them.

(a) ``contracter_*``: Allegro's channel-wise ``Contracter`` (allegro.nn._strided), x2 per edge
    (``idxs = arange(E)``), with its own random weights, and its ``w3j`` buffer (√(2l+1)·3j,
    stacked over paths). When a Contracter has a single path it squeezes the path axis of its
    weights; the fixture always stores them as ``[U, n_paths]`` (or ``[n_paths]``).
(b) ``e3nn_tp_*``: ``e3nn.o3.TensorProduct`` with "uvw", "uvu" and "uuu" instructions, several
    normalizations, shared and per-sample weights; ``e3nn_linear_*``: ``e3nn.o3.Linear``.

Consumers: (a) tests/nn/test_tensor_product.py (``allegro_ref.nn.EnvironmentTensorProduct``,
every edge its own center atom, so the environment of edge e is its x2); (b)
tests/nn/test_e3nn_compat.py (``allegro_ref.nn.e3nn_compat.TensorProduct`` and
``EquivariantLinear``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from allegro.nn._strided import Contracter
from e3nn import o3

torch.set_default_dtype(torch.float64)

N_EDGES = 7
N_CHANNELS = 4


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _put(store: dict, case: str, **arrays) -> None:
    for name, value in arrays.items():
        store[f"{case}/{name}"] = np.asarray(value)


def contracter_case(store: dict, case: str, irreps_in1, irreps_in2, irreps_out, coupling: bool):
    irreps = [o3.Irreps(s) for s in (irreps_in1, irreps_in2, irreps_out)]
    tp = Contracter(*irreps, mul=N_CHANNELS, path_channel_coupling=coupling)
    dim1, dim2 = irreps[0].dim, irreps[1].dim
    x1 = torch.randn(N_EDGES, N_CHANNELS, dim1, requires_grad=True)
    x2 = torch.randn(N_EDGES, N_CHANNELS, dim2, requires_grad=True)
    out = tp(x1, x2, torch.arange(N_EDGES))
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    weight_shape = ((N_CHANNELS,) if coupling else ()) + (tp.num_paths,)
    w3j = tp.w3j if tp.num_paths > 1 else tp.w3j.unsqueeze(0)
    _put(
        store,
        case,
        irreps_in1=irreps_in1,
        irreps_in2=irreps_in2,
        irreps_out=irreps_out,
        path_channel_coupling=int(coupling),
        w3j_is_ij_diagonal=int(tp.w3j_is_ij_diagonal),
        x1=_np(x1),
        x2=_np(x2),
        weights=_np(tp.weights).reshape(weight_shape),
        out=_np(out),
        grad_out=_np(grad_out),
        grad_x1=_np(x1.grad),
        grad_x2=_np(x2.grad),
        grad_weights=_np(tp.weights.grad).reshape(weight_shape),
        w3j=_np(w3j),
    )


def e3nn_tp_case(
    store: dict,
    case: str,
    irreps_in1,
    irreps_in2,
    irreps_out,
    mode: str,
    irrep_normalization: str = "component",
    path_normalization: str = "element",
    shared_weights: bool = True,
    untrained: tuple = (),
):
    irreps_in1, irreps_in2, irreps_out = (
        o3.Irreps(s) for s in (irreps_in1, irreps_in2, irreps_out)
    )
    # all allowed paths whose multiplicities fit the mode ("uvu": mul1 = mul_out; "uuu": all equal)
    instructions = [
        (i1, i2, i_out, mode, (i1, i2, i_out) not in untrained)
        for i1, (mul1, ir1) in enumerate(irreps_in1)
        for i2, (mul2, ir2) in enumerate(irreps_in2)
        for i_out, (mul_out, ir_out) in enumerate(irreps_out)
        if ir_out in ir1 * ir2
        and (mode == "uvw" or mul1 == mul_out)
        and (mode != "uuu" or mul1 == mul2)
    ]
    tp = o3.TensorProduct(
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions,
        irrep_normalization=irrep_normalization,
        path_normalization=path_normalization,
        internal_weights=False,
        shared_weights=shared_weights,
    )
    batch = (N_EDGES,)
    x1 = torch.randn(*batch, irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(*batch, irreps_in2.dim, requires_grad=True)
    w_shape = (tp.weight_numel,) if shared_weights else (*batch, tp.weight_numel)
    weights = torch.randn(*w_shape, requires_grad=True)
    out = tp(x1, x2, weights)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    _put(
        store,
        case,
        irreps_in1=str(irreps_in1),
        irreps_in2=str(irreps_in2),
        irreps_out=str(irreps_out),
        instructions=np.array([ins[:3] + (int(ins[4]),) for ins in instructions], dtype=np.int64),
        mode=mode,
        irrep_normalization=irrep_normalization,
        path_normalization=path_normalization,
        shared_weights=int(shared_weights),
        x1=_np(x1),
        x2=_np(x2),
        weights=_np(weights),
        out=_np(out),
        grad_out=_np(grad_out),
        grad_x1=_np(x1.grad),
        grad_x2=_np(x2.grad),
        grad_weights=_np(weights.grad),
    )


def e3nn_linear_case(store: dict, case: str, irreps_in, irreps_out, path_normalization="element"):
    lin = o3.Linear(irreps_in, irreps_out, path_normalization=path_normalization)
    x = torch.randn(N_EDGES, o3.Irreps(irreps_in).dim, requires_grad=True)
    out = lin(x)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    _put(
        store,
        case,
        irreps_in=irreps_in,
        irreps_out=irreps_out,
        path_normalization=path_normalization,
        x=_np(x),
        weights=_np(lin.weight),
        out=_np(out),
        grad_out=_np(grad_out),
        grad_x=_np(x.grad),
        grad_weights=_np(lin.weight.grad),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tp_fixtures.npz"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()
    torch.manual_seed(20261124)
    store: dict[str, np.ndarray] = {}

    sh2, sh3 = "0e+1o+2e", "0e+1o+2e+3o"
    contracter_case(store, "contracter_lmax2", sh2, sh2, sh2, coupling=True)
    contracter_case(store, "contracter_lmax2_shared", sh2, sh2, sh2, coupling=False)
    contracter_case(store, "contracter_scalar_out", sh2, sh2, "0e", coupling=True)
    contracter_case(store, "contracter_parity", sh2, sh2, "0e+1e+1o+2e+2o", coupling=True)
    contracter_case(store, "contracter_parity_in", "0e+1e+1o+2e+2o", sh2, sh2, coupling=True)
    contracter_case(store, "contracter_lmax3", sh3, sh3, sh3, coupling=True)
    contracter_case(store, "contracter_one_path", "0e+1o", "1o", "0e", coupling=True)

    e3nn_tp_case(
        store, "e3nn_tp_uvw", "2x0e+3x1o+1x2e", "1x0e+2x1o+1x2e", "3x0e+2x1o+2x1e+1x2e", "uvw"
    )
    e3nn_tp_case(
        store, "e3nn_tp_uvw_path_norm", "2x0e+3x1o+1x2e", "1x0e+2x1o+1x2e", "3x0e+2x1o+1x2e",
        "uvw", irrep_normalization="norm", path_normalization="path",
    )  # fmt: skip
    e3nn_tp_case(store, "e3nn_tp_uvu", "3x0e+2x1o+2x2e", "0e+1o+2e", "3x0e+2x1o+2x2e", "uvu")
    e3nn_tp_case(
        store, "e3nn_tp_uvu_batched", "3x0e+2x1o+2x2e", "2x0e+1o", "3x0e+2x1o+2x1e+2x2e",
        "uvu", path_normalization="none", shared_weights=False,
    )  # fmt: skip
    e3nn_tp_case(
        store, "e3nn_tp_uuu", "3x0e+3x1o+3x2e", "3x0e+3x1o+3x2e", "3x0e+3x1o+3x2e",
        "uuu", untrained=((1, 1, 1), (0, 0, 0)),
    )  # fmt: skip

    e3nn_linear_case(store, "e3nn_linear", "3x0e+2x1o+1x2e+2x1e", "2x0e+3x1o+1x2e")
    e3nn_linear_case(store, "e3nn_linear_repeated", "2x0e+1x1o+3x0e", "4x0e+1x1o+2x0e")
    e3nn_linear_case(
        store, "e3nn_linear_path", "2x0e+1x1o+3x0e", "4x0e+1x1o", path_normalization="path"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **store)
    print(f"wrote {len(store)} arrays to {args.out} ({args.out.stat().st_size / 1024:.1f} kB)")


if __name__ == "__main__":
    main()
