"""Reading a data source: a folder, .tar (.tar.gz, .tgz) or .zip of image files.

Nothing is extracted to disk and no link is followed. Every entry of a source that is not a
folder is either returned with its bytes or returned as a ``Rejection`` with its reason, so
no file leaves an ingest unaccounted for. One check (``check_entry``) decides for all three
kinds of source:

- ``unsafe path``: an archive member with an absolute path, a drive letter or a ``..``
  component;
- ``link``: an archive member that is a symbolic or hard link, or a symlink in a folder that
  points outside the folder;
- ``not a regular file``: a device, fifo or socket;
- ``file too large``: more than ``max_file_bytes`` bytes, refused before reading;
- ``unsupported file``: neither an image suffix (``IMAGE_SUFFIXES``) nor an image signature
  in its first bytes (say ``notes.txt``); a file without a suffix whose bytes start like an
  image (a JPEG named ``cat``) is read and decoded by its content;
- ``unreadable``: the operating system or the archive could not deliver its bytes.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vae_cats.fileio import ASSETS_DIR, PROJECT_DIR

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# First bytes of the formats above: how a file without an image suffix is recognised.
IMAGE_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
SIGNATURE_BYTES = 16

BUNDLED_SAMPLE = ASSETS_DIR / "cats_sample.tar"
SHARED_CATS64 = PROJECT_DIR.parent / "shared" / "datasets" / "cats64" / "cats64.tar"
# The DVC-tracked raw image set (data.dvc); filled by `make data`.
DATA_RAW = PROJECT_DIR / "data" / "raw"
MAX_FILE_BYTES = 64 * 1024 * 1024

UNSAFE_PATH = "unsafe path"
LINK = "link"
NOT_REGULAR = "not a regular file"
TOO_LARGE = "file too large"
UNSUPPORTED = "unsupported file"
UNREADABLE = "unreadable"

# Entry kinds: a regular file (or a symlink to one inside the folder), a link that is not
# followed, anything else that is not a folder.
FILE, LINKED, OTHER = "file", "link", "other"


@dataclass(frozen=True)
class Rejection:
    """One file excluded from an ingest: its name in the source, a reason, a detail."""

    name: str
    reason: str
    detail: str = ""


@dataclass
class SourceFiles:
    """What reading a source gave: (name, bytes) of every file that may be an image, and every
    other entry as a rejection; together they are every file of the source."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def num_files(self) -> int:
        return len(self.files) + len(self.rejections)


@dataclass(frozen=True)
class Entry:
    """One entry of a source that is not a folder, before its bytes are read.

    Attributes:
        name: Path inside the source, ``/``-separated.
        kind: ``FILE``, ``LINKED`` or ``OTHER``.
        size: Size in bytes as the source declares it.
        read: ``read(limit)`` gives the first ``limit`` bytes, or all of them for -1.
        detail: For a link, where it points; for ``OTHER``, what it is.
    """

    name: str
    kind: str
    size: int
    read: Callable[[int], bytes]
    detail: str = ""


def resolve_source(source: str | None) -> Path:
    """Path of a data source.

    ``None`` gives the DVC-tracked raw set ``data/raw/`` when it holds files, else the full
    cats64 archive beside the project (``../shared``) when present, else the bundled sample;
    ``"bundled"`` gives the sample of 1,024 real faces shipped in the package; anything else
    is taken as a path.
    """
    if source is None:
        if DATA_RAW.is_dir() and any(DATA_RAW.iterdir()):
            return DATA_RAW
        return SHARED_CATS64 if SHARED_CATS64.is_file() else BUNDLED_SAMPLE
    return BUNDLED_SAMPLE if source == "bundled" else Path(source)


def require_exists(source: Path) -> None:
    """Raises: FileNotFoundError naming ``source`` and how to get data, if it is missing."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such data source (try `make data` or `dvc pull`)")


def unsafe_name(name: str) -> str | None:
    """Why an archive member name may not be used (absolute, drive letter, ``..``), or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return f"absolute path {name!r}"
    if ".." in PurePosixPath(posix).parts:
        return f"'..' in path {name!r}"
    return None


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes of a file carry the signature of a supported image format."""
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return webp or head.startswith(IMAGE_SIGNATURES)


def check_entry(entry: Entry, max_file_bytes: int) -> Rejection | None:
    """The one safety check of every entry of every kind of source: why it may not be read
    (unsafe path, link, not a regular file, too large), or None."""
    why = unsafe_name(entry.name)
    if why is not None:
        return Rejection(entry.name, UNSAFE_PATH, why)
    if entry.kind == LINKED:
        return Rejection(entry.name, LINK, entry.detail)
    if entry.kind == OTHER:
        return Rejection(entry.name, NOT_REGULAR, entry.detail)
    if entry.size > max_file_bytes:
        return Rejection(entry.name, TOO_LARGE, f"{entry.size} bytes > {max_file_bytes}")
    return None


def _take(entry: Entry, max_file_bytes: int, out: SourceFiles) -> None:
    rejection = check_entry(entry, max_file_bytes)
    if rejection is not None:
        out.rejections.append(rejection)
        return
    try:
        named_image = entry.name.lower().endswith(IMAGE_SUFFIXES)
        if not named_image and not looks_like_image(entry.read(SIGNATURE_BYTES)):
            detail = "no image suffix and no image signature in its first bytes"
            out.rejections.append(Rejection(entry.name, UNSUPPORTED, detail))
            return
        out.files.append((entry.name, entry.read(-1)))
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as err:
        detail = getattr(err, "strerror", None) or str(err) or type(err).__name__
        out.rejections.append(Rejection(entry.name, UNREADABLE, detail))


def _no_bytes(limit: int) -> bytes:
    return b""  # links and special files are rejected before anything is read


def _path_reader(path: Path) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        with path.open("rb") as handle:
            return handle.read(limit)

    return read


def _folder_entry(root: Path, real_root: Path, path: Path) -> Entry | None:
    name = path.relative_to(root).as_posix()
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(real_root):
            detail = f"symlink points outside the input folder: {target}"
            return Entry(name, LINKED, 0, _no_bytes, detail)
        if target.is_dir():
            return None  # inside the folder: os.walk reaches its files anyway
    try:
        info = path.stat()
    except OSError:  # a dangling symlink: reading it names the error
        return Entry(name, FILE, 0, _path_reader(path))
    if not stat.S_ISREG(info.st_mode):
        return Entry(name, OTHER, 0, _no_bytes, f"file mode {stat.filemode(info.st_mode)}")
    return Entry(name, FILE, info.st_size, _path_reader(path))


def _folder_entries(root: Path) -> Iterator[Entry]:
    real_root = root.resolve()
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(folder)
        # Symlinks to folders are listed among dirnames and never entered by os.walk.
        linked_dirs = [d for d in dirnames if (base / d).is_symlink()]
        for entry in sorted(filenames) + linked_dirs:
            found = _folder_entry(root, real_root, base / entry)
            if found is not None:
                yield found


def _slice_reader(view: mmap.mmap, start: int, end: int) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        return view[start : end if limit < 0 else min(end, start + limit)]

    return read


def _tar_reader(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        handle = archive.extractfile(member)
        return handle.read(limit) if handle is not None else b""

    return read


def _tar_entries(archive: tarfile.TarFile, view: mmap.mmap | None) -> Iterator[Entry]:
    for member in archive:
        if member.isdir():
            continue
        if member.issym() or member.islnk():
            kind = "symbolic" if member.issym() else "hard"
            detail = f"{kind} link to {member.linkname!r} (not followed)"
            yield Entry(member.name, LINKED, 0, _no_bytes, detail)
        elif not member.isfile():
            yield Entry(member.name, OTHER, 0, _no_bytes, "device or fifo member")
        elif view is not None and not member.issparse():
            end = member.offset_data + member.size
            reader = _slice_reader(view, member.offset_data, end)
            yield Entry(member.name, FILE, member.size, reader)
        else:
            yield Entry(member.name, FILE, member.size, _tar_reader(archive, member))


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[int], bytes]:
    def read(limit: int) -> bytes:
        try:
            with archive.open(info) as handle:
                return handle.read(limit)
        except (RuntimeError, NotImplementedError) as err:  # encrypted; unknown compression
            raise OSError(str(err)) from err

    return read


def _zip_entries(archive: zipfile.ZipFile) -> Iterator[Entry]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            detail = "symbolic link (not followed)"
            yield Entry(info.filename, LINKED, 0, _no_bytes, detail)
        else:
            yield Entry(info.filename, FILE, info.file_size, _zip_reader(archive, info))


def read_source(source: Path, max_file_bytes: int = MAX_FILE_BYTES) -> SourceFiles:
    """Read every file of a folder, .tar (.tar.gz, .tgz) or .zip that may be an image.

    Returns:
        The bytes of every file with an image suffix or signature, and every other entry
        (see the module docstring) as a rejection.

    Raises:
        FileNotFoundError: If source does not exist.
        ValueError: If source is not a folder, tar or zip archive, or the archive is damaged.
    """
    require_exists(source)
    out = SourceFiles()
    if source.is_dir():
        for entry in _folder_entries(source):
            _take(entry, max_file_bytes, out)
        return out
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                for entry in _zip_entries(archive):
                    _take(entry, max_file_bytes, out)
            return out
        if tarfile.is_tarfile(source):
            _read_tar(source, max_file_bytes, out)
            return out
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{source}: unreadable archive: {err}") from err
    raise ValueError(f"{source}: not a folder, .tar or .zip of images")


def _read_tar(source: Path, max_file_bytes: int, out: SourceFiles) -> None:
    with tarfile.open(source) as archive:
        # An uncompressed tar is mapped once and members are sliced from it, which is much
        # faster than extractfile(); compressed tars are streamed.
        plain = isinstance(archive.fileobj, io.BufferedReader)
        with open(source, "rb") as handle:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if plain else None
            try:
                for entry in _tar_entries(archive, view):
                    _take(entry, max_file_bytes, out)
            finally:
                if view is not None:
                    view.close()


def source_stamp(source: Path) -> str:
    """sha256 over the size and modification time of ``source`` (an archive) or of every file
    under it (a folder, with relative paths): cheap to compute, and it changes when a
    ``dvc pull`` or an edit changes the source, so a stale ingest is never reused.

    Raises:
        FileNotFoundError: If source does not exist.
    """
    require_exists(source)
    if source.is_dir():
        entries = sorted(
            (str(path.relative_to(source)), path.stat())
            for path in source.rglob("*")
            if path.is_file()
        )
    else:
        entries = [(source.name, source.stat())]
    lines = [f"{name} {info.st_size} {info.st_mtime_ns}" for name, info in entries]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
