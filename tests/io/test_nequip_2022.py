"""Import of nequip 0.6 / nequip-allegro 0.3.0 models: a real nequip-train directory and its
``nequip-deploy`` file give the official energies, forces and stress through Potential;
configs are read with nequip's key resolution; unsupported options are refused. The live test
(marker ``nequip``) builds fresh official models and needs the official 0.6 stack (see
scripts/make_nequip_2022_fixtures.py); it is skipped elsewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from allegro_ref import Potential
from allegro_ref.io.nequip_2022 import (
    is_nequip_2022_config,
    load_nequip_2022,
    model_from_nequip_2022,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TRAIN_DIR = FIXTURES / "nequip2022_train"
DEPLOYED = TRAIN_DIR / "deployed.pth"


def fixture_model_inputs(name: str = "A"):
    with np.load(FIXTURES / f"nequip2022_{name}.npz") as f:
        data = {key[len(name) + 1 :]: f[key] for key in f.files}
    meta = json.loads(str(data["meta/json"]))
    state = {k[len("state/") :]: v for k, v in data.items() if k.startswith("state/")}
    return meta["config"], state, data, meta


def relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("path", [TRAIN_DIR, DEPLOYED], ids=["train-dir", "deployed"])
def test_trained_model_gives_the_official_results(path):
    """nequip-train's float32 model (avg_num_neighbors 'auto', resolved in its saved config)
    against nequip's own ASE calculator on the deployed file."""
    model = load_nequip_2022(path)
    assert model.dtype == "float32"
    assert model.config.type_names == ("Ni", "Cu")  # nequip orders species by atomic number
    reference = np.load(TRAIN_DIR / "reference.npz")
    result = Potential(model).compute(
        reference["positions"], reference["numbers"], reference["cell"], [True] * 3
    )
    assert abs(result["energy"] - reference["energy"]) < 1e-5 * abs(reference["energy"])
    assert relative(result["energies"], reference["energies"]) < 1e-5
    assert relative(result["forces"], reference["forces"]) < 1e-5
    assert relative(result["stress"], reference["stress"]) < 1e-5


def test_deployed_file_holds_the_training_weights():
    trained, deployed = load_nequip_2022(TRAIN_DIR), load_nequip_2022(DEPLOYED)
    assert trained.config == deployed.config
    for name, value in trained.params.items():
        np.testing.assert_array_equal(deployed.params[name], value)


def test_load_nequip_dispatches_2022_files():
    from allegro_ref.io import load_nequip

    for path in (TRAIN_DIR, DEPLOYED):
        assert type(load_nequip(path)).__name__ == "Allegro2022Model"


def test_model_from_nequip_dispatches_2022_configs():
    """The one conversion entry point takes a nequip 0.6 config too: the same model as
    model_from_nequip_2022."""
    from allegro_ref.io import model_from_nequip

    config, state, _, _ = fixture_model_inputs("B")
    model = model_from_nequip(config, state)
    direct = model_from_nequip_2022(config, state)
    assert type(model).__name__ == "Allegro2022Model"
    assert model.config == direct.config and model.dtype == direct.dtype
    for name, value in direct.params.items():
        np.testing.assert_array_equal(model.params[name], value)


def test_config_is_recognised_and_options_carried():
    config, state, _, _ = fixture_model_inputs("B")
    assert is_nequip_2022_config(config)
    assert not is_nequip_2022_config({"model": {"_target_": "allegro.model.AllegroModel"}})
    c = model_from_nequip_2022(config, state).config
    assert (c.l_max, c.num_layers, c.parity, c.tensors_mixing_mode) == (1, 3, "o3_full", "uuulin")
    assert c.self_edge_tensor_product and c.latent_resnet_coefficients_learnable
    assert c.num_bessels == 8 and c.polynomial_cutoff_p == 8.0  # ceil(4 · 6 / π) Bessels
    assert c.env_embed_dims == (8,) and c.env_embed_nonlinearity == "silu"
    c = model_from_nequip_2022(*fixture_model_inputs("C")[:2]).config
    assert not c.latent_resnet and not c.weight_individual_irreps and c.parity == "so3"
    assert c.cutoff_matrix()[1, 0] == 3.5 and c.cutoff_matrix()[0, 1] == 3.0  # (Cu, Ni), (Ni, Cu)
    assert c.global_energy_scale == 1.5 and c.per_type_energy_scales is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_builders": ["allegro.model.Allegro", "SomethingElse"]}, "builders"),
        ({"model_builders": ["EnergyModel"]}, "not a nequip 0.6 Allegro config"),
        ({"avg_num_neighbors": "auto"}, "auto"),
        ({"latent_mlp_nonlinearity": "ssp"}, "nonlinearity"),
        ({"norm_basis_mean_shift": True}, "norm_basis_mean_shift"),
        ({"tensors_mixing_mode": "uuu"}, "tensors_mixing_mode"),
    ],
)
def test_unsupported_options_are_refused(change, message):
    config, state, _, _ = fixture_model_inputs("A")
    with pytest.raises(ValueError, match=message):
        model_from_nequip_2022({**config, **change}, state)


def test_global_shift_and_missing_weights_are_refused():
    config, state, _, _ = fixture_model_inputs("A")
    with pytest.raises(ValueError, match="global energy shift"):
        model_from_nequip_2022(config, {**state, "model.shift_by": np.array([1.0])})
    broken = {k: v for k, v in state.items() if "linears.0" not in k}
    with pytest.raises(ValueError, match="linears.0"):
        model_from_nequip_2022(config, broken)


# ---------------------------------------------------------------------------------------------
# Live: fresh official models (nequip 0.6.2 + nequip-allegro 0.3.0 only)
# ---------------------------------------------------------------------------------------------
def _official_stack():
    torch = pytest.importorskip("torch")
    nequip = pytest.importorskip("nequip")
    pytest.importorskip("allegro")
    if not nequip.__version__.startswith("0.6."):
        pytest.skip(f"needs nequip 0.6 (nequip-allegro 0.3), found nequip {nequip.__version__}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import make_nequip_2022_fixtures as script

    return torch, script


# options the fixtures do not cover, checked live over model A
LIVE_EXTRA = {
    "no-energy-normalization": {"normalize_edge_energy_sum": False},
    "no-avg-num-neighbors": {"avg_num_neighbors": None},
    "normal-init": {"mlp_initialization": "normal"},
    "uvvp-o3_full-L3": {"tensors_mixing_mode": "uvvp", "l_max": 1, "num_layers": 3},
}


@pytest.mark.nequip
@pytest.mark.parametrize("name", ["A", "B", "C", "D", "E", "A32", *LIVE_EXTRA])
@pytest.mark.parametrize("seed", [5, 6])
def test_live_official_models(name, seed):
    """Fresh seeds of every fixture option set (and a few more): the official eager model and
    the import agree to 1e-10 (float64) / 1e-5 (float32) on energies, per-atom energies,
    forces and stress."""
    _torch, script = _official_stack()
    options = {**script.MODELS.get(name, LIVE_EXTRA.get(name)), "seed": seed}
    official, config = script.build(options)
    state = {k: v.detach().numpy() for k, v in official.state_dict().items()}
    potential = Potential(model_from_nequip_2022(config, state))
    rtol = 1e-5 if config["model_dtype"] == "float32" else 1e-10
    for atoms in script.structures().values():
        reference = script.evaluate(official, atoms, config["r_max"], config["chemical_symbols"])
        result = potential.compute_atoms(atoms)
        assert abs(result["energy"] - reference["total_energy"]) < rtol * abs(
            reference["total_energy"]
        )
        assert relative(result["energies"], reference["atomic_energy"]) < rtol
        assert relative(result["forces"], reference["forces"]) < 10 * rtol
        if atoms.pbc.all():
            scale = 10 * rtol * max(1.0, 1e-3 / np.max(np.abs(reference["stress"])))
            assert relative(result["stress"], reference["stress"]) < scale


def test_trained_model_runs_md_through_the_ase_calculator():
    ase = pytest.importorskip("ase")
    from ase.build import bulk
    from ase.md.verlet import VelocityVerlet

    from allegro_ref import AllegroCalculator
    from allegro_ref.io import load_nequip

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.symbols[[0, 5, 9]] = "Ni"
    atoms.rattle(0.05, seed=2)
    atoms.calc = AllegroCalculator(Potential(load_nequip(TRAIN_DIR)))
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, 1.0 * ase.units.fs).run(10)
    assert abs(atoms.get_total_energy() - start) < 1e-3 * len(atoms)
