"""The named configurations: each builds, its docstring table is true, overrides replace fields,
and ``cu_small`` is the architecture of the shipped cu-emt model."""

from __future__ import annotations

import pytest

from allegro_ref import pretrained
from allegro_ref.model import AllegroConfig, presets

# the normalizations that training takes from the data
STATISTICS = ("avg_num_neighbors", "per_type_energy_scales", "per_type_energy_shifts")


def _table() -> dict[str, list[str]]:
    """The rows of the table in the module docstring: preset name -> cells."""
    rows = {}
    for line in presets.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_every_preset_is_in_the_table() -> None:
    assert sorted(_table()) == sorted(presets.__all__)


@pytest.mark.parametrize("name", presets.__all__)
def test_docstring_table(name: str) -> None:
    species, r_max, l_max, layers, s, u, widths = _table()[name]
    config = getattr(presets, name)()
    assert isinstance(config, AllegroConfig)
    assert config.type_names == tuple(species.split())
    assert (config.r_max, config.l_max, config.num_layers) == (
        float(r_max),
        int(l_max),
        int(layers),
    )
    assert (config.num_scalar_features, config.num_tensor_features) == (int(s), int(u))
    assert [
        config.scalar_embed_mlp_hidden_layers_width,
        config.allegro_mlp_hidden_layers_width,
        config.readout_mlp_hidden_layers_width,
    ] == [int(w) for w in widths.split("/")]
    assert config.parity and config.num_bessels == 8 and config.polynomial_cutoff_p == 6.0


@pytest.mark.parametrize("name", presets.__all__)
def test_overrides_replace_fields(name: str) -> None:
    config = getattr(presets, name)(r_max=2.5, num_layers=1)
    assert (config.r_max, config.num_layers) == (2.5, 1)


def test_cu_small_is_the_shipped_cu_emt_architecture() -> None:
    def architecture(config: AllegroConfig) -> dict:
        return {k: v for k, v in config.to_dict().items() if k not in STATISTICS}

    assert architecture(presets.cu_small()) == architecture(pretrained.load("cu-emt").config)


def test_cu_benchmark_lmax() -> None:
    assert presets.cu_benchmark(l_max=3).l_max == 3
