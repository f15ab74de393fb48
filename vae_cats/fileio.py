"""Project paths and the one atomic file write that every output of vae_cats goes through."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
ASSETS_DIR = PACKAGE_DIR / "assets"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace ``path`` so that readers see the old or the new content, never a part.

    ``write`` fills a temporary file in the same folder; it is flushed to disk (fsync), given
    the permissions a plain ``open`` would give (0666 minus the umask, not mkstemp's 0600, so
    a container user can read a checkpoint written by root) and renamed over ``path``
    (atomic on POSIX); the folder entry is then flushed too. Missing parent folders are made.

    Returns:
        ``path``.

    Raises:
        OSError: If the folder cannot be made or written; no temporary file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: Path, payload: bytes) -> Path:
    """``atomic_write`` of a bytes payload."""
    return atomic_write(path, lambda handle: handle.write(payload))


def check_writable(folder: Path) -> None:
    """Check, before any work, that files can be created in ``folder`` (made later if missing).

    The nearest existing ancestor must be a folder in which a subfolder can be created; the
    probe is removed at once, so nothing is left behind.

    Raises:
        OSError: With ``strerror`` saying why (``/proc/x``: no such file or directory; a
            read-only mount; a file where a folder is needed: not a directory).
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    os.rmdir(tempfile.mkdtemp(prefix=".write-check.", dir=existing))


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
