"""Write the parity fixtures of the 2022-era Allegro family from the official code.

The official stack is nequip-allegro 0.3.0 on nequip 0.6.2 (e3nn 0.5.9), run on a CPU build of
torch. It is not a dependency of allegro_ref; make a separate environment for it::

    python3 -m venv /path/to/venv-nequip06
    /path/to/venv-nequip06/bin/pip install torch==2.13.0  # a CPU wheel is enough
    /path/to/venv-nequip06/bin/pip install "nequip==0.6.2" "nequip-allegro==0.3.0" \\
        "numpy<2.4" ase
    /path/to/venv-nequip06/bin/python scripts/make_nequip_2022_fixtures.py

(nequip-train needs ``numpy<2.4`` and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which this script
sets for its child process.) It writes, in tests/fixtures/:

- ``nequip2022_<name>.npz``: seeded models built by ``nequip.model.model_from_config`` with
  different options (``MODELS`` below), each evaluated in eval mode on a periodic sheared CuNi
  cell whose short axis is below r_max and on a cluster without a cell: the YAML config (as
  JSON), every state_dict array by its torch key, the neighbor lists, the per-atom and total
  energies, forces, stress and virial (autograd), intermediate features of the official
  modules (forward hooks), and the autograd gradient of Σ_i c_i E_i on the periodic cell with
  respect to every parameter.
- ``nequip2022_train/``: a real 3-epoch ``nequip-train`` run on 8 CuNi frames with EMT labels
  (``config.yaml`` and ``best_model.pth``), ``deployed.pth`` from ``nequip-deploy build``, and
  ``reference.npz``: the trained model's energies and forces on one structure.

Every model is seeded, so two runs write the same numbers.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"

BUILDERS = [
    "allegro.model.Allegro",
    "PerSpeciesRescale",
    "StressForceOutput",
    "RescaleEnergyEtc",
]

BASE = {
    "model_builders": BUILDERS,
    "seed": 123,
    "chemical_symbols": ["Cu", "Ni"],
    "default_dtype": "float64",
    "model_dtype": "float64",
    "r_max": 4.0,
    "avg_num_neighbors": 12.0,
    "num_bessels_per_basis": 8,
    "l_max": 2,
    "parity": "o3_full",
    "num_layers": 2,
    "num_tensor_features": 4,
    "tensors_mixing_mode": "uuulin",
    "two_body_latent_mlp_latent_dimensions": [16, 32],
    "two_body_latent_mlp_nonlinearity": "silu",
    "latent_mlp_latent_dimensions": [32, 32],
    "latent_mlp_nonlinearity": "silu",
    "env_embed_mlp_latent_dimensions": [],
    "env_embed_mlp_nonlinearity": None,
    "edge_eng_mlp_latent_dimensions": [16],
    "edge_eng_mlp_nonlinearity": None,
    "per_species_rescale_scales": [1.3, 0.7],
    "per_species_rescale_shifts": [-3.5, -4.25],
    "global_rescale_scale": 2.0,
    "global_rescale_shift": None,
}

#: name -> options over BASE. Together they cover every forward option of 0.3.0.
MODELS = {
    # the paper's model: uuulin, resnet, global and per-species scales
    "A": {},
    # three layers (1e appears), learnable custom resnet coefficients, the self edge included,
    # a nonlinear env-embed MLP, bessel_frequency_cutoff, p = 8
    "B": {
        "l_max": 1,
        "num_layers": 3,
        "latent_resnet_coefficients": [1.0, 2.0, 3.0, 4.0],
        "latent_resnet_coefficients_learnable": True,
        "self_edge_tensor_product": True,
        "env_embed_mlp_latent_dimensions": [8],
        "env_embed_mlp_nonlinearity": "silu",
        "num_bessels_per_basis": None,
        "bessel_frequency_cutoff": 6.0,
        "PolynomialCutoff_p": 8,
        "edge_eng_mlp_nonlinearity": "silu",
    },
    # mixing "p", so3, no resnet, one environment weight per channel, per-edge-type cutoffs
    "C": {
        "tensors_mixing_mode": "p",
        "parity": "so3",
        "latent_resnet": False,
        "latent_mlp_latent_dimensions": [24, 20],
        "weight_individual_irreps": False,
        "per_edge_type_cutoff": {"Cu": 3.5, "Ni": {"Cu": 3.0, "Ni": 4.0}},
        "per_species_rescale_scales": None,
        "global_rescale_scale": 1.5,
    },
    # uuup, o3_restricted, three layers, the normalized basis, no per-species scales
    "D": {
        "tensors_mixing_mode": "uuup",
        "parity": "o3_restricted",
        "l_max": 1,
        "num_layers": 3,
        "use_original_normalized_basis": True,
        "num_bessels_per_basis": None,
        "num_basis": 6,
        "two_body_latent_mlp_latent_dimensions": [16, 24],
        "latent_mlp_latent_dimensions": [24, 24],
        "per_species_rescale_scales": None,
        "per_species_rescale_shifts": [0.5, -0.25],
    },
    # uvvp, the self edge excluded, a nonlinear readout
    "E": {
        "tensors_mixing_mode": "uvvp",
        "num_tensor_features": 3,
        "edge_eng_mlp_nonlinearity": "silu",
        "avg_num_neighbors": 9.5,
    },
    # model A in float32 (nequip-train's default model dtype)
    "A32": {"model_dtype": "float32"},
}

#: modules whose outputs are recorded (forward hooks), by state_dict prefix
HOOKED = ("radial_basis", "typeembed", "spharm", "allegro", "edge_eng", "edge_eng_sum")


def structures():
    """The periodic cell (short axis 3.3 Å < r_max, sheared) and the cluster, as ase.Atoms."""
    from ase import Atoms

    rng = np.random.default_rng(7)
    cell = np.array([[3.3, 0.0, 0.0], [0.9, 5.2, 0.0], [0.4, -0.7, 5.6]])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.1], [0.1, 0.4, 0.5], [0.6, 0.0, 0.55]])
    positions = frac @ cell + 0.08 * rng.standard_normal((4, 3))
    periodic = Atoms("CuNiNiCu", positions=positions, cell=cell, pbc=True)
    cluster_positions = np.array(
        [[0.0, 0.0, 0.0], [2.4, 0.3, 0.1], [0.2, 2.5, -0.3], [-0.3, 0.4, 2.3], [2.1, 2.2, 1.9]]
    )
    cluster = Atoms(
        "NiCuCuNiCu", positions=cluster_positions + 0.1 * rng.standard_normal((5, 3)), pbc=False
    )
    return {"periodic": periodic, "cluster": cluster}


def build(options: dict):
    """The official model (eval mode) and its full config, built from BASE + options."""
    import torch
    from nequip.model import model_from_config
    from nequip.utils import Config
    from nequip.utils._global_options import _set_global_options

    config = {**copy.deepcopy(BASE), **copy.deepcopy(options)}
    # the number of Bessel functions is given one way only (None: not given)
    config = {k: v for k, v in config.items() if not (v is None and k == "num_bessels_per_basis")}
    config = Config.from_dict(config)
    _set_global_options(config)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(int(config["seed"]))  # (nequip-train seeds; model_from_config does not)
    model = model_from_config(config, initialize=True)
    model.eval()
    return model, dict(config)


def evaluate(model, atoms, r_max: float, symbols: list[str]) -> dict[str, np.ndarray]:
    """Energies, forces, stress, virial and hooked intermediates of one structure."""
    import torch
    from nequip.data import AtomicData, AtomicDataDict
    from nequip.data.transforms import TypeMapper

    torch.set_default_dtype(torch.float64)  # before building data (positions stay float64)
    data = TypeMapper(chemical_symbols=symbols)(AtomicData.from_ase(atoms, r_max=r_max))
    inputs = AtomicData.to_AtomicDataDict(data)
    recorded: dict[str, np.ndarray] = {}
    handles = [_hook(model, name, recorded) for name in _hook_targets(model)]
    try:
        out = model(dict(inputs))
    finally:
        for handle in handles:
            handle.remove()
    result = {
        "edge_index": inputs[AtomicDataDict.EDGE_INDEX_KEY].numpy(),
        "edge_cell_shift": inputs[AtomicDataDict.EDGE_CELL_SHIFT_KEY].numpy(),
        "atom_types": inputs[AtomicDataDict.ATOM_TYPE_KEY].numpy()[:, 0],
        "positions": atoms.get_positions(),
        "cell": np.asarray(atoms.cell.array),
        "pbc": np.asarray(atoms.pbc),
        "total_energy": out["total_energy"].detach().numpy().reshape(()),
        "atomic_energy": out["atomic_energy"].detach().numpy()[:, 0],
        "forces": out["forces"].detach().numpy(),
    }
    if atoms.pbc.all():
        result["stress"] = out["stress"].detach().numpy().reshape(3, 3)
        result["virial"] = out["virial"].detach().numpy().reshape(3, 3)
    result.update({f"inter/{k}": v for k, v in recorded.items()})
    return result


def _hook_targets(model) -> list[str]:
    """Full module names of the hooked modules: the network's stages and, inside Allegro, the
    latent MLPs, env-embed MLPs, tensor products and linear maps."""
    inner = ("allegro.latents.", "allegro.tps.", "allegro.linears.", "allegro.env_embed_mlps.")
    import torch

    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):  # (compiled: no hooks)
            continue
        short = name.split("func.", 1)[1] if "func." in name else ""
        is_inner = short.startswith(inner) and short.count(".") == 2
        if short in HOOKED or short == "allegro.final_latent" or is_inner:
            names.append(name)
    return names


_KEYS = {
    "radial_basis": "edge_embedding",
    "typeembed": "edge_embedding",
    "spharm": "edge_attrs",
    "allegro": "edge_features",
    "edge_eng": "edge_energy",
    "edge_eng_sum": "atomic_energy",
}


def _hook(model, name: str, recorded: dict):
    module = model.get_submodule(name)
    short = name.split("func.", 1)[1]

    def hook(_module, _inputs, output):
        value = output[_KEYS[short]] if isinstance(output, dict) else output
        recorded[short] = value.detach().numpy().copy()

    return module.register_forward_hook(hook)


def model_fixture(name: str, options: dict) -> dict[str, np.ndarray]:
    model, config = build(options)
    state = {f"state/{k}": v.detach().numpy().copy() for k, v in model.state_dict().items()}
    out = dict(state)
    meta = {
        "config": _jsonable(config),
        "type_names": list(config["type_names"]),
        "structures": list(structures()),
    }
    for label, atoms in structures().items():
        result = evaluate(model, atoms, float(config["r_max"]), list(config["chemical_symbols"]))
        out.update({f"{label}/{k}": v for k, v in result.items()})
        meta[f"{label}/symbols"] = atoms.get_chemical_symbols()
    if config["model_dtype"] == "float64":
        out.update(parameter_gradients(model, structures()["periodic"], config))
    out["meta/json"] = np.asarray(json.dumps(meta))
    return {f"{name}/{k}": v for k, v in out.items()}


def parameter_gradients(model, atoms, config) -> dict[str, np.ndarray]:
    """∂L/∂θ by autograd for L = Σ_i c_i E_i (eval mode, c_i seeded normal numbers stored as
    ``grad/cotangent``), by torch key, for every parameter that gets a gradient (float64
    models: the network is called directly, without GraphModel's cast to the model dtype)."""
    import torch
    from nequip.data import AtomicData
    from nequip.data.transforms import TypeMapper

    data = TypeMapper(chemical_symbols=list(config["chemical_symbols"]))(
        AtomicData.from_ase(atoms, r_max=float(config["r_max"]))
    )
    # the energy network itself (the force output would free the graph), times RescaleOutput's
    # global scale g as in eval mode
    rescale = model.model
    network = rescale.model.func
    scale = rescale.scale_by if rescale.has_scale else 1.0
    energies = network(AtomicData.to_AtomicDataDict(data))["atomic_energy"][:, 0] * scale
    cotangent = np.random.default_rng(11).standard_normal(energies.shape[0])
    loss = (energies * torch.as_tensor(cotangent, dtype=energies.dtype)).sum()
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    result = {"grad/cotangent": cotangent}
    for name, grad in zip(names, grads, strict=True):
        if grad is not None:
            result[f"grad/{name}"] = grad.detach().numpy().copy()
    return result


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# A real nequip-train run, and its deployed model
# ---------------------------------------------------------------------------------------------
TRAIN_CONFIG = {
    "root": "results",
    "run_name": "cuni",
    "seed": 1,
    "dataset_seed": 2,
    "append": False,
    "default_dtype": "float64",
    "model_dtype": "float32",
    "model_builders": BUILDERS,
    "r_max": 4.0,
    "avg_num_neighbors": "auto",
    "num_bessels_per_basis": 8,
    "l_max": 1,
    "parity": "o3_full",
    "num_layers": 2,
    "num_tensor_features": 4,
    "two_body_latent_mlp_latent_dimensions": [16, 32],
    "latent_mlp_latent_dimensions": [32],
    "env_embed_mlp_latent_dimensions": [],
    "env_embed_mlp_nonlinearity": None,
    "edge_eng_mlp_latent_dimensions": [16],
    "edge_eng_mlp_nonlinearity": None,
    "dataset": "ase",
    "dataset_file_name": "frames.xyz",
    "ase_args": {"format": "extxyz"},
    "chemical_symbols": ["Cu", "Ni"],
    "n_train": 6,
    "n_val": 2,
    "batch_size": 2,
    "max_epochs": 3,
    "learning_rate": 0.005,
    "loss_coeffs": {"forces": 1.0, "total_energy": [1.0, "PerAtomMSELoss"]},
    "metrics_components": [["forces", "mae"]],
    "optimizer_name": "Adam",
    "use_ema": False,
    "wandb": False,
    "verbose": "warning",
    "log_batch_freq": 100,
}


def train_fixture(folder: Path) -> None:
    """Run nequip-train (3 epochs, 8 EMT-labelled CuNi frames) and nequip-deploy build."""
    import yaml
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.io import write

    rng = np.random.default_rng(3)
    frames = []
    for _ in range(8):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 1)
        atoms.symbols[rng.choice(len(atoms), 2, replace=False)] = "Ni"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        frames.append(atoms)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        write(tmp / "frames.xyz", frames, format="extxyz")
        (tmp / "train.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
        bin_dir = Path(sys.executable).parent
        subprocess.run([bin_dir / "nequip-train", "train.yaml"], cwd=tmp, env=env, check=True)
        run = tmp / "results" / "cuni"
        subprocess.run(
            [bin_dir / "nequip-deploy", "build", "--train-dir", run, tmp / "deployed.pth"],
            cwd=tmp, env=env, check=True,
        )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "config.yaml", folder / "config.yaml")
        shutil.copy(run / "best_model.pth", folder / "best_model.pth")
        shutil.copy(tmp / "deployed.pth", folder / "deployed.pth")
    np.savez_compressed(folder / "reference.npz", **_deployed_reference(folder))


def _deployed_reference(folder: Path) -> dict[str, np.ndarray]:
    """Energies and forces of the deployed model (nequip's ASE calculator) on a rattled cell."""
    from ase.build import bulk
    from nequip.ase import NequIPCalculator

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.symbols[[1, 4, 6]] = "Ni"
    atoms.rattle(0.05, seed=11)
    atoms.calc = NequIPCalculator.from_deployed_model(
        str(folder / "deployed.pth"), species_to_type_name={"Cu": "Cu", "Ni": "Ni"}
    )
    return {
        "positions": atoms.get_positions(),
        "cell": np.asarray(atoms.cell.array),
        "numbers": atoms.numbers,
        "energy": np.asarray(atoms.get_potential_energy()),
        "energies": atoms.get_potential_energies(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(voigt=False),
    }


def main() -> None:
    for name, options in MODELS.items():
        arrays = model_fixture(name, options)
        np.savez_compressed(FIXTURES / f"nequip2022_{name}.npz", **arrays)
        print(f"model {name}: E(periodic) = {float(arrays[f'{name}/periodic/total_energy']):.10f}")
    if "--no-train" not in sys.argv:
        train_fixture(FIXTURES / "nequip2022_train")


if __name__ == "__main__":
    main()
