"""The one way the package writes a file it must not leave half-written: atomically and durably."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes, *, sync_dir: bool = False) -> None:
    """`data` into `path` whole or not at all: a temporary file beside it, fsynced, then renamed.

    The file gets mode 0o666 less the umask, as ``open()`` gives (``tempfile.mkstemp``
    would give 0o600, unreadable by a group that shares the results). A failure
    leaves no temporary file behind. ``sync_dir`` also makes the rename itself
    durable (the directory is fsynced, where the file system allows it).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    payload = memoryview(data.encode() if isinstance(data, str) else data)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            while len(payload):
                payload = payload[os.write(fd, payload) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Makes renames in `directory` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
