"""Read the arrays and plain data in a PyTorch zip archive, with NumPy only and running no code.

A PyTorch file is a zip archive holding one pickle (the object tree) and one raw byte file per
tensor storage. Two layouts exist:

- ``torch.save`` (Lightning ``.ckpt`` files): ``<root>/data.pkl`` and ``<root>/data/<key>``;
- ``torch.package`` (nequip ``.nequip.zip`` files): ``<root>/<package>/<resource>.pkl`` and
  ``<root>/.data/<key>.storage``, next to the Python source of the packaged code.

Unpickling an arbitrary pickle runs whatever callables it names, so these files are normally
unsafe to open. `read_pickle` restricts the globals a pickle may name (the method the
``pickle`` documentation gives under "Restricting Globals"): tensors are rebuilt as NumPy arrays
from the raw storage bytes, ``OrderedDict`` and ``set`` become their builtins, and *every other
class* (torch modules, e3nn irreps, ...) becomes an inert `Opaque` record of its pickled
state. Nothing from the file is imported or executed, and torch is not needed.

A pickled ``torch.nn.Module`` is such a record whose state holds ``_parameters``, ``_buffers``,
``_non_persistent_buffers_set`` and ``_modules``; `module_state_dict` walks it to give the
names and arrays ``Module.state_dict()`` would give.

Damaged or hostile files end in ``TorchArchiveError`` (a ``ValueError``) naming the file
and the record, never in another exception or a large allocation: the zip directory is
checked against the file's size, the pickle's opcodes are scanned before it is unpickled (memo
indices bounded by the number of opcodes), and every tensor's size, stride and offset are
checked against the bytes its storage record actually holds before anything is allocated.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Opaque", "TorchArchive", "TorchArchiveError", "module_state_dict", "read_pickle"]

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


# Deflate expands at most ~1032 times; a record claiming more is damaged (or a zip bomb).
_MAX_DEFLATE_RATIO = 1100
# Exceptions a damaged zip archive or pickle raises in the standard library.
_DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,  # encrypted members, recursion
    pickle.UnpicklingError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    ValueError,
    OverflowError,
    UnicodeDecodeError,
)  # not MemoryError: the checks below keep a file from asking for much memory


class TorchArchiveError(ValueError):
    """A PyTorch archive that cannot be read: not a zip archive, damaged, or holding records
    of the wrong type or size. The message names the file and the record."""


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
    Offsets and strides are in elements. Sizes, strides and the offset are checked against
    the storage before anything is allocated: every element must lie inside the storage, and
    the tensor may not hold more elements than its storage (no stride-0 blow-up)."""
    if meta and any(meta.values()):
        raise ValueError(f"tensors with metadata {meta} (conjugate or negative bits) are not read")
    if not isinstance(storage, np.ndarray):
        raise ValueError(f"a tensor refers to {storage!r:.80} instead of a storage")
    if not (_is_index_tuple(size) and _is_index_tuple(stride) and len(size) == len(stride)):
        raise ValueError(f"a tensor has size {size!r:.80} and stride {stride!r:.80}")
    if not (_is_index(offset) and len(size) <= 32):
        raise ValueError(f"a tensor has offset {offset!r:.80} and {len(size)} dimensions")
    size, stride = tuple(size), tuple(stride)
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if numel > len(storage) or last >= len(storage):
        raise ValueError(
            f"a tensor of size {list(size)}, stride {list(stride)} and offset {offset} reaches "
            f"beyond its storage of {len(storage)} elements"
        )
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view)


def _is_index(value) -> bool:
    """A non-negative Python integer (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_index_tuple(values) -> bool:
    return isinstance(values, (tuple, list)) and all(_is_index(v) for v in values)


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
            raise ValueError(f"unsupported storage type {storage_type!r:.80} in a torch archive")
        if not (isinstance(key, str | int) and _is_index(numel)):
            raise ValueError(f"a storage has key {key!r:.80} and {numel!r:.80} elements")
        return self._load_storage(str(key), storage_type.dtype, numel)


class TorchArchive:
    """A PyTorch zip archive (``torch.save`` file or ``torch.package``) opened for reading.

    Records are read from the file when needed (a checkpoint's optimizer state is read only if
    its pickle is loaded).

    Args:
        path: the file. Raises ``TorchArchiveError`` if it is missing, not a zip archive,
            or its zip directory is damaged.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path
        if not os.path.isfile(path):
            raise TorchArchiveError(f"{path!s}: no such file")
        try:
            if not zipfile.is_zipfile(path):
                raise TorchArchiveError(f"{path!s} is not a PyTorch zip archive")
            size = os.path.getsize(path)
            with zipfile.ZipFile(path) as archive:
                self._infos = {info.filename: info for info in archive.infolist()}
        except _DAMAGED as error:
            raise TorchArchiveError(f"{path!s}: damaged zip archive ({error})") from error
        self._names = list(self._infos)
        for info in self._infos.values():
            stored = info.compress_type == zipfile.ZIP_STORED
            limit = info.compress_size if stored else _MAX_DEFLATE_RATIO * info.compress_size
            if info.compress_size > size or info.file_size > limit:
                raise TorchArchiveError(
                    f"{path!s}: damaged zip archive (record {info.filename!r} declares "
                    f"{info.file_size} bytes from {info.compress_size} in a {size}-byte file)"
                )
        roots = {name.split("/", 1)[0] for name in self._names}
        if len(roots) != 1:
            raise TorchArchiveError(
                f"{path!s}: expected one top-level folder, found {sorted(roots)[:10]}"
            )
        self.root = roots.pop()
        if f"{self.root}/byteorder" in self._names:
            if self._read("byteorder").strip() != b"little":
                raise TorchArchiveError(f"{path!s}: big-endian archives are not supported")
        self.is_package = f"{self.root}/.data/version" in self._names

    def names(self) -> list[str]:
        """Record names relative to the archive's top-level folder."""
        return [name[len(self.root) + 1 :] for name in self._names]

    def read_text(self, name: str) -> str:
        """A text record (e.g. ``model/config.yaml`` of a package)."""
        try:
            return self._read(name).decode("utf-8")
        except UnicodeDecodeError as error:
            raise TorchArchiveError(f"{self.path!s}: record {name!r} is not UTF-8 text") from error

    def load(self, name: str = "data.pkl") -> Any:
        """Unpickle the record ``name`` with `read_pickle`'s restrictions."""
        storages: dict[str, np.ndarray] = {}
        data = self._read(name)
        with self._open() as archive:

            def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
                if key not in storages:
                    record = f".data/{key}.storage" if self.is_package else f"data/{key}"
                    full = f"{self.root}/{record}"
                    declared = self._infos[full].file_size if full in self._infos else None
                    if declared is not None and declared != numel * dtype.itemsize:
                        raise TorchArchiveError(
                            f"{self.path!s}: storage {key} has {declared} bytes, expected "
                            f"{numel} x {dtype.itemsize}"
                        )
                    storages[key] = np.frombuffer(self._read(record, archive), dtype=dtype)
                return storages[key]

            try:
                _check_pickle_opcodes(data)
                return read_pickle(data, load_storage)
            except TorchArchiveError:
                raise
            except _DAMAGED as error:
                raise TorchArchiveError(
                    f"{self.path!s}: record {name!r} is not a readable pickle of tensors and "
                    f"plain data ({type(error).__name__}: {error!s:.200})"
                ) from error

    def _open(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except _DAMAGED as error:
            raise TorchArchiveError(f"{self.path!s}: damaged zip archive ({error})") from error

    def _read(self, name: str, archive: zipfile.ZipFile | None = None) -> bytes:
        full = f"{self.root}/{name}"
        if full not in self._infos:
            raise TorchArchiveError(f"{self.path!s} has no record {name!r}")
        try:
            if archive is not None:
                return archive.read(full)
            with self._open() as opened:
                return opened.read(full)
        except _DAMAGED as error:
            raise TorchArchiveError(
                f"{self.path!s}: record {name!r} is damaged ({type(error).__name__}: {error})"
            ) from error


def _check_pickle_opcodes(data: bytes) -> None:
    """Scan a pickle without running it: every opcode must parse, and memo indices must stay
    below the number of opcodes (the unpickler would otherwise size its memo from an index
    the file states: gigabytes from four bytes)."""
    n_ops = 0
    for opcode, argument, _ in pickletools.genops(data):
        n_ops += 1
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"):
            if not (isinstance(argument, int) and 0 <= argument <= len(data)):
                raise ValueError(f"memo index {argument!r:.40} out of range")
        if opcode.name == "STOP":
            break


def read_pickle(data: bytes, load_storage: Callable[[str, np.dtype, int], np.ndarray]) -> Any:
    """Unpickle ``data`` naming no callable but tensor rebuilders and plain containers.

    ``load_storage(key, dtype, numel)`` returns the 1-D array of one tensor storage. Classes
    other than the allowed ones come back as `Opaque` records; nothing is imported.
    """
    return _RestrictedUnpickler(data, load_storage).load()


def module_state_dict(module: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """``Module.state_dict()`` of a pickled torch module (an `Opaque` record): every
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
