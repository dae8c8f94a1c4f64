"""AllegroConfig: validation, serialization, and the official tensor-track irreps and paths."""

import numpy as np
import pytest

from allegro_ref.model import Allegro2022Config, AllegroConfig
from allegro_ref.nn import EnvironmentTensorProduct
from allegro_ref.o3 import Irreps


def _paths_per_layer(**kwargs) -> list[int]:
    config = AllegroConfig(type_names=["A"], r_max=4.0, **kwargs)
    return [
        EnvironmentTensorProduct(i, config.sh_irreps, o, 4, path_channel_coupling=True).n_paths
        for i, o in config.layer_irreps()
    ]


@pytest.mark.parametrize(
    "kwargs, irreps_out, n_paths",
    [
        # as built by nequip-allegro 0.8.3
        (dict(l_max=2, num_layers=2), ["0e+1o+2e", "0e"], [11, 3]),
        (
            dict(l_max=2, num_layers=3, parity=True),
            ["0e+1e+1o+2e+2o", "0e+1o+2e", "0e"],
            [15, 15, 3],
        ),
        (dict(l_max=2, num_layers=4, parity=True), None, [15, 25, 15, 3]),
        (dict(l_max=2, num_layers=3, parity=False), ["0e+1o+2e", "0e+1o+2e", "0e"], [11, 11, 3]),
        (dict(l_max=1, num_layers=2), ["0e+1o", "0e"], [4, 2]),
        (dict(l_max=3, num_layers=2), ["0e+1o+2e+3o", "0e"], [23, 4]),
    ],
)
def test_layer_irreps_and_path_counts_match_official(kwargs, irreps_out, n_paths):
    config = AllegroConfig(type_names=["A"], r_max=4.0, **kwargs)
    if irreps_out is not None:
        assert [o for _, o in config.layer_irreps()] == [Irreps(s) for s in irreps_out]
    assert _paths_per_layer(**kwargs) == n_paths


def test_parameter_shapes_match_official_state_dict():
    """Shapes of the official state_dict for l_max 2, 2 layers, S 64, U 32, 3 types (§4)."""
    config = AllegroConfig(
        type_names=["H", "C", "O"], r_max=5.0, num_tensor_features=32, num_scalar_features=64
    )
    shapes = config.parameter_shapes()
    assert shapes["center_embed"] == (3, 32)
    assert shapes["basis_linear.0"] == (8, 64)
    assert shapes["scalar_embed_mlp.0"] == (64, 64)
    assert shapes["tensor_embed.0"] == (64, 96)
    assert shapes["first_projection.0"] == (64, 160)
    assert shapes["latent.0.0"] == (96, 64)
    assert shapes["latent.0.1"] == (64, 160)
    assert shapes["latent.1.0"] == (160, 64)
    assert shapes["latent.1.1"] == (64, 64)
    assert shapes["tp.0"] == (32, 11)
    assert shapes["tp.1"] == (32, 3)
    assert shapes["readout.0"] == (192, 32)
    assert shapes["readout.1"] == (32, 1)
    n_trainable = sum(
        int(np.prod(s))
        for n, s in shapes.items()
        if n not in ("bessel_frequencies", "per_type_energy_scales", "per_type_energy_shifts")
    )
    # official count 68 800 uses readout width 64 in that example; recompute with it:
    wide = AllegroConfig(
        type_names=["H", "C", "O"],
        r_max=5.0,
        num_tensor_features=32,
        readout_mlp_hidden_layers_width=64,
    ).parameter_shapes()
    n_wide = sum(
        int(np.prod(s))
        for n, s in wide.items()
        if n not in ("bessel_frequencies", "per_type_energy_scales", "per_type_energy_shifts")
    )
    assert n_wide == 68800
    assert n_trainable < n_wide


def test_cutoff_matrix_and_per_type_values():
    config = AllegroConfig(
        type_names=["H", "C"],
        r_max=5.0,
        per_edge_type_cutoff={"H": 3.0, "C": {"H": 4.0}},
        avg_num_neighbors={"H": 10.0, "C": 20.0},
    )
    np.testing.assert_array_equal(config.cutoff_matrix(), [[3.0, 3.0], [4.0, 5.0]])
    np.testing.assert_array_equal(
        config.per_type_values(config.avg_num_neighbors, "avg_num_neighbors"), [10.0, 20.0]
    )


def test_round_trip_dict():
    config = AllegroConfig(
        type_names=["H", "C"], r_max=4.5, per_type_energy_shifts={"H": -1, "C": -2}
    )
    assert AllegroConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(type_names=[], r_max=4.0), "type_names"),
        (dict(type_names=["H", "H"], r_max=4.0), "duplicates"),
        (dict(type_names=["H"], r_max=-1.0), "r_max"),
        (dict(type_names=["H"], r_max=4.0, radial_chemical_embed_dim=7), "even"),
        (dict(type_names=["H"], r_max=4.0, avg_num_neighbors=0.0), "avg_num_neighbors"),
        (dict(type_names=["H"], r_max=4.0, per_type_energy_scales={"X": 1.0}), "unknown"),
        (dict(type_names=["H"], r_max=4.0, per_edge_type_cutoff={"H": 6.0}), "r_max"),
        (dict(type_names=["H"], r_max=4.0, per_edge_type_cutoff={"Xe": 3.0}), "unknown center"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AllegroConfig(**kwargs)


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(parity="false"), r"parity must be true or false, got 'false' \(str\)"),
        (dict(bessel_trainable=0), "bessel_trainable must be true or false"),
        (dict(l_max=True), r"l_max must be an integer, got True \(bool\)"),
        (dict(l_max=2.0), r"l_max must be an integer, got 2.0 \(float\)"),
        (dict(num_layers="2"), "num_layers must be an integer"),
        (dict(radial_chemical_embed_dim=8.5), "radial_chemical_embed_dim must be an integer"),
        (dict(r_max="4.0"), "r_max must be a number"),
        (dict(r_max=True), "r_max must be a number"),
        (dict(r_max=None), "r_max must be a number"),
        (dict(r_max=10**400), "r_max must be a number within float64's range"),
        (dict(per_type_energy_shifts=10**400), "per_type_energy_shifts must be a number"),
        (dict(polynomial_cutoff_p=float("nan")), "polynomial_cutoff_p must be > 0"),
        (dict(type_names="HC"), "type_names must be a non-empty list"),
        (dict(type_names=None), "type_names must be a non-empty list"),
        (dict(type_names=[["H"]]), "type_names must be a non-empty list"),
        (dict(type_names=[f"X{i}" for i in range(1025)]), "at most 1024 names"),
        (dict(l_max=7), r"l_max must be in 0..6, got 7"),
        (dict(l_max=10**9), r"l_max must be in 0..6"),
        (dict(l_max=-1), r"l_max must be in 0..6"),
        (dict(num_layers=10**9), "num_layers must be <= 32"),
        (dict(num_bessels=10**6), "num_bessels must be <= 1024"),
        (dict(avg_num_neighbors=[1.0, 2.0]), "avg_num_neighbors must be a number or a mapping"),
        (dict(avg_num_neighbors="20"), "avg_num_neighbors must be a number or a mapping"),
        (dict(avg_num_neighbors={"H": "1"}), r"avg_num_neighbors\['H'\] must be a number"),
        (dict(per_type_energy_shifts={"H": None}), r"per_type_energy_shifts\['H'\]"),
        (dict(per_type_energy_scales=float("inf")), "per_type_energy_scales must be finite"),
        (dict(per_edge_type_cutoff=[3.0]), "per_edge_type_cutoff must be a mapping"),
        (dict(per_edge_type_cutoff={"H": "3"}), r"per_edge_type_cutoff\['H'\]\['H'\] must be"),
        (dict(per_edge_type_cutoff={"H": {"Xe": 3.0}}), "unknown neighbor type 'Xe'"),
        (dict(per_edge_type_cutoff={"H": float("nan")}), r"must be in \(0, r_max"),
    ],
)
def test_from_dict_is_strict(fields, match):
    """Values of the wrong type (as a hand-edited JSON or YAML file gives them) are refused
    with the field's name, by the constructor and by ``from_dict`` alike."""
    data = {"type_names": ["H"], "r_max": 4.0, **fields}
    with pytest.raises(ValueError, match=match):
        AllegroConfig.from_dict(data)
    with pytest.raises(ValueError, match=match):
        AllegroConfig(**data)


@pytest.mark.parametrize(
    "data, match",
    [
        (None, "from_dict needs a mapping of field names, got NoneType"),
        ([["type_names", ["H"]]], "from_dict needs a mapping of field names, got list"),
        ({"type_names": ["H"]}, r"fields \['r_max'\] are required"),
        ({}, r"fields \['type_names', 'r_max'\] are required"),
    ],
)
def test_from_dict_needs_a_mapping_with_the_required_fields(data, match):
    with pytest.raises(ValueError, match=match):
        AllegroConfig.from_dict(data)


def test_numpy_scalars_are_accepted_as_python_numbers():
    config = AllegroConfig(
        type_names=["H"], r_max=np.float64(4.0), l_max=np.int64(1), parity=np.bool_(False)
    )
    assert type(config.l_max) is int and type(config.parity) is bool
    assert config == AllegroConfig(type_names=["H"], r_max=4.0, l_max=1, parity=False)


def test_huge_widths_allocate_nothing():
    """A config is numbers only: huge widths cost nothing until a model is built (a weights
    file's arrays are checked against ``parameter_shapes`` before that)."""
    import tracemalloc

    tracemalloc.start()
    try:
        config = AllegroConfig(
            type_names=["H"],
            r_max=4.0,
            l_max=6,
            num_layers=32,
            num_scalar_features=10**12,
            num_tensor_features=10**12,
            allegro_mlp_hidden_layers_width=10**12,
        )
        shapes = config.parameter_shapes()
        config_2022 = Allegro2022Config(
            type_names=["H"],
            r_max=4.0,
            l_max=4,
            num_layers=8,
            num_tensor_features=10**12,
            num_bessels=1024,
            two_body_latent_dims=(10**12, 10**12),
            latent_dims=(10**12,),
        )
        shapes_2022 = config_2022.parameter_shapes()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shapes["tensor_embed.0"] == (10**12, 7 * 10**12)
    assert shapes_2022["two_body_latent.1"] == (10**12, 10**12)
    assert peak < 20 * 2**20


def test_unknown_field_in_dict_raises():
    with pytest.raises(ValueError, match="unknown AllegroConfig fields"):
        AllegroConfig.from_dict({"type_names": ["H"], "r_max": 3.0, "lmax": 2})


@pytest.mark.parametrize(
    "fields, match",
    [
        (dict(latent_resnet="false"), "latent_resnet must be true or false, got 'false'"),
        (dict(normalize_edge_energy_sum=1), "normalize_edge_energy_sum must be true or false"),
        (dict(l_max=True), "l_max must be an integer, got True"),
        (dict(l_max=7), r"l_max must be in 0..6, got 7"),
        (dict(l_max=5), "the 2022 family supports l_max <= 4 and num_layers <= 8"),
        (dict(num_layers=9), "the 2022 family supports l_max <= 4 and num_layers <= 8"),
        (dict(num_bessels=1025), "num_bessels must be <= 1024"),
        (dict(num_tensor_features=8.0), "num_tensor_features must be an integer"),
        (dict(initial_scalar_embedding_dim="8"), "initial_scalar_embedding_dim must be an integer"),
        (dict(two_body_latent_dims="32"), "two_body_latent_dims must be a list"),
        (dict(two_body_latent_dims=[32, "64"]), r"two_body_latent_dims\[1\] must be an integer"),
        (dict(latent_dims=64), "latent_dims must be a list"),
        (dict(latent_resnet_coefficients={"a": 1}), "latent_resnet_coefficients must be a list"),
        (dict(normalized_basis_inv_std=["x"]), r"normalized_basis_inv_std\[0\] must be a number"),
        (dict(avg_num_neighbors=float("inf")), "avg_num_neighbors must be > 1"),
        (dict(avg_num_neighbors="20"), "avg_num_neighbors must be a number"),
        (dict(global_energy_scale=None), "global_energy_scale must be a number"),
        (dict(polynomial_cutoff_p=0.0), "polynomial_cutoff_p must be > 0"),
        (dict(parity=["o3_full"]), "parity must be one of"),
        (dict(per_edge_type_cutoff=[1.0]), "per_edge_type_cutoff must be a mapping"),
        (dict(type_names=None), "type_names must be a non-empty list"),
        (dict(tensors_mixing_mode={}), "tensors_mixing_mode must be one of"),
    ],
)
def test_2022_config_is_strict_too(fields, match):
    data = {"type_names": ["H", "C"], "r_max": 4.0, **fields}
    with pytest.raises(ValueError, match=match):
        Allegro2022Config.from_dict(data)
    with pytest.raises(ValueError, match="from_dict needs a mapping of field names, got list"):
        Allegro2022Config.from_dict([data])
    valid = Allegro2022Config(type_names=["H", "C"], r_max=4.0)
    assert Allegro2022Config.from_dict(valid.to_dict()) == valid
