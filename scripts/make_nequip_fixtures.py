"""Build official nequip-allegro models, evaluate them on a few structures and store weights,
inputs and official outputs as test fixtures.

Needs the official stack (torch CPU, nequip 0.19.1, nequip-allegro 0.8.3, ase):

    pip install torch==2.13.0 && pip install nequip==0.19.1 nequip-allegro==0.8.3 ase
    python scripts/make_nequip_fixtures.py

Writes, in tests/fixtures/:

- ``nequip_models.npz``: for every (config, structure) case, the builder's keyword arguments
  (JSON), the official state_dict (NumPy), the structure, the official neighbour list, and the
  official total and per-atom energies, forces, stress and edge vectors; for the molecule case of
  every config also the intermediate features ``edge_embedding``, ``edge_features`` and
  ``edge_energy``. Configs: random weights from seeds (the official builder's init), chosen so
  that together they cover l_max 1/2/3, 1-3 layers, parity on/off, tensor-product path-channel
  coupling on/off, per-type avg_num_neighbors, per-type energy scales and shifts, per-edge-type
  cutoffs, other MLP depths, embedding width, Bessel count and cutoff exponent, in float64 and
  float32.
- ``nequip_tiny.ckpt``: the Lightning checkpoint of a real ``nequip-train`` run (one epoch on
  ASE EMT copper, EMA weights, float32), and ``nequip_tiny.nequip.zip``, its
  ``nequip-package build`` package with the packaged Python sources removed (they are most of
  its size; allegro_ref never reads them, the records it reads are unchanged). The npz holds the
  official evaluation model's outputs on one structure under the case ``checkpoint/cu``.

The tests read only these files; torch is never imported by the library or its tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
OUT = FIXTURES / "nequip_models.npz"
CHECKPOINT = FIXTURES / "nequip_tiny.ckpt"
PACKAGE = FIXTURES / "nequip_tiny.nequip.zip"
TYPES = ["H", "C", "O"]
SMALL = dict(
    num_scalar_features=16,
    num_tensor_features=8,
    scalar_embed_mlp_hidden_layers_width=16,
    allegro_mlp_hidden_layers_width=16,
    readout_mlp_hidden_layers_width=8,
)
PER_TYPE = dict(
    avg_num_neighbors={"H": 4.0, "C": 7.0, "O": 5.0},
    per_type_energy_scales={"H": 1.3, "C": 0.7, "O": 1.1},
    per_type_energy_shifts={"H": -13.6, "C": -1030.0, "O": -2040.0},
    per_edge_type_cutoff={"H": {"H": 2.5, "O": 3.2}, "O": 3.6},
)
CONFIGS = {
    "l2_L2_f64": dict(l_max=2, num_layers=2, avg_num_neighbors=6.0, model_dtype="float64"),
    "l1_L1_depths_f64": dict(
        l_max=1,
        num_layers=1,
        avg_num_neighbors=6.0,
        radial_chemical_embed_dim=12,
        scalar_embed_mlp_hidden_layers_depth=2,
        allegro_mlp_hidden_layers_depth=2,
        readout_mlp_hidden_layers_depth=2,
        model_dtype="float64",
    ),
    "l3_L2_noparity_f64": dict(
        l_max=3, num_layers=2, parity=False, avg_num_neighbors=6.0, model_dtype="float64"
    ),
    "l2_L3_pertype_f64": dict(
        l_max=2, num_layers=3, tp_path_channel_coupling=False, model_dtype="float64", **PER_TYPE
    ),
    "l2_L2_f32": dict(
        l_max=2,
        num_layers=2,
        avg_num_neighbors=6.0,
        per_type_energy_scales=0.8,
        per_type_energy_shifts=-3.0,
        model_dtype="float32",
    ),
    "l3_L3_pertype_f32": dict(
        l_max=3, num_layers=3, tp_path_channel_coupling=False, model_dtype="float32", **PER_TYPE
    ),
    "l1_L2_noparity_f32": dict(
        l_max=1, num_layers=2, parity=False, avg_num_neighbors=6.0, model_dtype="float32"
    ),
}
EMBED = {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "bessel_trainable": False}
# Bessel count and cutoff exponent per config (the default 8 / 6, and two others).
RADIAL = {"l1_L1_depths_f64": (6, 5), "l1_L2_noparity_f32": (10, 8)}
R_MAX = 4.0
# Stages stored for the molecule case (official output key -> fixture key).
INTERMEDIATES = ("edge_embedding", "edge_features", "edge_energy")
OUTPUTS = ("total_energy", "atomic_energy", "forces", "stress", "edge_vectors", "edge_energy")


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


def evaluate(model, atoms, type_names, r_max, per_edge_type_cutoff, case, arrays, stages=()):
    """Run the official model on ``atoms`` and store inputs and outputs under ``case``."""
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform

    data = from_ase(atoms)
    for transform in (
        ChemicalSpeciesToAtomTypeMapper(
            model_type_names=type_names,
            chemical_species_to_atom_type_map={t: t for t in type_names},
        ),
        NeighborListTransform(
            r_max=r_max, per_edge_type_cutoff=per_edge_type_cutoff, type_names=type_names
        ),
    ):
        data = transform(data)
    out = model(data)
    arrays[f"{case}/positions"] = atoms.positions
    arrays[f"{case}/cell"] = np.asarray(atoms.cell)
    arrays[f"{case}/pbc"] = np.asarray(atoms.pbc)
    arrays[f"{case}/symbols"] = np.array(atoms.get_chemical_symbols())
    arrays[f"{case}/edge_index"] = out[AtomicDataDict.EDGE_INDEX_KEY].numpy()
    arrays[f"{case}/edge_cell_shift"] = out[AtomicDataDict.EDGE_CELL_SHIFT_KEY].numpy()
    for key in (*OUTPUTS, *stages):
        arrays[f"{case}/{key}"] = out[key].detach().double().numpy()
    print(case, out[AtomicDataDict.EDGE_INDEX_KEY].shape[1], "edges")


def random_models(arrays: dict, cases: list) -> None:
    from allegro.model import AllegroModel

    for seed, (name, extra) in enumerate(CONFIGS.items()):
        num_bessels, p = RADIAL.get(name, (8, 6))
        kwargs = dict(
            seed=seed,
            type_names=TYPES,
            r_max=R_MAX,
            radial_chemical_embed=dict(EMBED, num_bessels=num_bessels, polynomial_cutoff_p=p),
            **SMALL,
            **extra,
        )
        model = AllegroModel(**kwargs).eval()
        for key, value in model.state_dict().items():
            arrays[f"{name}/state/{key}"] = value.detach().double().numpy()
        arrays[f"{name}/kwargs"] = np.array(json.dumps(kwargs))
        for structure_name, atoms in structures().items():
            case = f"{name}/{structure_name}"
            stages = INTERMEDIATES if structure_name == "molecule" else ()
            evaluate(
                model, atoms, TYPES, R_MAX, extra.get("per_edge_type_cutoff"), case, arrays, stages
            )
            cases.append(case)


def train_config(out_dir: Path) -> dict:
    """A one-epoch nequip-train run on EMT copper (float32, EMA, a per-edge-type cutoff)."""
    identity = "${list_to_identity_dict:${chemical_species}}"
    return {
        "run": ["train"],
        "seed": 7,
        "cutoff_radius": 4.0,
        "model_type_names": ["Cu"],
        "chemical_species": "${model_type_names}",
        "dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 2},
        "data": {
            "_target_": "nequip.data.datamodule.NequIPDataModule",
            "seed": "${seed}",
            "split_dataset": {
                "dataset": {
                    "_target_": "nequip.data.dataset.EMTTestDataset",
                    "transforms": [
                        {
                            "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                            "model_type_names": "${model_type_names}",
                            "chemical_species_to_atom_type_map": identity,
                        },
                        {
                            "_target_": "nequip.data.transforms.NeighborListTransform",
                            "r_max": "${cutoff_radius}",
                            "per_edge_type_cutoff": {"Cu": 3.8},
                            "type_names": "${model_type_names}",
                        },
                    ],
                    "supercell": [2, 2, 2],
                    "seed": "${seed}",
                    "num_frames": 6,
                    "element": "Cu",
                },
                "train": 4,
                "val": 2,
            },
            "train_dataloader": "${dataloader}",
            "val_dataloader": "${dataloader}",
            "stats_manager": {
                "_target_": "nequip.data.CommonDataStatisticsManager",
                "type_names": "${model_type_names}",
            },
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "max_epochs": 1,
            "logger": False,
            "enable_progress_bar": False,
            "callbacks": [
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": str(out_dir),
                    "filename": "tiny",
                }
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "loss": {
                "_target_": "nequip.train.EnergyForceLoss",
                "per_atom_energy": True,
                "coeffs": {"total_energy": 1.0, "forces": 1.0},
            },
            "val_metrics": {
                "_target_": "nequip.train.EnergyForceMetrics",
                "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0},
            },
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
            "model": {
                "_target_": "allegro.model.AllegroModel",
                "seed": "${seed}",
                "model_dtype": "float32",
                "type_names": "${model_type_names}",
                "r_max": "${cutoff_radius}",
                "per_edge_type_cutoff": {"Cu": 3.8},
                "radial_chemical_embed": dict(EMBED, num_bessels=8, polynomial_cutoff_p=6),
                "l_max": 2,
                "num_layers": 2,
                "num_scalar_features": 8,
                "num_tensor_features": 4,
                "allegro_mlp_hidden_layers_width": 8,
                "readout_mlp_hidden_layers_width": 8,
                "scalar_embed_mlp_hidden_layers_width": 8,
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
            },
        },
    }


def strip_package(source: Path, target: Path) -> None:
    """Copy a .nequip.zip without the packaged Python sources (``*.py``)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if not info.filename.endswith(".py"):
                zout.writestr(info, zin.read(info.filename))


def checkpoint_model(arrays: dict, cases: list) -> None:
    import yaml
    from ase.build import bulk
    from nequip.model.saved_models.load_utils import load_saved_model

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "tiny.yaml").write_text(yaml.safe_dump(train_config(tmp / "out")))
        subprocess.run(
            [bin_dir / "nequip-train", "-cp", tmp, "-cn", "tiny.yaml", f"hydra.run.dir={tmp}"],
            check=True,
        )
        ckpt = tmp / "out" / "tiny.ckpt"
        package = tmp / "tiny.nequip.zip"
        subprocess.run([bin_dir / "nequip-package", "build", ckpt, package], check=True)
        CHECKPOINT.write_bytes(ckpt.read_bytes())
        strip_package(package, PACKAGE)
        model = load_saved_model(str(ckpt))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 2))
    atoms.rattle(0.1, seed=3)
    evaluate(model, atoms, ["Cu"], 4.0, {"Cu": 3.8}, "checkpoint/cu", arrays, INTERMEDIATES)
    cases.append("checkpoint/cu")


def main() -> None:
    from nequip.utils.global_state import set_global_state

    set_global_state()
    arrays: dict[str, np.ndarray] = {}
    cases: list[str] = []
    random_models(arrays, cases)
    checkpoint_model(arrays, cases)
    arrays["cases"] = np.array(cases)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    for path in (OUT, CHECKPOINT, PACKAGE):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
