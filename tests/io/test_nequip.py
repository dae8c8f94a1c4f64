"""Import of official files and builder arguments: a real nequip-train checkpoint (EMA weights)
and its package give the official evaluation model; every setting is carried; unsupported
options, compiled models and other versions are refused or flagged."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest

from allegro_ref.io import (
    NequipVersionWarning,
    check_nequip_versions,
    config_from_nequip,
    load_nequip,
    model_from_nequip,
    params_from_nequip_state_dict,
)
from allegro_ref.io._torch_archive import TorchArchive
from allegro_ref.io.compare import compare_features

from .test_official_parity import FIXTURE, FIXTURES, RTOL, official_and_ours

CHECKPOINT = FIXTURES / "nequip_tiny.ckpt"
PACKAGE = FIXTURES / "nequip_tiny.nequip.zip"


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _kwargs(fixture, name: str) -> dict:
    return json.loads(str(fixture[f"{name}/kwargs"]))


def _state(fixture, name: str) -> dict:
    head = f"{name}/state/"
    return {k[len(head) :]: v for k, v in fixture.items() if k.startswith(head)}


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def test_checkpoint_and_package_give_the_same_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # right versions: no warning
        from_checkpoint = load_nequip(CHECKPOINT)
        from_package = load_nequip(str(PACKAGE))
    assert from_checkpoint.dtype == from_package.dtype == "float32"
    assert from_checkpoint.config == from_package.config
    for name, value in from_checkpoint.params.items():
        np.testing.assert_array_equal(value, from_package.params[name], err_msg=name)


def test_checkpoint_settings_are_carried():
    config = load_nequip(CHECKPOINT).config
    hyper = TorchArchive(CHECKPOINT).load()["hyper_parameters"]["model"]
    assert config.type_names == ("Cu",)
    assert config.r_max == 4.0 and config.per_edge_type_cutoff == {"Cu": 3.8}
    assert config.l_max == 2 and config.num_layers == 2
    assert config.avg_num_neighbors == hyper["avg_num_neighbors"]
    assert config.per_type_energy_scales == hyper["per_type_energy_scales"]
    assert config.per_type_energy_shifts == hyper["per_type_energy_shifts"]


@pytest.mark.parametrize("path", [CHECKPOINT, PACKAGE], ids=["ckpt", "package"])
def test_file_model_matches_the_official_evaluation_model(fixture, path):
    """The official outputs were made by nequip's own loader (EMA weights swapped in)."""
    model = load_nequip(path)
    theirs, ours = official_and_ours(fixture, "checkpoint/cu", model)
    comparison = compare_features(ours, theirs)
    assert {row.stage for row in comparison} >= {"atomic_energies", "forces", "stress"}
    bad = [row for row in comparison if not row.max_rel <= RTOL["float32"]]
    assert not bad, bad


def test_checkpoint_raw_weights_are_not_the_evaluation_weights(fixture):
    """The test above can fail: the checkpoint's raw (non-EMA) weights give other energies."""
    checkpoint = TorchArchive(CHECKPOINT).load()
    head = "model.sole_model."
    raw = {k[len(head) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(head)}
    model = model_from_nequip(checkpoint["hyper_parameters"]["model"], raw)
    theirs, ours = official_and_ours(fixture, "checkpoint/cu", model)
    difference = compare_features(ours, theirs)
    assert {row.stage: row for row in difference}["atomic_energies"].max_rel > 1e-4


@pytest.mark.parametrize("suffix", [".nequip.pt2", ".nequip.pth"])
def test_compiled_models_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="compiled nequip model"):
        load_nequip(path)


def test_other_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_nequip(tmp_path / "missing.ckpt")
    other = tmp_path / "model.npz"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"expected a nequip training checkpoint \(.ckpt\)"):
        load_nequip(other)
    not_zip = tmp_path / "model.ckpt"
    not_zip.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a PyTorch zip archive"):
        load_nequip(not_zip)
    plain = tmp_path / "model.nequip.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("model/data.pkl", b"")
    with pytest.raises(ValueError, match="not a torch.package archive"):
        load_nequip(plain)


def test_unknown_model_key_is_refused():
    with pytest.raises(ValueError, match=r"holds the models \['sole_model'\]"):
        load_nequip(CHECKPOINT, model_key="other")
    with pytest.raises(ValueError, match=r"holds the models \['sole_model'\], not 'other'"):
        load_nequip(PACKAGE, model_key="other")


@pytest.mark.parametrize(
    "versions",
    [
        {"nequip": "0.19.1", "allegro": "0.8.3"},
        {"nequip": "0.19.7", "allegro": "0.8.0", "torch": "2.99"},
    ],
)
def test_supported_versions_pass_silently(versions):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_nequip_versions(versions)


@pytest.mark.parametrize(
    "versions, match",
    [
        ({"nequip": "0.18.0", "allegro": "0.8.3"}, "nequip 0.18.0"),
        ({"nequip": "0.19.1", "allegro": "0.7.1"}, "allegro 0.7.1"),
        ({"nequip": "0.19.1"}, "allegro unknown"),
        (None, "does not record"),
    ],
)
def test_other_versions_warn(versions, match):
    with pytest.warns(NequipVersionWarning, match=match):
        check_nequip_versions(versions)


# ---------------------------------------------------------------------------------------------
# Builder arguments
# ---------------------------------------------------------------------------------------------
def test_per_type_settings_are_carried(fixture):
    kwargs = _kwargs(fixture, "l2_L3_pertype_f64")
    model = model_from_nequip(kwargs, _state(fixture, "l2_L3_pertype_f64"))
    config = model.config
    for key in (
        "avg_num_neighbors",
        "per_type_energy_scales",
        "per_type_energy_shifts",
        "per_edge_type_cutoff",
        "tp_path_channel_coupling",
        "type_names",
    ):
        expected = kwargs[key]
        assert getattr(config, key) == (tuple(expected) if key == "type_names" else expected)
    np.testing.assert_array_equal(model.params["per_type_energy_scales"], [1.3, 0.7, 1.1])
    np.testing.assert_array_equal(model.params["per_type_energy_shifts"], [-13.6, -1030.0, -2040.0])


def test_trained_scales_and_shifts_come_from_the_state_dict(fixture):
    kwargs = dict(_kwargs(fixture, "l2_L2_f64"), per_type_energy_scales_trainable=True)
    state = _state(fixture, "l2_L2_f64")
    state["model.func.per_type_energy_scale_shift.scales"] = np.array([[0.5], [2.0], [3.0]])
    model = model_from_nequip(kwargs, state)
    np.testing.assert_array_equal(model.params["per_type_energy_scales"], [0.5, 2.0, 3.0])
    assert model.config.per_type_energy_scales == {"H": 0.5, "C": 2.0, "O": 3.0}


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"pair_potential": {"_target_": "nequip.nn.pair_potential.ZBL", "units": "metal"}},
            "pair_potential",
        ),
        ({"allegro_mlp_nonlinearity": "mish"}, "allegro_mlp_nonlinearity='mish'"),
        ({"readout_mlp_nonlinearity": None}, "readout_mlp_nonlinearity=None"),
        ({"weight_individual_irreps": False}, "weight_individual_irreps"),
        ({"forward_normalize": False}, "forward_normalize"),
        (
            {"radial_chemical_embed": {"_target_": "allegro.nn.TwoBodySplineScalarEmbed"}},
            "two-body Bessel",
        ),
        (
            {"radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "x": 1}},
            r"radial_chemical_embed options \['x'\]",
        ),
        ({"_target_": "allegro.model.FullAllegroModel"}, "FullAllegroModel"),
        ({"_target_": "nequip.model.modify"}, "nequip.model.modify"),
        ({"per_type_energy_scales": [1.0, 2.0, 3.0]}, "got a list"),
        ({"some_new_option": 1}, r"unknown official model options \['some_new_option'\]"),
        ({"avg_num_neighbors": None}, "needs avg_num_neighbors"),
    ],
)
def test_unsupported_options_are_refused(fixture, change, match):
    kwargs = dict(_kwargs(fixture, "l2_L2_f64"), **change)
    with pytest.raises(ValueError, match=match):
        config_from_nequip(kwargs)


def test_model_dtype_is_required(fixture):
    kwargs = _kwargs(fixture, "l2_L2_f64")
    del kwargs["model_dtype"]
    with pytest.raises(ValueError, match="model_dtype"):
        model_from_nequip(kwargs, _state(fixture, "l2_L2_f64"))


# ---------------------------------------------------------------------------------------------
# state_dict checks
# ---------------------------------------------------------------------------------------------
def test_stored_couplings_are_checked(fixture):
    config = config_from_nequip(_kwargs(fixture, "l2_L2_f64"))
    state = _state(fixture, "l2_L2_f64")
    key = "model.func.allegro.tps.0.w3j"
    state[key] = state[key].copy()
    state[key][state[key] != 0] *= -1  # another sign convention for every path
    with pytest.raises(ValueError, match="couplings .* differ"):
        params_from_nequip_state_dict(state, config)


def test_stored_cutoffs_are_checked(fixture):
    kwargs = _kwargs(fixture, "l2_L3_pertype_f64")
    state = _state(fixture, "l2_L3_pertype_f64")
    transposed = dict(kwargs, per_edge_type_cutoff={"H": 2.5, "O": {"H": 3.2, "C": 3.6}})
    with pytest.raises(ValueError, match="per-edge-type cutoffs"):
        params_from_nequip_state_dict(state, config_from_nequip(transposed))


def test_missing_and_misshapen_weights_are_refused(fixture):
    config = config_from_nequip(_kwargs(fixture, "l2_L2_f64"))
    state = _state(fixture, "l2_L2_f64")
    missing = {k: v for k, v in state.items() if "center_embed" not in k}
    with pytest.raises(ValueError, match="has no 'radial_chemical_embed"):
        params_from_nequip_state_dict(missing, config)
    wrong = dict(state)
    wrong["model.func.allegro.tps.1.weights"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"tps.1.weights has shape \(3, 3\)"):
        params_from_nequip_state_dict(wrong, config)
    other = config_from_nequip(dict(_kwargs(fixture, "l2_L2_f64"), num_scalar_features=32))
    with pytest.raises(ValueError, match="wrong shapes"):
        params_from_nequip_state_dict(state, other)


def test_potential_from_nequip_equals_load_nequip():
    from allegro_ref import Potential

    potential = Potential.from_nequip(CHECKPOINT)
    model = load_nequip(CHECKPOINT)
    assert potential.model.config == model.config
    for name, value in model.params.items():
        np.testing.assert_array_equal(potential.model.params[name], value)
