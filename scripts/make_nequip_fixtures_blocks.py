"""Evaluate the official scalar building blocks (nequip 0.19.1) on a few inputs and store values
and torch-autograd gradients as a test fixture for allegro_ref.nn.radial and allegro_ref.nn.mlp.

Needs the optional comparison stack (torch CPU, nequip 0.19.1):

    /work/main/.venv-compare/bin/python scripts/make_nequip_fixtures_blocks.py
    # writes tests/fixtures/nequip_blocks.npz

Blocks and what is stored (all float64; G denotes a fixed random cotangent):

- ``BesselEdgeLengthEncoding`` with ``PolynomialCutoff(p)`` and trainable frequencies, on
  normalised lengths x [E] (including 0, values near and beyond 1): the edge embedding b(x)·u(x)
  [E, B], the cutoff u(x) [E], and the gradients of ⟨embedding, G⟩ + ⟨u, g⟩ with respect to x and
  to the frequencies. Keys ``radial.<case>.*``.
- ``ScalarMLPFunction`` (a 2-layer SiLU MLP, a 3-layer SiLU MLP, a 1-layer linear and a 2-layer
  linear one that nequip collapses into a single matrix product): raw (in, out) weights read from
  the state_dict, input x, output y and the gradients of ⟨y, G⟩ with respect to x and to every
  weight. Keys ``mlp.<case>.*``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nequip.data import AtomicDataDict
from nequip.nn.embedding import BesselEdgeLengthEncoding, PolynomialCutoff
from nequip.nn.mlp import ScalarMLPFunction

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nequip_blocks.npz"

# name -> (num_bessels, polynomial_cutoff_p, random frequencies?)
RADIAL_CASES = {"default": (8, 6.0, False), "p3.5_random_freq": (5, 3.5, True)}
# name -> ScalarMLPFunction keyword arguments
MLP_CASES = {
    "silu_2layer": dict(input_dim=5, output_dim=3, hidden_layers_depth=1, hidden_layers_width=7),
    "silu_3layer": dict(input_dim=4, output_dim=2, hidden_layers_depth=2, hidden_layers_width=6),
    "linear": dict(input_dim=6, output_dim=4),
    "linear_2layer": dict(
        input_dim=5, output_dim=3, hidden_layers_depth=1, hidden_layers_width=4, nonlinearity=None
    ),
}


def radial_case(rng: np.random.Generator, num_bessels: int, p: float, random_freq: bool) -> dict:
    x_np = np.concatenate([[0.0, 1e-4, 0.5, 0.999, 1.0, 1.0 + 1e-9, 1.3], rng.uniform(0, 1.1, 9)])
    encoder = BesselEdgeLengthEncoding(
        cutoff=PolynomialCutoff(p), num_bessels=num_bessels, trainable=True
    )
    if random_freq:
        with torch.no_grad():
            encoder.bessel_weights.copy_(torch.from_numpy(rng.uniform(0.5, 6.0, (1, num_bessels))))
    x = torch.tensor(x_np[:, None], requires_grad=True)
    data = encoder({AtomicDataDict.NORM_LENGTH_KEY: x})
    embedding = data[AtomicDataDict.EDGE_EMBEDDING_KEY]
    cutoff = data[AtomicDataDict.EDGE_CUTOFF_KEY]
    grad_embedding = rng.standard_normal(embedding.shape)
    grad_cutoff = rng.standard_normal(cutoff.shape)
    loss = (embedding * torch.from_numpy(grad_embedding)).sum() + (
        cutoff * torch.from_numpy(grad_cutoff)
    ).sum()
    grad_x, grad_freq = torch.autograd.grad(loss, [x, encoder.bessel_weights])
    return {
        "p": np.array(p),
        "x": x_np,
        "frequencies": encoder.bessel_weights.detach().numpy()[0],
        "embedding": embedding.detach().numpy(),
        "cutoff": cutoff.detach().numpy()[:, 0],
        "grad_embedding": grad_embedding,
        "grad_cutoff": grad_cutoff[:, 0],
        "grad_x": grad_x.numpy()[:, 0],
        "grad_frequencies": grad_freq.numpy()[0],
    }


def mlp_case(rng: np.random.Generator, kwargs: dict) -> dict:
    mlp = ScalarMLPFunction(**kwargs)
    # Raw (in, out) weights in layer order, as registered: "mlp.<k>.weight" (Sequential) or
    # "mlp.weights.<k>" (the collapsed deep-linear form); activations hold no parameters.
    names, params = zip(*mlp.named_parameters(), strict=True)
    state = mlp.state_dict()
    assert sorted(state) == sorted(names), (sorted(state), names)
    weights = [state[n] for n in names]
    x = torch.from_numpy(rng.standard_normal((9, kwargs["input_dim"]))).requires_grad_(True)
    y = mlp(x)
    grad_y = rng.standard_normal(y.shape)
    grads = torch.autograd.grad((y * torch.from_numpy(grad_y)).sum(), [x, *params])
    nonlinearity = kwargs.get("nonlinearity", "silu")
    out = {
        "nonlinearity": np.array("none" if nonlinearity is None else nonlinearity),
        "x": x.detach().numpy(),
        "y": y.detach().numpy(),
        "grad_y": grad_y,
        "grad_x": grads[0].numpy(),
    }
    for k, (name, w, g) in enumerate(zip(names, weights, grads[1:], strict=True)):
        assert w.shape == g.shape, name
        out[f"weight{k}"] = w.numpy()
        out[f"grad_weight{k}"] = g.numpy()
    return out


def main() -> None:
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    arrays = {}
    for name, args in RADIAL_CASES.items():
        for key, value in radial_case(rng, *args).items():
            arrays[f"radial.{name}.{key}"] = value
    for name, kwargs in MLP_CASES.items():
        for key, value in mlp_case(rng, kwargs).items():
            arrays[f"mlp.{name}.{key}"] = value
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(arrays)} arrays)")


if __name__ == "__main__":
    main()
