"""Fixture for the training-gradient test of the 2022 family: the loss of official
nequip-allegro 0.3.0 models and its gradient with respect to every parameter by PyTorch autograd
(double backward through the forces and stress), on labelled structures.

Needs the official 2022 stack (torch CPU, nequip 0.6.2, nequip-allegro 0.3.0, ase), installed as
the docstring of scripts/make_nequip_2022_fixtures.py says; run from the repository root:

    /path/to/venv-nequip06/bin/python scripts/make_nequip_2022_train_fixture.py

Writes ``tests/fixtures/nequip2022_train_gradients.npz``. For each model (``MODELS``: options
over the ``BASE`` of make_nequip_2022_fixtures.py), under the prefix ``<model>/``: the YAML
config (JSON, ``meta/json``), the state_dict (``state/``), and, on the periodic CuNi cell and the
cluster of that script (``structure0/``, ``structure1/``: positions, cell, pbc, species and
random labels near the model's own predictions), the loss
L = c_E·mean_s((E_s − E_s^ref)/n_s)² + c_F·mean(ΔF²) + c_σ·mean over periodic s of (Δσ²) with
(c_E, c_F, c_σ) = (1, 2, 3)/6, its terms (``terms/``) and ∂L/∂θ of every parameter (``grad/``).
The models run in training mode, so that nequip differentiates through the forces and stress,
with the global rescaling of evaluation mode (``model_fixture``); their outputs are those of
evaluation mode (these models have no dropout or batch statistics).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_nequip_2022_fixtures import _jsonable, build, structures  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
FIXTURE = FIXTURE / "nequip2022_train_gradients.npz"
WEIGHTS = (1.0, 2.0, 3.0)
#: model name -> options over BASE: the paper's model, and one with learnable ResNet
#: coefficients, the self edge included and a nonlinear env-embed MLP
MODELS = {
    "A": {},
    "B": {
        "l_max": 1,
        "num_layers": 3,
        "latent_resnet_coefficients": [1.0, 2.0, 3.0, 4.0],
        "latent_resnet_coefficients_learnable": True,
        "self_edge_tensor_product": True,
        "env_embed_mlp_latent_dimensions": [8],
        "env_embed_mlp_nonlinearity": "silu",
    },
}


def predictions(model, atoms, r_max: float, symbols: list[str]) -> dict:
    """Total energy, forces and (periodic) stress of one structure, as torch tensors in the
    autograd graph."""
    from nequip.data import AtomicData, AtomicDataDict
    from nequip.data.transforms import TypeMapper

    data = TypeMapper(chemical_symbols=symbols)(AtomicData.from_ase(atoms, r_max=r_max))
    out = model(AtomicData.to_AtomicDataDict(data))
    result = {
        "energy": out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(()),
        "forces": out[AtomicDataDict.FORCE_KEY],
    }
    if atoms.pbc.all():
        result["stress"] = out[AtomicDataDict.STRESS_KEY].reshape(3, 3)
    return result


def model_fixture(name: str, options: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    import torch

    model, config = build(options)
    # Training mode everywhere (the forces and stress are computed with create_graph, so they
    # can be differentiated) except nequip's global RescaleOutput, which scales by
    # global_rescale_scale only in evaluation mode (nequip-train scales the labels instead):
    # the outputs are then the model's energies, forces and stress.
    model.train()
    rescales = [m for m in model.modules() if type(m).__name__ == "RescaleOutput"]
    assert len(rescales) == 1, rescales
    rescales[0].training = False
    symbols = list(config["chemical_symbols"])
    arrays = {f"state/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()}
    out, labels = [], []
    for i, atoms in enumerate(structures().values()):
        p = predictions(model, atoms, float(config["r_max"]), symbols)
        label = {
            "energy": p["energy"].item() + rng.normal(0.0, 0.3),
            "forces": p["forces"].detach().numpy() + rng.normal(0.0, 0.2, (len(atoms), 3)),
        }
        if "stress" in p:
            noise = rng.normal(0.0, 0.02, (3, 3))
            label["stress"] = p["stress"].detach().numpy() + 0.5 * (noise + noise.T)
        out.append(p)
        labels.append(label)
        structure = {
            "positions": atoms.get_positions(),
            "cell": np.asarray(atoms.cell.array),
            "pbc": np.asarray(atoms.pbc),
            "species": np.asarray(atoms.get_chemical_symbols()),
            **label,
        }
        arrays.update({f"structure{i}/{k}": np.asarray(v) for k, v in structure.items()})
    n_atoms = torch.tensor([p["forces"].shape[0] for p in out], dtype=torch.float64)
    periodic = [i for i, p in enumerate(out) if "stress" in p]
    energy_error = torch.stack([p["energy"] for p in out]) - torch.tensor(
        [label["energy"] for label in labels]
    )
    force_error = torch.cat([p["forces"] for p in out]) - torch.tensor(
        np.concatenate([label["forces"] for label in labels])
    )
    stress_error = torch.stack([out[i]["stress"] for i in periodic]) - torch.tensor(
        np.stack([labels[i]["stress"] for i in periodic])
    )
    terms = {
        "energy_mse": torch.mean((energy_error / n_atoms) ** 2),
        "forces_mse": torch.mean(force_error**2),
        "stress_mse": torch.mean(stress_error**2),
    }
    total = sum(WEIGHTS)
    loss = sum(w / total * t for w, t in zip(WEIGHTS, terms.values(), strict=True))
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    for (key, p), g in zip(params.items(), grads, strict=True):
        arrays[f"grad/{key}"] = np.zeros(p.shape) if g is None else g.detach().numpy().copy()
    arrays.update({f"terms/{k}": np.asarray(v.item()) for k, v in terms.items()})
    arrays["loss"] = np.asarray(loss.item())
    arrays["meta/json"] = np.asarray(json.dumps({"config": _jsonable(config)}))
    print(f"{name}: loss {loss.item():.6f}, {len(params)} parameter arrays")
    return {f"{name}/{k}": v for k, v in arrays.items()}


def main() -> None:
    rng = np.random.default_rng(11)
    arrays = {"weights": np.asarray(WEIGHTS)}
    for name, options in MODELS.items():
        arrays.update(model_fixture(name, options, rng))
    np.savez_compressed(FIXTURE, **arrays)
    print(f"-> {FIXTURE}")


if __name__ == "__main__":
    main()
