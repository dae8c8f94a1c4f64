"""Fuzzing the official-file loader: random corruptions of the two valid fixtures (a Lightning
checkpoint and a nequip package) always end in a correct load or a ``ValueError`` naming the
file — never another exception, a hang, or a large allocation.

Corruptions: truncation at a random offset, flipped bytes (of the file, and of the pickle or
YAML inside it with the zip rebuilt so its checksums hold), removed and swapped zip records,
and pickle values replaced by values of another type or size (an integer that was a tensor
size or a config value becomes ``None``, a string, a list or another integer).

Each load runs under an address-space limit of 1 GiB above what the process already uses
(``RLIMIT_AS``, Linux), so an attempt to allocate gigabytes from a few bytes of file fails the
test as a ``MemoryError`` instead of exhausting the machine; the hypothesis deadline catches
hangs. Examples are derandomized (the same every run) so CI is reproducible.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import pickletools
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allegro_ref.io import NequipFileError, load_nequip
from allegro_ref.model import AllegroModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FILES = {
    "ckpt": (FIXTURES / "nequip_tiny.ckpt").read_bytes(),
    "nequip.zip": (FIXTURES / "nequip_tiny.nequip.zip").read_bytes(),
}
PICKLES = {"ckpt": "archive/data.pkl", "nequip.zip": "tiny.nequip/model/eager_model.pkl"}
fuzz = settings(
    max_examples=int(os.environ.get("ALLEGRO_REF_FUZZ_EXAMPLES", "40")),
    derandomize=True,
    deadline=5000,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
kinds = st.sampled_from(sorted(FILES))


@contextlib.contextmanager
def address_space_limit(extra_bytes: int = 1 << 30):
    """Limit this process's address space to its current size + ``extra_bytes`` (Linux)."""
    try:
        import resource

        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[0]) * resource.getpagesize()
    except (ImportError, OSError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + extra_bytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def load_or_refuse(tmp_path: Path, kind: str, data: bytes) -> None:
    """Write ``data`` as a ``nequip_tiny.<kind>`` file and load it: it must give a model or a
    ``ValueError`` that names the file."""
    path = tmp_path / f"fuzzed.{kind}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with address_space_limit():
                model = load_nequip(path)
        except NequipFileError as error:
            assert "fuzzed" in str(error), f"the error does not name the file: {error}"
            return
        except ValueError as error:  # only load_nequip's own file-type check may give this
            pytest.fail(f"a ValueError that is not a NequipFileError: {error!r}")
    assert isinstance(model, AllegroModel)


def records(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def rebuild(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    """A valid zip archive (correct checksums) of the given records."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for info, payload in entries:
            archive.writestr(info, payload)
    return out.getvalue()


def replace_record(data: bytes, name: str, payload: bytes) -> bytes:
    return rebuild(
        [(info, payload if info.filename == name else raw) for info, raw in records(data)]
    )


@pytest.mark.parametrize("kind", sorted(FILES))
def test_the_fixtures_load(tmp_path, kind):
    load_or_refuse(tmp_path, kind, FILES[kind])


def test_missing_file_and_not_a_zip(tmp_path):
    with pytest.raises(NequipFileError, match="no such file"):
        load_nequip(tmp_path / "absent.ckpt")
    (tmp_path / "text.ckpt").write_text("not a zip")
    with pytest.raises(NequipFileError, match="text.ckpt is not a PyTorch zip archive"):
        load_nequip(tmp_path / "text.ckpt")


@fuzz
@given(kind=kinds, fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files(tmp_path, kind, fraction):
    data = FILES[kind]
    load_or_refuse(tmp_path, kind, data[: int(fraction * len(data))])


@fuzz
@given(
    kind=kinds,
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8
    ),
)
def test_flipped_bytes_in_the_file(tmp_path, kind, flips):
    data = bytearray(FILES[kind])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    load_or_refuse(tmp_path, kind, bytes(data))


@fuzz
@given(
    kind=kinds,
    record=st.sampled_from(["pickle", "yaml"]),
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4
    ),
    cut=st.none() | st.floats(0.0, 1.0),
)
def test_damaged_pickle_or_yaml_inside_a_valid_zip(tmp_path, kind, record, flips, cut):
    data = FILES[kind]
    name = (
        PICKLES[kind] if record == "pickle" or kind == "ckpt" else "tiny.nequip/model/config.yaml"
    )
    payload = bytearray(dict((i.filename, raw) for i, raw in records(data))[name])
    for where, mask in flips:
        payload[int(where * len(payload))] ^= mask
    if cut is not None:
        payload = payload[: int(cut * len(payload))]
    load_or_refuse(tmp_path, kind, replace_record(data, name, bytes(payload)))


@fuzz
@given(kind=kinds, data=st.data())
def test_removed_and_swapped_records(tmp_path, kind, data):
    entries = records(FILES[kind])
    i = data.draw(st.integers(0, len(entries) - 1), label="record")
    if data.draw(st.booleans(), label="remove"):
        del entries[i]
    else:
        j = data.draw(st.integers(0, len(entries) - 1), label="other record")
        (info_i, raw_i), (info_j, raw_j) = entries[i], entries[j]
        entries[i], entries[j] = (info_i, raw_j), (info_j, raw_i)
    load_or_refuse(tmp_path, kind, rebuild(entries))


_INTEGERS = ("BININT", "BININT1", "BININT2", "LONG1")
_REPLACEMENTS = [
    pickle.NONE,
    pickle.NEWTRUE,
    pickle.EMPTY_LIST,
    pickle.EMPTY_DICT,
    pickle.BINFLOAT + struct.pack(">d", float("nan")),
    pickle.SHORT_BINUNICODE + b"\x01x",
    pickle.BININT + (2**31 - 1).to_bytes(4, "little"),
    pickle.BININT + (-1).to_bytes(4, "little", signed=True),
    pickle.BININT1 + b"\x00",
    pickle.BININT2 + (50000).to_bytes(2, "little"),
]


@fuzz
@given(kind=kinds, data=st.data())
def test_values_of_another_type_or_size_inside_the_pickle(tmp_path, kind, data):
    """Integers in the pickle (tensor sizes, strides, offsets, storage sizes, config values)
    replaced by None, a bool, an empty list or dict, NaN, a string or another integer."""
    name = PICKLES[kind]
    raw = dict((i.filename, r) for i, r in records(FILES[kind]))[name]
    spots = [(pos, op) for op, _, pos in pickletools.genops(raw) if op.name in _INTEGERS]
    n_changes = data.draw(st.integers(1, 3), label="changes")
    chosen = sorted(
        {data.draw(st.integers(0, len(spots) - 1), label="integer") for _ in range(n_changes)},
        reverse=True,
    )
    payload = raw
    for index in chosen:
        pos, op = spots[index]
        end = pos + 1 + {"BININT": 4, "BININT1": 1, "BININT2": 2}.get(op.name, 0)
        if op.name == "LONG1":
            end = pos + 2 + payload[pos + 1]
        new = data.draw(st.sampled_from(_REPLACEMENTS), label="replacement")
        payload = payload[:pos] + new + payload[end:]
    load_or_refuse(tmp_path, kind, replace_record(FILES[kind], name, payload))


# ---------------------------------------------------------------------------------------------
# Each class of bad input once, with the message it gives.
# ---------------------------------------------------------------------------------------------
def refused(tmp_path: Path, kind: str, data: bytes, match: str) -> None:
    path = tmp_path / f"bad.{kind}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NequipFileError, match=match) as error, address_space_limit():
            load_nequip(path)
    assert str(path) in str(error.value)


def _tensor_pickle(size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """``{"t": tensor}`` as torch.save pickles it, on the checkpoint's 1-element storage "0"."""

    def text(value: str) -> bytes:
        return pickle.BINUNICODE + len(value).to_bytes(4, "little") + value.encode()

    def integer(value: int) -> bytes:
        return pickle.BININT + value.to_bytes(4, "little")

    def tup(*items: bytes) -> bytes:
        return pickle.MARK + b"".join(items) + pickle.TUPLE

    storage = tup(
        text("storage"), pickle.GLOBAL + b"torch\nDoubleStorage\n", text("0"), text("cpu"),
        integer(1),
    )  # fmt: skip
    args = tup(
        storage + pickle.BINPERSID, integer(0), tup(*map(integer, size)),
        tup(*map(integer, stride)), pickle.NEWFALSE, pickle.EMPTY_DICT,
    )  # fmt: skip
    tensor = pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n" + args + pickle.REDUCE
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + text("t") + tensor + pickle.SETITEM + b"."


def test_a_tiny_file_declaring_a_huge_tensor(tmp_path):
    """A stride-0 tensor of 10¹⁰ elements on an 8-byte storage: refused before allocating."""
    data = replace_record(FILES["ckpt"], PICKLES["ckpt"], _tensor_pickle((100_000,) * 2, (0, 0)))
    refused(tmp_path, "ckpt", data, r"size \[100000, 100000\], stride \[0, 0\].*beyond its storage")
    data = replace_record(FILES["ckpt"], PICKLES["ckpt"], _tensor_pickle((3,), (1,)))
    refused(tmp_path, "ckpt", data, "beyond its storage of 1 elements")


def test_a_storage_record_of_the_wrong_size(tmp_path):
    data = replace_record(FILES["ckpt"], "archive/data/0", b"\x00" * 16)
    refused(tmp_path, "ckpt", data, "storage 0 has 16 bytes, expected 1 x 8")


def test_a_truncated_pickle(tmp_path):
    raw = dict((i.filename, r) for i, r in records(FILES["ckpt"]))[PICKLES["ckpt"]]
    data = replace_record(FILES["ckpt"], PICKLES["ckpt"], raw[: len(raw) // 2])
    refused(tmp_path, "ckpt", data, "record 'data.pkl' is not a readable pickle")


def test_a_pickle_asking_for_a_huge_memo(tmp_path):
    """LONG_BINPUT 4·10⁹ would make the unpickler allocate a 32 GB memo table."""
    attack = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.LONG_BINPUT + b"\xf0\xff\xff\xff."
    data = replace_record(FILES["ckpt"], PICKLES["ckpt"], attack)
    refused(tmp_path, "ckpt", data, "memo index 4294967280 out of range")


def test_a_damaged_zip(tmp_path):
    data = bytearray(FILES["ckpt"])
    directory = data.rfind(b"PK\x01\x02")  # the last central-directory entry
    data[directory + 20 : directory + 28] = b"\xff" * 8  # its sizes
    refused(tmp_path, "ckpt", bytes(data), "damaged zip archive")
    data = bytearray(FILES["ckpt"])
    data[len(data) // 3] ^= 0xFF  # inside a stored record: its CRC no longer matches
    refused(tmp_path, "ckpt", bytes(data), "damaged|not a readable pickle|non-finite")


@pytest.mark.parametrize(
    "checkpoint, match",
    [
        ([1, 2], "not a nequip training checkpoint"),
        ({"hyper_parameters": {"model": {}, "info_dict": [1]}, "state_dict": {}},
         "hyper_parameters.info_dict is list, not a mapping"),
        ({"hyper_parameters": {"model": [], "info_dict": {}}, "state_dict": {}},
         "hyper_parameters.model is not a mapping"),
        ({"hyper_parameters": {"model": {}}, "state_dict": [1]}, "state_dict is not a mapping"),
    ],
)  # fmt: skip
def test_checkpoint_entries_of_the_wrong_type(tmp_path, checkpoint, match):
    data = replace_record(FILES["ckpt"], PICKLES["ckpt"], pickle.dumps(checkpoint, protocol=2))
    refused(tmp_path, "ckpt", data, match)


@pytest.mark.parametrize(
    "old, new, match",
    [
        (b"l_max: 2", b"l_max: '2'", "model argument l_max = '2' is not an integer"),
        (b"l_max: 2", b"l_max: 1000", "l_max = 1000 is above 12"),
        (b"l_max: 2", b"l_max: true", "model argument l_max = True is not an integer"),
        (b"r_max: 4.0", b"r_max: .nan", r"r_max = nan is not a positive number"),
        (b"training_module:", b"training_module: 3\nx:", "training_module is int, not a mapping"),
        (b"l_max: 2", b"l_max: [2", "config.yaml is not valid YAML"),
    ],
)
def test_package_config_entries_of_the_wrong_type(tmp_path, old, new, match):
    name = "tiny.nequip/model/config.yaml"
    config = dict((i.filename, r) for i, r in records(FILES["nequip.zip"]))[name]
    head, found, tail = config.rpartition(old)  # the last one: in training_module.model
    assert found
    data = replace_record(FILES["nequip.zip"], name, head + new + tail)
    refused(tmp_path, "nequip.zip", data, match)


def test_non_finite_weights_are_refused_with_their_name(tmp_path):
    entries = records(FILES["nequip.zip"])  # every storage filled with NaN bit patterns
    data = rebuild(
        [(info, b"\xff" * len(raw) if ".data/" in info.filename else raw) for info, raw in entries]
    )
    refused(tmp_path, "nequip.zip", data, r"weight \S+ holds non-finite values \(NaN or inf\)")
