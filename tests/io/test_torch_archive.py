"""The torch-free reader of PyTorch archives: it runs nothing from the file, rebuilds strided
tensors exactly, and reads the real official checkpoint and package of the fixtures."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from allegro_ref.io._torch_archive import Opaque, TorchArchive, module_state_dict, read_pickle

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _no_storage(key, dtype, numel):
    raise AssertionError("no storage expected")


class _Payload:
    """Pickles as a call of ``function(*args)``, as a malicious file would."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("function", [os.system, eval, exec, getattr, __import__])
def test_callables_named_by_the_pickle_are_never_called(tmp_path, function):
    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w').close()"
    args = {os.system: (f"touch {marker}",), getattr: ("a", "upper")}.get(function, (payload,))
    data = pickle.dumps({"x": _Payload(function, *args)}, protocol=2)
    out = read_pickle(data, _no_storage)
    assert isinstance(out["x"], Opaque)
    assert out["x"].args == args
    assert not marker.exists()


def test_unknown_classes_become_records_of_their_state():
    data = pickle.dumps([OrderedDict(a=1), {2, 3}, _Payload(print)], protocol=2)
    ordered, numbers, record = read_pickle(data, _no_storage)
    assert ordered == {"a": 1} and numbers == {2, 3}
    assert record.qualname == "builtins.print"


def _text(value: str) -> bytes:
    raw = value.encode()
    return pickle.BINUNICODE + len(raw).to_bytes(4, "little") + raw


def _small_int(value: int) -> bytes:
    return pickle.BININT1 + bytes([value])


def _tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _torch_like_pickle(offset: int, size: tuple, stride: tuple) -> bytes:
    """``{"t": tensor}`` as torch.save pickles it (protocol 2): a call of
    torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks) whose
    storage is the persistent id ("storage", torch.DoubleStorage, "0", "cpu", 6)."""
    storage = _tuple(
        _text("storage"),
        pickle.GLOBAL + b"torch\nDoubleStorage\n",
        _text("0"),
        _text("cpu"),
        _small_int(6),
    )
    args = _tuple(
        storage + pickle.BINPERSID,
        _small_int(offset),
        _tuple(*map(_small_int, size)),
        _tuple(*map(_small_int, stride)),
        pickle.NEWFALSE,
        pickle.EMPTY_DICT,
    )
    tensor = pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n" + args + pickle.REDUCE
    item = _text("t") + tensor + pickle.SETITEM
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + item + pickle.STOP


def test_tensors_are_strided_views_of_their_storage():
    storages = {"0": np.arange(6.0)}

    def load(key, dtype, numel):
        assert dtype == np.dtype("<f8") and numel == 6
        return storages[key]

    data = _torch_like_pickle(offset=1, size=(2, 2), stride=(1, 2))
    np.testing.assert_array_equal(read_pickle(data, load)["t"], [[1.0, 3.0], [2.0, 4.0]])
    scalar = _torch_like_pickle(offset=5, size=(), stride=())
    assert read_pickle(scalar, load)["t"] == 5.0
    empty = _torch_like_pickle(offset=0, size=(0, 3), stride=(3, 1))
    assert read_pickle(empty, load)["t"].shape == (0, 3)
    with pytest.raises(ValueError, match="beyond its storage"):
        read_pickle(_torch_like_pickle(offset=3, size=(2, 2), stride=(1, 2)), load)
    # stride 0: 200 x 200 elements from a 6-element storage (a tiny file declaring a huge
    # tensor) is refused before anything is allocated
    with pytest.raises(ValueError, match=r"size \[200, 200\], stride \[0, 0\].*beyond"):
        read_pickle(_torch_like_pickle(offset=0, size=(200, 200), stride=(0, 0)), load)


def test_real_checkpoint_state_dict():
    checkpoint = TorchArchive(FIXTURES / "nequip_tiny.ckpt").load()
    state = checkpoint["state_dict"]
    weight = state["model.sole_model.model.func.allegro.tps.0.weights"]
    assert weight.dtype == np.float32 and weight.ndim == 2
    assert checkpoint["hyper_parameters"]["info_dict"]["versions"]["nequip"] == "0.19.1"


def test_real_package_module_tree():
    archive = TorchArchive(FIXTURES / "nequip_tiny.nequip.zip")
    assert archive.is_package
    assert "model/config.yaml" in archive.names()
    models = archive.load("model/eager_model.pkl")
    assert models.qualname == "torch.nn.modules.container.ModuleDict"
    state = module_state_dict(models.state["_modules"]["sole_model"])
    assert "model.func.allegro.tps.0.w3j" in state
    assert "model.func.allegro.tps.0.weights" in state


def test_not_an_archive(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a PyTorch zip archive"):
        TorchArchive(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/data.pkl", b"")
        archive.writestr("b/data.pkl", b"")
    with pytest.raises(ValueError, match="one top-level folder"):
        TorchArchive(path)


def test_module_state_dict_needs_a_module():
    with pytest.raises(ValueError, match="not a pickled torch module"):
        module_state_dict({"_modules": {}})
