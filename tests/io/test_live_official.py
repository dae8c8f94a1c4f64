"""Against the live official implementation (torch, nequip 0.19, nequip-allegro 0.8): every
stage of random official models and of the fixture checkpoint and a freshly built package, and
the torch-free archive reader against torch.load. Skipped where the official stack is missing.

Run with the official stack importable, e.g.
``pytest -m nequip tests/io`` in an environment with ``pip install 'allegro_ref[nequip]'``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nequip")
pytest.importorskip("allegro")

from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from allegro_ref.io import load_nequip, model_from_nequip  # noqa: E402
from allegro_ref.io._torch_archive import TorchArchive  # noqa: E402
from allegro_ref.io.compare import compare_with_official  # noqa: E402

from .test_official_parity import FIXTURE, FIXTURES, RTOL  # noqa: E402

pytestmark = pytest.mark.nequip
CHECKPOINT = FIXTURES / "nequip_tiny.ckpt"


@pytest.fixture(scope="module", autouse=True)
def official_global_state():
    from nequip.utils.global_state import set_global_state

    set_global_state()


def _structures():
    water = molecule("H2O")
    water.rattle(0.05, seed=2)
    rng = np.random.default_rng(7)
    cell = np.array([[3.0, 0.0, 0.0], [0.7, 3.2, 0.0], [-0.4, 0.5, 3.4]])
    small = Atoms("HCOOH", cell=cell, scaled_positions=rng.uniform(0, 1, (5, 3)), pbc=True)
    return {"molecule": water, "small_cell": small}


def _fixture_kwargs() -> dict[str, dict]:
    with np.load(FIXTURE) as data:
        return {
            key.split("/")[0]: json.loads(str(data[key]))
            for key in data.files
            if key.endswith("/kwargs")
        }


@pytest.mark.parametrize("name", sorted(_fixture_kwargs()))
def test_every_stage_matches_random_official_models(name):
    from allegro.model import AllegroModel as OfficialAllegro

    kwargs = _fixture_kwargs()[name]
    official = OfficialAllegro(**kwargs).eval()
    state = {key: value.detach().numpy() for key, value in official.state_dict().items()}
    model = model_from_nequip(kwargs, state)
    for structure, atoms in _structures().items():
        comparison = compare_with_official(model, official, atoms)
        stages = {row.stage for row in comparison}
        assert {"radial_basis", "initial_tensors", "layer0.tensors", "forces"} <= stages
        assert comparison.first_divergence(RTOL[model.dtype]) is None, f"{structure}\n{comparison}"


def _nequip_tool(name: str) -> str:
    tool = Path(sys.executable).parent / name
    return str(tool) if tool.exists() else shutil.which(name)


def test_checkpoint_and_fresh_package_match_the_official_loader(tmp_path):
    from nequip.model.saved_models.load_utils import load_saved_model

    tool = _nequip_tool("nequip-package")
    if tool is None:
        pytest.skip("nequip-package is not on the PATH")
    package = tmp_path / "tiny.nequip.zip"
    subprocess.run([tool, "build", str(CHECKPOINT), str(package)], check=True)
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)
    atoms.rattle(0.08, seed=11)
    for path in (CHECKPOINT, package):
        comparison = compare_with_official(load_nequip(path), load_saved_model(str(path)), atoms)
        assert comparison.first_divergence(RTOL["float32"]) is None, f"{path}\n{comparison}"


def test_reader_matches_torch_load(tmp_path):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    tensors = {
        "transposed": base.t(),
        "offset_slice": base[1:, 2:5],
        "strided": base[::2, ::3],
        "float32": base.float() / 7,
        "int64": torch.arange(5),
        "bool": base > 10,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
    }
    path = tmp_path / "tensors.pt"
    torch.save(tensors, path)
    ours = TorchArchive(path).load()
    for key, value in tensors.items():
        expected = value.detach().numpy()
        assert ours[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(ours[key], expected, err_msg=key)

    checkpoint = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    ours = TorchArchive(CHECKPOINT).load()
    for key, value in checkpoint["state_dict"].items():
        if isinstance(value, torch.Tensor):
            np.testing.assert_array_equal(ours["state_dict"][key], value.numpy(), err_msg=key)
    assert ours["hyper_parameters"] == checkpoint["hyper_parameters"]
