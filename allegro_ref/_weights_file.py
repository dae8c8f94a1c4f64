"""The weights file of `Potential.save` / `Potential.load`: one `.npz` archive, written
atomically, read by one path that validates everything before it allocates anything.

The format (version 2): a zip archive of `.npy` entries, as `numpy.savez` writes it,

- `__metadata__`: a 0-d string array holding a JSON object: `format` (`"allegro_ref.potential"`),
  `format_version` (2), `family` (`"allegro"`: `AllegroConfig` / `AllegroModel`;
  `"allegro-2022"`: `Allegro2022Config` / `Allegro2022Model`), `allegro_ref_version`, `dtype`
  (`"float64"` or `"float32"`, the model's), `config` (the config's `to_dict()`) and
  `parameters` (name -> shape of every parameter);
- one float32 or float64 array per parameter, named as in the config's `parameter_shapes()`.

Version 1 is version 2 without `family`: every version-1 file holds today's family
(`"allegro"`), and reads as before. A file of a later version is refused with a message that
says so.

Reading checks, in this order, each failure a `WeightFileError` (a `ValueError`) that names the
file and what is wrong: the archive's directory (entries, sizes within the file, compression); the
metadata (size, JSON object, format, version, family, dtype, config with its own strict field
checks, the parameter listing); the parameters' names and shapes from the config against the
listing and against each entry's `.npy` header, and each header's shape × item size against the
entry's size. Only then are the arrays read (their CRC-32 checked by `zipfile`), checked finite,
and the model built. A file cannot make the reader allocate much more than its own size: the
config's bounds (`MAX_L_MAX`, ...) keep its derived tables small, and every array it reads has
been checked against the size of the entry that holds it.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import __version__
from ._files import atomic_write
from ._validation import to_host
from .model import Allegro2022Config, Allegro2022Model, AllegroConfig, AllegroModel
from .model.config import _check_integer

__all__ = [
    "FAMILIES",
    "FILE_FORMAT",
    "FILE_FORMAT_VERSION",
    "WeightFileError",
    "read_model",
    "write_model",
]

FILE_FORMAT = "allegro_ref.potential"
FILE_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_METADATA_KEY = "__metadata__"
# The metadata is a few kB of JSON (stored as UTF-32 by NumPy); far more is not a weights file.
_MAX_METADATA_BYTES = 4 * 2**20
# deflate cannot compress by more than ~1032:1; a larger declared ratio is a damaged directory
_MAX_DEFLATE_RATIO = 1100

#: family name -> (config class, model class)
FAMILIES: dict[str, tuple[type, type]] = {
    "allegro": (AllegroConfig, AllegroModel),
    "allegro-2022": (Allegro2022Config, Allegro2022Model),
}


class WeightFileError(ValueError):
    """A file that `Potential.load` cannot read as weights: damaged, of another format or a
    later version, or with metadata or arrays that do not match; the message names the file and
    the entry or field."""


def family_of(model: Any) -> str:
    """The family name of a model (`"allegro"` or `"allegro-2022"`)."""
    for name, (_, model_class) in FAMILIES.items():
        if isinstance(model, model_class):
            return name
    raise TypeError(f"not an allegro_ref model: {type(model).__name__}")


# -------------------------------------------------------------------------------------------
# Writing
# -------------------------------------------------------------------------------------------
def write_model(path: str | os.PathLike, model: Any) -> None:
    """Write ``model`` to ``path`` atomically (`allegro_ref._files.atomic_write`): until the
    new file is complete and on disk, ``path`` keeps its previous content."""
    params = {name: to_host(value) for name, value in model.params.items()}
    metadata = {
        "format": FILE_FORMAT,
        "format_version": FILE_FORMAT_VERSION,
        "family": family_of(model),
        "allegro_ref_version": __version__,
        "dtype": model.dtype,
        "config": model.config.to_dict(),
        "parameters": {name: list(value.shape) for name, value in params.items()},
    }
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **{_METADATA_KEY: np.asarray(json.dumps(metadata))}, **params)


# -------------------------------------------------------------------------------------------
# Reading
# -------------------------------------------------------------------------------------------
def read_model(path: str | os.PathLike) -> Any:
    """The model stored in ``path`` (parameters on NumPy, bit for bit).

    Raises:
        FileNotFoundError: there is no file at ``path`` (other `OSError`s, e.g. permissions,
            as `open` raises them).
        WeightFileError: the file is not a valid weights file (module docstring: what is
            checked).
    """
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(2, "no weights file", name)
    with open(name, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as error:
            raise WeightFileError(
                f"{name!r} is not an allegro_ref weights file (.npz): not a readable zip "
                f"archive ({error})"
            ) from None
        with archive:
            return _Reader(name, archive, size).model()


class _Reader:
    """One reading of one archive; each method checks one thing (module docstring)."""

    def __init__(self, name: str, archive: zipfile.ZipFile, size: int):
        self.name, self.archive, self.size = name, archive, size

    def fail(self, message: str) -> WeightFileError:
        return WeightFileError(f"{self.name!r}: {message}")

    def model(self) -> Any:
        entries = self.entries()
        if _METADATA_KEY not in entries:
            raise self.fail(f"no {_METADATA_KEY!r} entry: not an allegro_ref weights file")
        metadata = self.metadata(entries.pop(_METADATA_KEY))
        family, dtype, config, listed = self.check_metadata(metadata)
        headers = self.check_parameters(config, listed, entries)
        params = {key: self.array(key, entries[key], headers[key]) for key in headers}
        try:
            return FAMILIES[family][1](config, params, dtype)
        except (ValueError, TypeError) as error:
            raise self.fail(f"the parameters do not make a model: {error}") from None

    # ---- the archive ------------------------------------------------------------------------
    def entries(self) -> dict[str, zipfile.ZipInfo]:
        """Entry name (without `.npy`) -> its directory record, each within the file."""
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in self.archive.infolist():
            if not info.filename.endswith(".npy") or info.filename[:-4] in entries:
                raise self.fail(f"unexpected or repeated entry {info.filename!r} in the archive")
            if info.flag_bits & 0x1 or info.compress_type not in (
                zipfile.ZIP_STORED,
                zipfile.ZIP_DEFLATED,
            ):
                raise self.fail(f"entry {info.filename!r} is encrypted or compressed unusually")
            stored = info.compress_type == zipfile.ZIP_STORED
            fits = info.header_offset + info.compress_size <= self.size and (
                info.file_size == info.compress_size
                if stored
                else info.file_size <= _MAX_DEFLATE_RATIO * info.compress_size + 1024
            )
            if not fits:
                raise self.fail(
                    f"entry {info.filename!r} declares {info.file_size} bytes, which this "
                    f"{self.size}-byte file cannot hold: the archive is damaged"
                )
            entries[info.filename[:-4]] = info
        return entries

    def read(self, info: zipfile.ZipInfo, limit: int) -> bytes:
        """The bytes of an entry (at most ``limit``), their CRC-32 checked."""
        try:
            with self.archive.open(info) as stream:
                data = stream.read(limit + 1)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as error:
            raise self.fail(f"entry {info.filename!r} is damaged ({error})") from None
        if len(data) != info.file_size or len(data) > limit:
            raise self.fail(f"entry {info.filename!r} is damaged (its size is not as declared)")
        return data

    def header(self, key: str, data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """(shape, Fortran order, dtype, header length) of the `.npy` bytes of entry ``key``."""
        stream = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except (ValueError, TypeError, SyntaxError, EOFError, struct.error) as error:
            raise self.fail(f"entry {key!r} is not a valid .npy array ({error})") from None
        return tuple(shape), bool(fortran), dtype, stream.tell()

    # ---- the metadata -----------------------------------------------------------------------
    def metadata(self, info: zipfile.ZipInfo) -> dict[str, Any]:
        data = self.read(info, _MAX_METADATA_BYTES)
        shape, _, dtype, offset = self.header(_METADATA_KEY, data)
        if shape != () or dtype.kind != "U" or len(data) - offset != dtype.itemsize:
            raise self.fail(f"entry {_METADATA_KEY!r} is not one string")
        try:
            text = str(np.frombuffer(data, dtype=dtype, count=1, offset=offset)[0])
            metadata = json.loads(text)
        except (ValueError, RecursionError, UnicodeError) as error:
            raise self.fail(f"its metadata is not JSON ({error})") from None
        if not isinstance(metadata, dict):
            kind = type(metadata).__name__
            raise self.fail(f"its metadata is a JSON {kind}, not an object")
        return metadata

    def check_metadata(self, metadata: dict[str, Any]) -> tuple[str, str, Any, dict]:
        """(family, dtype, config, parameter listing) of valid metadata."""
        if metadata.get("format") != FILE_FORMAT:
            raise self.fail(
                f"format {metadata.get('format')!r}, expected {FILE_FORMAT!r}: not an "
                f"allegro_ref weights file"
            )
        version = self.version(metadata.get("format_version"))
        family = metadata.get("family", "allegro") if version == 1 else metadata.get("family")
        if not isinstance(family, str) or family not in FAMILIES:
            raise self.fail(f"metadata 'family' is {family!r}, expected one of {list(FAMILIES)}")
        missing = [key for key in ("config", "dtype", "parameters") if key not in metadata]
        if missing:
            raise self.fail(f"its metadata lacks the entries {missing}")
        dtype = metadata["dtype"]
        if dtype not in ("float64", "float32"):
            raise self.fail(f"metadata 'dtype' is {dtype!r}, expected 'float64' or 'float32'")
        try:
            config = FAMILIES[family][0].from_dict(metadata["config"])
        except (ValueError, TypeError, OverflowError) as error:
            raise self.fail(f"metadata 'config': {error}") from None
        return family, dtype, config, self.listing(metadata["parameters"])

    def version(self, version: Any) -> int:
        if isinstance(version, int) and not isinstance(version, bool):
            if version in _READABLE_VERSIONS:
                return version
            if version > FILE_FORMAT_VERSION:
                raise self.fail(
                    f"format version {version} was written by a later allegro_ref; this one "
                    f"({__version__}) reads versions {list(_READABLE_VERSIONS)}: upgrade it"
                )
        raise self.fail(
            f"format version {version!r} is not one this allegro_ref ({__version__}) reads "
            f"({list(_READABLE_VERSIONS)})"
        )

    def listing(self, listed: Any) -> dict[str, tuple[int, ...]]:
        """The metadata's name -> shape of every parameter."""
        if not isinstance(listed, Mapping):
            raise self.fail(f"metadata 'parameters' must be an object, got {listed!r:.80}")
        out = {}
        for key, shape in listed.items():
            try:
                if not isinstance(shape, list):
                    raise ValueError(f"a list of sizes, got {shape!r:.80}")
                out[key] = tuple(_check_integer(n, "size") for n in shape)
                if any(n < 0 for n in out[key]):
                    raise ValueError("sizes must be >= 0")
            except ValueError as error:
                raise self.fail(f"metadata 'parameters' of {key!r}: {error}") from None
        return out

    # ---- the parameters ---------------------------------------------------------------------
    def check_parameters(
        self, config: Any, listed: dict[str, tuple[int, ...]], entries: dict[str, zipfile.ZipInfo]
    ) -> dict[str, tuple]:
        """Names and shapes: the config's, the listing's and the entries' agree; each entry's
        size is its header's shape × item size. Returns the headers."""
        if set(listed) != set(entries):
            raise self.fail(
                f"inconsistent: its metadata lists parameters {sorted(listed)} but it holds "
                f"arrays {sorted(entries)}"
            )
        try:
            expected = config.parameter_shapes()
        except ValueError as error:
            raise self.fail(f"metadata 'config': {error}") from None
        missing = sorted(set(expected) - set(listed))
        unknown = sorted(set(listed) - set(expected))
        if missing or unknown:
            raise self.fail(
                f"parameters do not match the config: missing {missing}, unknown {unknown}"
            )
        wrong = [
            f"{key}: got {listed[key]}, expected {shape}"
            for key, shape in expected.items()
            if listed[key] != shape
        ]
        if wrong:
            raise self.fail(f"parameters have wrong shapes: {', '.join(wrong)}")
        return {key: self.array_header(key, entries[key], expected[key]) for key in expected}

    def array_header(self, key: str, info: zipfile.ZipInfo, shape: tuple[int, ...]) -> tuple:
        """The header of parameter ``key``, checked against its expected shape and the entry's
        size (reading only the header)."""
        try:
            with self.archive.open(info) as stream:
                start = stream.read(min(info.file_size, 65536 + 16))
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, struct.error) as error:
            raise self.fail(f"entry {info.filename!r} is damaged ({error})") from None
        found, fortran, dtype, offset = self.header(key, start)
        if dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise self.fail(f"parameter {key!r} has dtype {dtype}, expected float32 or float64")
        if found != shape:
            raise self.fail(f"parameter {key!r} has shape {found}, expected {shape}")
        if info.file_size != offset + math.prod(shape) * dtype.itemsize:
            raise self.fail(
                f"parameter {key!r}: the entry holds {info.file_size - offset} bytes of data, "
                f"its shape {shape} needs {math.prod(shape) * dtype.itemsize}"
            )
        return shape, fortran, dtype, offset

    def array(self, key: str, info: zipfile.ZipInfo, header: tuple) -> np.ndarray:
        """Parameter ``key`` as a NumPy array, refused unless finite."""
        shape, fortran, dtype, offset = header
        data = self.read(info, info.file_size)
        values = np.frombuffer(data, dtype=dtype, offset=offset)
        values = values.reshape(shape[::-1]).T if fortran else values.reshape(shape)
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise self.fail(f"parameter {key!r} has {bad} non-finite values (NaN or inf)")
        return values
