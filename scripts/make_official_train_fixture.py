"""Fixture for the training-gradient test: the loss of an official nequip-allegro model and its
gradient with respect to every parameter by PyTorch autograd (double backward through the
forces and stress), on a batch of labelled structures.

Needs the official stack (torch CPU, nequip 0.19.1, nequip-allegro 0.8.3, ase):

    python scripts/make_official_train_fixture.py

Writes ``tests/fixtures/nequip_train_gradients.npz``: the builder's keyword arguments (JSON), the
official state_dict, three structures (two periodic cells smaller than 2 r_max, so atoms see
their own images, and a molecule without a cell) with random labels, the loss
L = c_E·mean_s((E_s − E_s^ref)/n_s)² + c_F·mean(ΔF²) + c_σ·mean over periodic s of (Δσ²) with
(c_E, c_F, c_σ) = (1, 2, 3)/6, its three terms, and ∂L/∂θ for every trainable parameter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nequip_train_gradients.npz"
WEIGHTS = (1.0, 2.0, 3.0)
BUILDER = dict(
    seed=3,
    model_dtype="float64",
    type_names=["O", "Cu"],
    r_max=3.0,
    radial_chemical_embed={
        "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
        "num_bessels": 8,
        "bessel_trainable": False,
        "polynomial_cutoff_p": 6,
    },
    l_max=2,
    parity=True,
    num_layers=2,
    num_scalar_features=8,
    num_tensor_features=4,
    scalar_embed_mlp_hidden_layers_width=8,
    allegro_mlp_hidden_layers_width=8,
    readout_mlp_hidden_layers_width=8,
    avg_num_neighbors={"O": 6.0, "Cu": 9.0},
    per_type_energy_scales={"O": 0.7, "Cu": 1.3},
    per_type_energy_shifts={"O": -1.5, "Cu": -3.0},
)


def structures(rng: np.random.Generator):
    """Two periodic cells (3 and 2 atoms, edges ~3.3 Å) and a 4-atom molecule, atoms >= 0.9 Å
    apart (periodic images included), with random labels."""
    out = []
    for n_atoms, periodic in ((3, True), (2, True), (4, False)):
        cell = np.eye(3) * 3.3 + rng.uniform(-0.3, 0.3, (3, 3)) if periodic else np.zeros((3, 3))
        box = cell if periodic else np.eye(3) * 2.6
        while True:
            positions = rng.uniform(0.0, 1.0, (n_atoms, 3)) @ box
            d = positions[:, None] - positions[None]
            if periodic:
                frac = d @ np.linalg.inv(box)
                d = (frac - np.round(frac)) @ box
            if np.all(np.linalg.norm(d, axis=-1)[np.triu_indices(n_atoms, 1)] > 0.9):
                break
        stress = rng.standard_normal((3, 3)) * 0.05
        out.append(
            dict(
                positions=positions,
                numbers=rng.choice([8, 29], n_atoms),
                cell=cell,
                pbc=np.array([periodic] * 3),
                energy=rng.normal(-2.0 * n_atoms, 1.0),
                forces=rng.standard_normal((n_atoms, 3)),
                stress=0.5 * (stress + stress.T) if periodic else np.full((3, 3), np.nan),
            )
        )
    return out


def main() -> None:
    import torch
    from ase import Atoms
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.utils.global_state import set_global_state

    set_global_state()
    import allegro.model

    model = allegro.model.AllegroModel(**BUILDER)
    labelled = structures(np.random.default_rng(0))
    mapper = ChemicalSpeciesToAtomTypeMapper(
        model_type_names=BUILDER["type_names"],
        chemical_species_to_atom_type_map={"O": "O", "Cu": "Cu"},
    )
    neighbors = NeighborListTransform(r_max=BUILDER["r_max"])
    data = [
        neighbors(
            mapper(from_ase(Atoms(s["numbers"], s["positions"], cell=s["cell"], pbc=s["pbc"])))
        )
        for s in labelled
    ]
    out = model(AtomicDataDict.batched_from_list(data))
    energy = out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)
    forces = out[AtomicDataDict.FORCE_KEY]
    stress = out[AtomicDataDict.STRESS_KEY].reshape(-1, 3, 3)
    n_atoms = torch.tensor([len(s["numbers"]) for s in labelled], dtype=torch.float64)
    ref_energy = torch.tensor([s["energy"] for s in labelled])
    ref_forces = torch.tensor(np.concatenate([s["forces"] for s in labelled]))
    periodic = [i for i, s in enumerate(labelled) if s["pbc"].all()]
    ref_stress = torch.tensor(np.stack([labelled[i]["stress"] for i in periodic]))
    terms = {
        "energy_mse": torch.mean(((energy - ref_energy) / n_atoms) ** 2),
        "forces_mse": torch.mean((forces - ref_forces) ** 2),
        "stress_mse": torch.mean((stress[periodic] - ref_stress) ** 2),
    }
    total = sum(WEIGHTS)
    loss = sum(w / total * t for w, t in zip(WEIGHTS, terms.values(), strict=True))
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)

    arrays = {f"state/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    for (name, p), g in zip(params.items(), grads, strict=True):
        arrays[f"grad/{name}"] = np.zeros(p.shape) if g is None else g.detach().numpy()
    for i, s in enumerate(labelled):
        arrays.update({f"structure{i}/{k}": np.asarray(v) for k, v in s.items()})
    arrays.update({f"terms/{k}": v.item() for k, v in terms.items()})
    arrays["loss"] = np.asarray(loss.item())
    arrays["weights"] = np.asarray(WEIGHTS)
    arrays["builder"] = np.asarray(json.dumps(BUILDER))
    np.savez_compressed(FIXTURE, **arrays)
    print(f"loss {loss.item():.6f}, {len(params)} parameter arrays -> {FIXTURE}")


if __name__ == "__main__":
    main()
