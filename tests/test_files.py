"""atomic_write: a write that fails half way leaves the old file intact and no temporary."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from allegro_ref._files import atomic_write


class FullDisk:
    """A file object that accepts ``capacity`` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, handle, capacity: int):
        self.handle, self.left = handle, capacity

    def write(self, data) -> int:
        if len(data) > self.left:
            self.handle.write(data[: self.left])
            self.left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.fixture
def old_file(tmp_path):
    path = tmp_path / "weights.npz"
    with open(path, "wb") as handle:
        np.savez(handle, w=np.arange(1000.0))
    return path


def assert_only_the_old_file(path):
    with np.load(path) as archive:
        np.testing.assert_array_equal(archive["w"], np.arange(1000.0))
    assert os.listdir(path.parent) == [path.name]


def test_an_exception_half_way_keeps_the_old_file(old_file):
    with pytest.raises(RuntimeError, match="half way"), atomic_write(old_file) as handle:
        handle.write(b"PK\x03\x04 a new archive, half written")
        raise RuntimeError("half way")
    assert_only_the_old_file(old_file)


@pytest.mark.parametrize("capacity", [0, 100, 5000])
def test_a_full_disk_keeps_the_old_file(old_file, capacity):
    with pytest.raises(OSError, match="No space left") as error:
        with atomic_write(old_file) as handle:
            np.savez(FullDisk(handle, capacity), w=np.zeros(10_000))
    assert error.value.errno == errno.ENOSPC
    assert_only_the_old_file(old_file)


def test_a_successful_write_replaces_the_file_and_keeps_its_permissions(old_file):
    os.chmod(old_file, 0o640)
    with atomic_write(old_file, "w", encoding="utf-8") as handle:
        json.dump({"ok": True}, handle)
    assert json.loads(old_file.read_text()) == {"ok": True}
    assert os.stat(old_file).st_mode & 0o777 == 0o640
    assert os.listdir(old_file.parent) == [old_file.name]


def test_a_new_file_gets_the_default_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "new.txt").read_text() == "x"


def test_only_write_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be"), atomic_write(tmp_path / "a", "ab"):
        pass
