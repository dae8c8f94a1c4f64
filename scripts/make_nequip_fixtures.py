"""Build official nequip-allegro models with random weights, evaluate them on a few structures
and store weights, inputs and official outputs as a test fixture.

Needs the optional comparison stack (torch CPU, nequip 0.19.1, nequip-allegro 0.8.3):

    pip install torch==2.13.0 && pip install nequip==0.19.1 nequip-allegro==0.8.3 ase
    python scripts/make_nequip_fixtures.py            # writes tests/fixtures/nequip_models.npz

The fixture holds, for every (config, structure) case: the builder's keyword arguments (JSON),
the official state_dict (NumPy), the structure, the official neighbour list, and the official
total and per-atom energies, forces, stress, edge vectors and edge energies. The tests read
only the .npz; torch is never imported by the library or its tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nequip_models.npz"
TYPES = ["H", "C", "O"]
SMALL = dict(
    num_scalar_features=16,
    num_tensor_features=8,
    scalar_embed_mlp_hidden_layers_width=16,
    allegro_mlp_hidden_layers_width=16,
    readout_mlp_hidden_layers_width=8,
)
CONFIGS = {
    "l2_L2_f64": dict(l_max=2, num_layers=2, avg_num_neighbors=6.0, model_dtype="float64"),
    "l1_L1_f64": dict(l_max=1, num_layers=1, avg_num_neighbors=6.0, model_dtype="float64"),
    "l3_L2_noparity_f64": dict(
        l_max=3, num_layers=2, parity=False, avg_num_neighbors=6.0, model_dtype="float64"
    ),
    "l2_L3_pertype_f64": dict(
        l_max=2,
        num_layers=3,
        tp_path_channel_coupling=False,
        avg_num_neighbors={"H": 4.0, "C": 7.0, "O": 5.0},
        per_type_energy_scales={"H": 1.3, "C": 0.7, "O": 1.1},
        per_type_energy_shifts={"H": -13.6, "C": -1030.0, "O": -2040.0},
        per_edge_type_cutoff={"H": {"H": 2.5, "O": 3.2}, "O": 3.6},
        model_dtype="float64",
    ),
    "l2_L2_f32": dict(
        l_max=2,
        num_layers=2,
        avg_num_neighbors=6.0,
        per_type_energy_scales=0.8,
        per_type_energy_shifts=-3.0,
        model_dtype="float32",
    ),
}
R_MAX = 4.0


def structures():
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(0)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    small_cell = Atoms(
        "HCOH",
        cell=[[3.1, 0.0, 0.0], [0.9, 2.9, 0.0], [-0.6, 0.7, 3.3]],
        scaled_positions=rng.uniform(0, 1, (4, 3)),
        pbc=True,
    )
    bulk_symbols = rng.choice(TYPES, 24)
    bulk = Atoms(
        bulk_symbols,
        cell=np.diag([5.5, 5.8, 6.1]) + 0.3 * rng.standard_normal((3, 3)),
        pbc=True,
    )
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in (2, 3, 4)), indexing="ij"), -1)
    bulk.set_scaled_positions(
        (grid.reshape(-1, 3) + 0.5) / np.array([2, 3, 4]) + 0.03 * rng.standard_normal((24, 3))
    )
    return {"molecule": ethanol, "small_cell": small_cell, "bulk": bulk}


def main() -> None:
    from allegro.model import AllegroModel
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.utils.global_state import set_global_state

    set_global_state()
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for seed, (name, extra) in enumerate(CONFIGS.items()):
        kwargs = dict(
            seed=seed,
            type_names=TYPES,
            r_max=R_MAX,
            radial_chemical_embed={
                "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                "num_bessels": 8,
                "bessel_trainable": False,
                "polynomial_cutoff_p": 6,
            },
            **SMALL,
            **extra,
        )
        model = AllegroModel(**kwargs).eval()
        state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
        for key, value in state.items():
            arrays[f"{name}/state/{key}"] = value
        arrays[f"{name}/kwargs"] = np.array(json.dumps(kwargs))
        transforms = [
            ChemicalSpeciesToAtomTypeMapper(
                model_type_names=TYPES, chemical_species_to_atom_type_map={t: t for t in TYPES}
            ),
            NeighborListTransform(
                r_max=R_MAX,
                per_edge_type_cutoff=extra.get("per_edge_type_cutoff"),
                type_names=TYPES,
            ),
        ]
        for structure_name, atoms in structures().items():
            data = from_ase(atoms)
            for transform in transforms:
                data = transform(data)
            out = model(data)
            case = f"{name}/{structure_name}"
            cases.append(case)
            arrays[f"{case}/positions"] = atoms.positions
            arrays[f"{case}/cell"] = np.asarray(atoms.cell)
            arrays[f"{case}/pbc"] = np.asarray(atoms.pbc)
            arrays[f"{case}/symbols"] = np.array(atoms.get_chemical_symbols())
            arrays[f"{case}/edge_index"] = out[AtomicDataDict.EDGE_INDEX_KEY].numpy()
            arrays[f"{case}/edge_cell_shift"] = out[AtomicDataDict.EDGE_CELL_SHIFT_KEY].numpy()
            for key in (
                "total_energy",
                "atomic_energy",
                "forces",
                "stress",
                "edge_vectors",
                "edge_energy",
            ):
                arrays[f"{case}/{key}"] = out[key].detach().double().numpy()
            print(case, out[AtomicDataDict.EDGE_INDEX_KEY].shape[1], "edges")
    arrays["cases"] = np.array(cases)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
