"""Files that survive a power cut: the spool, the fleet snapshot and the API tokens file.

A rename is durable only once the directory holding it is fsynced; a file written in place
can be read half-written. One place for both rules.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Readers see the old file or the new one, never a torn one, even after a power cut.
    ``mode`` (e.g. 0o600 for secrets) is set before any byte is written."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
