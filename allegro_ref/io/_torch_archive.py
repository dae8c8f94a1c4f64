"""Read the arrays and plain data in a PyTorch zip archive, with NumPy only and running no code.

A PyTorch file is a zip archive holding one pickle (the object tree) and one raw byte file per
tensor storage. Two layouts exist:

- ``torch.save`` (Lightning ``.ckpt`` files): ``<root>/data.pkl`` and ``<root>/data/<key>``;
- ``torch.package`` (nequip ``.nequip.zip`` files): ``<root>/<package>/<resource>.pkl`` and
  ``<root>/.data/<key>.storage``, next to the Python source of the packaged code.

Unpickling an arbitrary pickle runs whatever callables it names, so these files are normally
unsafe to open. :func:`read_pickle` restricts the globals a pickle may name (the method the
``pickle`` documentation gives under "Restricting Globals"): tensors are rebuilt as NumPy arrays
from the raw storage bytes, ``OrderedDict`` and ``set`` become their builtins, and *every other
class* (torch modules, e3nn irreps, ...) becomes an inert :class:`Opaque` record of its pickled
state. Nothing from the file is imported or executed, and torch is not needed.

A pickled ``torch.nn.Module`` is such a record whose state holds ``_parameters``, ``_buffers``,
``_non_persistent_buffers_set`` and ``_modules``; :func:`module_state_dict` walks it to give the
names and arrays ``Module.state_dict()`` would give.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Opaque", "TorchArchive", "module_state_dict", "read_pickle"]

# torch storage classes -> NumPy dtypes (little-endian, as torch writes them on every platform
# it runs on; the archive's "byteorder" record is checked).
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexDoubleStorage": "<c16",
    "ComplexFloatStorage": "<c8",
}


class Opaque:
    """A pickled object of a class that is not imported: its class name and its state.

    ``qualname`` is ``"module.Class"``; ``args`` the constructor arguments the pickle gave;
    ``state`` what the pickle passed to ``__setstate__`` (for a torch module, its ``__dict__``).
    """

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"Opaque({self.qualname})"


class _StorageType:
    """Stands for a torch storage class (``torch.DoubleStorage``, ...): carries its dtype."""

    def __init__(self, name: str):
        if name not in _STORAGE_DTYPES:
            raise ValueError(f"unsupported tensor storage type torch.{name}")
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    """``torch._utils._rebuild_tensor_v2``: a strided view of a storage, copied to an array.
    Offsets and strides are in elements."""
    if meta and any(meta.values()):
        raise ValueError(f"tensors with metadata {meta} (conjugate or negative bits) are not read")
    if not isinstance(storage, np.ndarray):
        raise ValueError(f"a tensor refers to {storage!r} instead of a storage")
    size, stride = tuple(size), tuple(stride)
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or min(stride, default=0) < 0 or last >= len(storage):
        raise ValueError("a tensor reaches outside its storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """``torch._utils._rebuild_parameter(_with_state)``: a parameter is its data."""
    return data


_ALLOWED: dict[tuple[str, str], Callable] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
}

_PYTHON2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage: Callable[[str, np.dtype, int], np.ndarray]):
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._opaque: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        module = _PYTHON2_NAMES.get(module, module)  # protocol-2 pickles say __builtin__
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        qualname = f"{module}.{name}"
        if qualname not in self._opaque:
            self._opaque[qualname] = type(name, (Opaque,), {"qualname": qualname})
        return self._opaque[qualname]

    def persistent_load(self, pid):
        # torch.save and torch.package both write ("storage", storage type, key, location,
        # number of elements[, view metadata]) for every tensor storage.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise ValueError(f"unsupported persistent object {pid!r:.80} in a torch archive")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"unsupported storage type {storage_type!r} in a torch archive")
        return self._load_storage(str(key), storage_type.dtype, int(numel))


class TorchArchive:
    """A PyTorch zip archive (``torch.save`` file or ``torch.package``) opened for reading.

    Records are read from the file when needed (a checkpoint's optimizer state is read only if
    its pickle is loaded).

    Args:
        path: the file. Raises ``ValueError`` if it is not a zip archive.
    """

    def __init__(self, path: str | os.PathLike):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path!s} is not a PyTorch zip archive")
        self.path = path
        with zipfile.ZipFile(path) as archive:
            self._names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in self._names}
        if len(roots) != 1:
            raise ValueError(f"{path!s}: expected one top-level folder, found {sorted(roots)}")
        self.root = roots.pop()
        if f"{self.root}/byteorder" in self._names:
            if self._read("byteorder").strip() != b"little":
                raise ValueError(f"{path!s}: big-endian archives are not supported")
        self.is_package = f"{self.root}/.data/version" in self._names

    def names(self) -> list[str]:
        """Record names relative to the archive's top-level folder."""
        return [name[len(self.root) + 1 :] for name in self._names]

    def read_text(self, name: str) -> str:
        """A text record (e.g. ``model/config.yaml`` of a package)."""
        return self._read(name).decode("utf-8")

    def load(self, name: str = "data.pkl") -> Any:
        """Unpickle the record ``name`` with :func:`read_pickle`'s restrictions."""
        storages: dict[str, np.ndarray] = {}
        with zipfile.ZipFile(self.path) as archive:

            def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
                if key not in storages:
                    record = f".data/{key}.storage" if self.is_package else f"data/{key}"
                    raw = self._read(record, archive)
                    if len(raw) != numel * dtype.itemsize:
                        raise ValueError(
                            f"{self.path!s}: storage {key} has {len(raw)} bytes, expected "
                            f"{numel} x {dtype.itemsize}"
                        )
                    storages[key] = np.frombuffer(raw, dtype=dtype)
                return storages[key]

            return read_pickle(self._read(name, archive), load_storage)

    def _read(self, name: str, archive: zipfile.ZipFile | None = None) -> bytes:
        full = f"{self.root}/{name}"
        if full not in self._names:
            raise ValueError(f"{self.path!s} has no record {name!r}")
        if archive is not None:
            return archive.read(full)
        with zipfile.ZipFile(self.path) as opened:
            return opened.read(full)


def read_pickle(data: bytes, load_storage: Callable[[str, np.dtype, int], np.ndarray]) -> Any:
    """Unpickle ``data`` naming no callable but tensor rebuilders and plain containers.

    ``load_storage(key, dtype, numel)`` returns the 1-D array of one tensor storage. Classes
    other than the allowed ones come back as :class:`Opaque` records; nothing is imported.
    """
    return _RestrictedUnpickler(data, load_storage).load()


def module_state_dict(module: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """``Module.state_dict()`` of a pickled torch module (an :class:`Opaque` record): every
    parameter and persistent buffer, named by its dotted path, in torch's order (a module's own
    parameters, then its buffers, then its children's, depth first)."""
    if not isinstance(module, Opaque) or not isinstance(module.state, dict):
        raise ValueError(f"{prefix or 'the root'!r} is not a pickled torch module: {module!r}")
    state = module.state
    if "_modules" not in state or "_parameters" not in state:
        raise ValueError(f"{prefix or 'the root'!r} ({module.qualname}) is not a torch module")
    out: dict[str, np.ndarray] = {}
    transient = state.get("_non_persistent_buffers_set", set())
    for group in ("_parameters", "_buffers"):
        for name, value in state.get(group, {}).items():
            if value is None or (group == "_buffers" and name in transient):
                continue
            if not isinstance(value, np.ndarray):
                raise ValueError(f"{prefix}{name} is {value!r}, not a tensor")
            out[prefix + name] = value
    for name, child in state["_modules"].items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out
