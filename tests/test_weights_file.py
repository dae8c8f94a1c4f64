"""The weights file reader under damaged and hostile files (``allegro_ref._weights_file``).

Property tests: random corruptions of a valid file (truncation, flipped bytes, entries removed,
swapped, repeated or renamed, metadata values of random JSON types, forged array headers) always
end in a ``WeightFileError`` naming the file, or in a load of exactly the saved model; never in
another exception, and never after allocating much more than the file's size (tracemalloc) or
taking long. Derandomized, so every run tries the same files.
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allegro_ref.potential import Potential, WeightFileError
from tests.models import tiny_config

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PEAK_BYTES = 16 * 2**20  # the file is ~10 kB; the model it holds a few hundred kB at most
SECONDS = 5.0


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, Potential, bytes]:
    """A valid weights file: (the directory for corrupted copies, the potential, its bytes)."""
    directory = tmp_path_factory.mktemp("weights")
    potential = Potential.from_config(tiny_config(), seed=3)
    path = directory / "good.npz"
    potential.save(path)
    return directory, potential, path.read_bytes()


def _entries(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _archive(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def _check(directory: Path, potential: Potential, data: bytes, exact: bool) -> None:
    """Load ``data``: a ``WeightFileError`` naming the file, or (``exact``: the same model as
    saved; otherwise any model), within the time and memory bounds."""
    path = directory / "damaged.npz"
    path.write_bytes(data)
    start = time.perf_counter()
    tracemalloc.start()
    try:
        loaded = Potential.load(path)
    except WeightFileError as error:
        assert str(path) in str(error)
        loaded = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < SECONDS
    assert peak < PEAK_BYTES, f"{peak} bytes allocated for a {len(data)}-byte file"
    if loaded is not None and exact:
        assert loaded.config == potential.config and loaded.dtype == potential.dtype
        assert set(loaded.model.params) == set(potential.model.params)
        for name, value in potential.model.params.items():
            np.testing.assert_array_equal(loaded.model.params[name], value)


@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files(saved, fraction):
    directory, potential, data = saved
    _check(directory, potential, data[: int(fraction * len(data))], exact=True)


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=4))  # fmt: skip
def test_flipped_bytes(saved, flips):
    directory, potential, data = saved
    damaged = bytearray(data)
    for where, mask in flips:
        damaged[int(where * len(data))] ^= mask
    _check(directory, potential, bytes(damaged), exact=True)


@FUZZ
@given(operation=st.sampled_from(["remove", "swap", "repeat", "rename", "reorder"]),
       picks=st.lists(st.integers(0, 10**6), min_size=2, max_size=2))  # fmt: skip
def test_entries_removed_swapped_repeated_renamed(saved, operation, picks):
    directory, potential, data = saved
    entries = _entries(data)
    i, j = (p % len(entries) for p in picks)
    if operation == "remove":
        del entries[i]
    elif operation == "swap":  # the contents of two entries exchanged, names kept
        (a, x), (b, y) = entries[i], entries[j]
        entries[i], entries[j] = (a, y), (b, x)
    elif operation == "repeat":
        entries.append(entries[i])
    elif operation == "rename":
        entries[i] = (entries[i][0].removesuffix(".npy") + "_x.npy", entries[i][1])
    else:
        entries = entries[i:] + entries[:i]
    _check(directory, potential, _archive(entries), exact=operation == "reorder")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["false", "true", "2", "allegro-2022", "float32", "O", "Cu"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["O", "Cu", "H", "x"]), children, max_size=3),
    max_leaves=6,
)


@FUZZ
@given(data=st.data())
def test_metadata_values_of_any_type(saved, data):
    """A random metadata field (top level, config or parameter listing) set to a random JSON
    value: a clear error or a model (a valid value gives a valid model)."""
    directory, potential, original = saved
    entries = dict(_entries(original))
    metadata = json.loads(str(np.load(io.BytesIO(entries["__metadata__.npy"]))))
    where = data.draw(st.sampled_from(["top", "config", "parameters"]))
    target = metadata if where == "top" else metadata[where]
    key = data.draw(st.sampled_from(sorted(target) + ["new_key"]))
    target[key] = data.draw(JSON_VALUES)
    entries["__metadata__.npy"] = _npy(np.asarray(json.dumps(metadata)))
    _check(directory, potential, _archive(list(entries.items())), exact=False)


@FUZZ
@given(name=st.sampled_from(["center_embed", "readout.0", "tp.0", "per_type_energy_shifts"]),
       shape=st.lists(st.integers(0, 2**40), max_size=3),
       dtype=st.sampled_from(["<f8", "<f4", ">f8", "<i8", "<U4", "|b1", "<c16"]),
       keep_data=st.booleans(), listed=st.booleans())  # fmt: skip
def test_forged_array_headers(saved, name, shape, dtype, keep_data, listed):
    """An array entry whose .npy header claims another shape (up to 2⁴⁰ entries) or dtype,
    with its original data or none; the metadata lists the forged shape too, or not."""
    directory, potential, original = saved
    entries = dict(_entries(original))
    true_npy = entries[f"{name}.npy"]
    data = np.load(io.BytesIO(true_npy)).tobytes() if keep_data else b""
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    entries[f"{name}.npy"] = np.lib.format.magic(1, 0) + buffer.getvalue()[8:] + data
    metadata = json.loads(str(np.load(io.BytesIO(entries["__metadata__.npy"]))))
    if listed:
        metadata["parameters"][name] = list(shape)
    entries["__metadata__.npy"] = _npy(np.asarray(json.dumps(metadata)))
    _check(directory, potential, _archive(list(entries.items())), exact=True)


def test_a_small_file_that_declares_terabytes(saved):
    """Config, listing and array headers all declare widths of a million (terabytes of
    parameters) in a file of a few kB: refused from the entries' sizes, nothing allocated."""
    directory, potential, original = saved
    entries = dict(_entries(original))
    metadata = json.loads(str(np.load(io.BytesIO(entries["__metadata__.npy"]))))
    metadata["config"].update(num_scalar_features=10**6, allegro_mlp_hidden_layers_width=10**6)
    config = type(potential.config).from_dict(metadata["config"])
    shapes = config.parameter_shapes()
    metadata["parameters"] = {k: list(v) for k, v in shapes.items()}
    entries = {"__metadata__.npy": _npy(np.asarray(json.dumps(metadata)))}
    for key, shape in shapes.items():
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        entries[f"{key}.npy"] = np.lib.format.magic(1, 0) + header.getvalue()[8:] + b"\0" * 64
    path = directory / "terabytes.npz"
    path.write_bytes(_archive(list(entries.items())))
    assert math.prod(shapes["latent.0.0"]) * 8 > 10**12
    tracemalloc.start()
    try:
        with pytest.raises(WeightFileError, match="the entry holds 64 bytes of data"):
            Potential.load(path)
        assert tracemalloc.get_traced_memory()[1] < PEAK_BYTES
    finally:
        tracemalloc.stop()


def test_a_directory_that_declares_a_huge_entry(saved):
    """The central directory says an entry holds 2³² - 1 bytes (a zip bomb's lie)."""
    directory, _, original = saved
    data = bytearray(original)
    record = data.rindex(b"PK\x01\x02")  # the last entry's central directory record
    data[record + 24 : record + 28] = struct.pack("<I", 2**32 - 1)  # its uncompressed size
    path = directory / "bomb.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFileError, match="cannot hold: the archive is damaged"):
        Potential.load(path)


def test_metadata_that_is_not_a_json_object(saved):
    directory, _, original = saved
    for text, match in [
        ("{not json", "its metadata is not JSON"),
        ("[1, 2]", "its metadata is a JSON list, not an object"),
        ("null", "its metadata is a JSON NoneType, not an object"),
        ("[" * 100_000 + "]" * 100_000, "its metadata is not JSON"),
    ]:
        entries = dict(_entries(original))
        entries["__metadata__.npy"] = _npy(np.asarray(text))
        path = directory / "metadata.npz"
        path.write_bytes(_archive(list(entries.items())))
        with pytest.raises(WeightFileError, match=match):
            Potential.load(path)
    entries = dict(_entries(original))
    entries["__metadata__.npy"] = _npy(np.zeros(3))
    path.write_bytes(_archive(list(entries.items())))
    with pytest.raises(WeightFileError, match="'__metadata__' is not one string"):
        Potential.load(path)
