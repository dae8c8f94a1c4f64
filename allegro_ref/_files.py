"""Writing files so that a failed write never destroys what was there.

``atomic_write`` writes to a temporary file in the target's
directory, flushes it and forces it to disk (``fsync``), and only then renames it onto the
target (``os.replace``, atomic on POSIX and Windows within one file system). Until that rename
the old file is untouched; after it the new file is complete. If anything fails on the way (an
exception in the caller's code, a full disk, a quota) the temporary file is removed and the
error propagates: the target is either the old file or the new one, never a truncated mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_write"]


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask is process-wide and not thread-safe


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block ends normally.

    Args:
        path: the file to (re)write; its directory must exist.
        mode: ``"wb"`` (bytes) or ``"w"`` (text); only write modes are allowed.
        **open_kwargs: passed to ``open`` (``encoding``, ``newline``, ...).

    Yields:
        the open temporary file (``tmp*`` beside ``path``, named after it).

    Example:
        ```python
        with atomic_write("weights.npz") as handle:
            np.savez(handle, **arrays)
        ```

    On an exception inside the block (or while flushing, syncing or renaming) the temporary
    file is deleted, ``path`` keeps its previous content, and the exception propagates. The
    new file keeps the old file's permissions, or gets those a plain ``open`` would give it
    (honouring the umask), not the 0600 of ``tempfile``.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    descriptor, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, mode, **open_kwargs) as handle:
            try:  # the old file's permissions, or those a plain open would give
                permissions = os.stat(target).st_mode & 0o7777
            except OSError:
                permissions = 0o666 & ~_UMASK
            with contextlib.suppress(OSError, AttributeError):
                os.fchmod(handle.fileno(), permissions)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
