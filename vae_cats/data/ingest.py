"""Hardened ingest: turn a folder, .tar or .zip of photos into a deduplicated, split tensor file.

``ingest`` writes three files into ``processed_dir``:

- ``images.pt``: uint8 tensor (N, 3, S, S), one row per kept image;
- ``manifest.json``: for each row its source name, the sha256 of its decoded pixels, its
  split and the names of the duplicates dropped in its favour; every excluded file with its
  reason; and the ``data_hash`` that identifies this content and split;
- ``ingest_report.json``: the summary (kept, rejected per reason) and every excluded file
  with its reason and detail, as printed by ``python -m vae_cats.data.ingest``.

Bad input never stops the ingest of the good files; each bad file is excluded and reported:

- ``empty file``: zero bytes;
- ``not an image``: no image format recognises it (say a text file named ``.jpg``);
- ``truncated image``: the data ends before the image does;
- ``corrupt image``: recognised, but the decoder fails;
- ``too many pixels``: declared width x height above ``max_pixels``, read from the header
  before any pixel is decoded (decompression bombs);
- ``file too large``: more than ``max_file_bytes`` bytes, rejected before reading;
- ``wrong size``: not ``image_size`` square, when ``wrong_size="reject"``;
- ``unsafe path``: archive member with an absolute path or a ``..`` component (never
  extracted: nothing is ever written outside ``processed_dir``);
- ``link``: archive member that is a symbolic or hard link, or a symlink in a folder that
  points outside the folder (never followed);
- ``exact duplicate``: the same decoded pixels as a kept image;
- ``near duplicate``: the same photo re-encoded: DCT perceptual hash within
  ``near_duplicate_bits`` bits of a kept image.

Pixels are normalised before hashing: transparency (palette ``tRNS``, RGBA, LA) is
composited onto ``BACKGROUND`` (white), 16-bit samples are scaled to 8 bits
(``round(v * 255 / 65535)``), EXIF orientation is applied, everything else is converted to
RGB. With ``wrong_size="resize"`` an image of another size is centre-cropped to a square and
resized (bicubic, antialiased).

Duplicates and near duplicates are removed before the split, so no photo sits in two splits;
of each group the image with the smallest pixel sha256 is kept. The split depends only on the
kept pixels and the seed, not on file names or their order.

Speed: the archive is read once, byte-identical files are decoded once, JPEGs are decoded by
libjpeg-turbo (``torchvision.io.decode_jpeg``) in a thread pool, other formats by Pillow.

Command line::

    python -m vae_cats.data.ingest SOURCE [--out data/processed] [--seed 42] [--wrong-size reject]

prints the summary table; a missing source or one without a usable image is a one-line
error and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import logging
import math
import mmap
import os
import re
import stat
import sys
import tarfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from vae_cats.fileio import ASSETS_DIR, PROJECT_DIR, atomic_write_bytes

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
BUNDLED_SAMPLE = ASSETS_DIR / "cats_sample.tar"
SHARED_CATS64 = PROJECT_DIR.parent / "shared" / "datasets" / "cats64" / "cats64.tar"
# The DVC-tracked raw image set (data.dvc); filled by `make data`.
DATA_RAW = PROJECT_DIR / "data" / "raw"

# Transparent pixels are composited onto white before RGB conversion.
BACKGROUND = (255, 255, 255)
# 4096 x 4096: a decoded RGB image of at most 48 MiB; cat photos are far smaller.
MAX_PIXELS = 4096 * 4096
MAX_FILE_BYTES = 64 * 1024 * 1024
# Re-encoded or slightly re-cropped copies of one cats64 photo lie within 0-6 pHash bits of
# each other, but so do a few different cats with similar markings; requiring a thumbnail
# correlation of 0.95 keeps those apart (checked by eye on cats64 pairs).
NEAR_DUPLICATE_BITS = 6
MIN_CORRELATION = 0.95
WRONG_SIZE_ACTIONS = ("resize", "reject")

EMPTY = "empty file"
NOT_IMAGE = "not an image"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"
TOO_MANY_PIXELS = "too many pixels"
TOO_LARGE = "file too large"
WRONG_SIZE = "wrong size"
UNSAFE_PATH = "unsafe path"
LINK = "link"
EXACT_DUPLICATE = "exact duplicate"
NEAR_DUPLICATE = "near duplicate"
REASONS = (
    EMPTY,
    NOT_IMAGE,
    TRUNCATED,
    CORRUPT,
    TOO_MANY_PIXELS,
    TOO_LARGE,
    WRONG_SIZE,
    UNSAFE_PATH,
    LINK,
    EXACT_DUPLICATE,
    NEAR_DUPLICATE,
)
_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


class NoUsableImageError(ValueError):
    """The source holds no image that survived validation."""


class Rejected(Exception):
    """One file excluded from the ingest, with a reason from ``REASONS`` and a detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Rejection:
    name: str
    reason: str
    detail: str = ""


@dataclass
class SourceFiles:
    """What reading a source gave: (name, bytes) of candidate images, early rejections, and
    how many entries were ignored for not having an image suffix."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    num_ignored: int = 0


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


# --------------------------------------------------------------------------- reading


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def unsafe_member_name(name: str) -> str | None:
    """Why an archive member name may not be used (absolute, drive letter, ``..``), or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return f"absolute path {name!r}"
    if ".." in PurePosixPath(posix).parts:
        return f"'..' in path {name!r}"
    return None


def _read_folder(root: Path, max_file_bytes: int) -> SourceFiles:
    out = SourceFiles()
    real_root = root.resolve()
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(folder)
        for entry in sorted(dirnames) + sorted(filenames):
            path = base / entry
            name = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    out.rejections.append(
                        Rejection(name, LINK, f"symlink points outside the input folder: {target}")
                    )
                    continue
                if target.is_dir():
                    continue  # inside the folder: os.walk reaches its files anyway
            elif entry in dirnames:
                continue
            if not _is_image_name(entry):
                out.num_ignored += 1
                continue
            try:
                size = path.stat().st_size
                if size > max_file_bytes:
                    raise Rejected(TOO_LARGE, f"{size} bytes > {max_file_bytes}")
                out.files.append((name, path.read_bytes()))
            except Rejected as err:
                out.rejections.append(Rejection(name, err.reason, err.detail))
            except OSError as err:
                out.rejections.append(Rejection(name, CORRUPT, f"unreadable: {err.strerror}"))
    return out


def _read_tar(source: Path, max_file_bytes: int) -> SourceFiles:
    out = SourceFiles()
    with tarfile.open(source) as archive:
        # An uncompressed tar is mapped once and members are sliced from it, which is much
        # faster than extractfile(); compressed tars are streamed.
        plain = archive.fileobj is not None and isinstance(archive.fileobj, io.BufferedReader)
        with open(source, "rb") as handle:
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if plain else None
            try:
                for member in archive:
                    _take_tar_member(archive, member, view, max_file_bytes, out)
            finally:
                if view is not None:
                    view.close()
    return out


def _take_tar_member(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    view: mmap.mmap | None,
    max_file_bytes: int,
    out: SourceFiles,
) -> None:
    name = member.name
    if member.isdir():
        return
    why = unsafe_member_name(name)
    if why is not None:
        out.rejections.append(Rejection(name, UNSAFE_PATH, why))
        return
    if member.issym() or member.islnk():
        kind = "symbolic" if member.issym() else "hard"
        out.rejections.append(
            Rejection(name, LINK, f"{kind} link to {member.linkname!r} (not followed)")
        )
        return
    if not member.isfile() or not _is_image_name(name):
        out.num_ignored += 1
        return
    if member.size > max_file_bytes:
        out.rejections.append(
            Rejection(name, TOO_LARGE, f"{member.size} bytes > {max_file_bytes}")
        )
        return
    if view is not None and not member.issparse():
        out.files.append((name, view[member.offset_data : member.offset_data + member.size]))
        return
    handle = archive.extractfile(member)
    out.files.append((name, handle.read() if handle is not None else b""))


def _read_zip(source: Path, max_file_bytes: int) -> SourceFiles:
    out = SourceFiles()
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir():
                continue
            why = unsafe_member_name(name)
            if why is not None:
                out.rejections.append(Rejection(name, UNSAFE_PATH, why))
            elif stat.S_ISLNK(info.external_attr >> 16):
                out.rejections.append(Rejection(name, LINK, "symbolic link (not followed)"))
            elif not _is_image_name(name):
                out.num_ignored += 1
            elif info.file_size > max_file_bytes:
                out.rejections.append(
                    Rejection(name, TOO_LARGE, f"{info.file_size} bytes > {max_file_bytes}")
                )
            else:
                try:
                    out.files.append((name, archive.read(info)))
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    out.rejections.append(Rejection(name, CORRUPT, f"bad zip member: {err}"))
    return out


def _require_exists(source: Path) -> None:
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such data source (try `make data` or `dvc pull`)")


def read_source(source: Path, max_file_bytes: int = MAX_FILE_BYTES) -> SourceFiles:
    """Read every image-suffixed regular file of a folder, .tar (.tar.gz, .tgz) or .zip.

    Nothing is extracted to disk and no link is followed: archive members with unsafe paths,
    link members and symlinks leaving the folder are returned as rejections.

    Raises:
        FileNotFoundError: If source does not exist.
        ValueError: If source is not a folder, tar or zip archive.
    """
    _require_exists(source)
    if source.is_dir():
        return _read_folder(source, max_file_bytes)
    if zipfile.is_zipfile(source):
        return _read_zip(source, max_file_bytes)
    try:
        if tarfile.is_tarfile(source):
            return _read_tar(source, max_file_bytes)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{source}: unreadable archive: {err}") from err
    raise ValueError(f"{source}: not a folder, .tar or .zip of images")


# --------------------------------------------------------------------------- decoding

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header without decoding, or None when the marker
    structure cannot be followed to a frame header."""
    i, n = 2, len(raw)
    while i + 4 <= n:
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
        elif marker in _SOF_MARKERS:
            if i + 9 > n:
                return None
            return int.from_bytes(raw[i + 7 : i + 9], "big"), int.from_bytes(raw[i + 5 : i + 7])
        elif marker == 0xDA:
            return None
        else:
            i += 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
    return None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise Rejected(TOO_MANY_PIXELS, f"{width}x{height} > {max_pixels} pixels")


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3): 16-bit scaled, transparency composited onto ``BACKGROUND``."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.uint32 if image.mode == "I" else None).astype(np.int64)
        grey = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(canvas, rgba)
    return np.asarray(image.convert("RGB"))


def decode_with_pillow(raw: bytes, max_pixels: int = MAX_PIXELS) -> Tensor:
    """Decode any Pillow format to uint8 RGB (3, H, W), checking the size before decoding.

    Raises:
        Rejected: With reason not an image, too many pixels, truncated or corrupt image.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(raw)) as image:
                _check_pixels(image.width, image.height, max_pixels)
                for warning in caught:
                    if issubclass(warning.category, Image.DecompressionBombWarning):
                        raise Rejected(TOO_MANY_PIXELS, str(warning.message))
                image.load()
                pixels = _to_rgb_array(ImageOps.exif_transpose(image))
        except Image.DecompressionBombError as err:
            raise Rejected(TOO_MANY_PIXELS, str(err)) from err
        except UnidentifiedImageError as err:
            raise Rejected(NOT_IMAGE, "no image format recognises it") from err
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            truncated = "truncated" in str(err) or isinstance(err, EOFError)
            raise Rejected(TRUNCATED if truncated else CORRUPT, str(err)) from err
    for warning in caught:
        log.debug("pillow: %s", warning.message)
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def has_torchvision() -> bool:
    """Whether the libjpeg-turbo fast path is available; the slim predict image has no
    torchvision, and Pillow decodes everything there."""
    return importlib.util.find_spec("torchvision") is not None


def _decode_jpegs(raws: list[bytes]) -> list[Tensor | str]:
    """libjpeg-turbo decode of each JPEG to RGB (3, H, W); an error message where it fails."""
    from torchvision.io import ImageReadMode, decode_jpeg

    out: list[Tensor | str] = []
    for raw in raws:
        try:
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            out.append(decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True))
        except RuntimeError as err:
            out.append(str(err).rsplit(", ", 1)[-1])
    return out


def fit_size(pixels: Tensor, image_size: int, wrong_size: str) -> Tensor:
    """Return (3, S, S) uint8: unchanged when already S x S; else centre-cropped to a square
    and resized (bicubic, antialiased) for ``wrong_size="resize"``.

    Raises:
        Rejected: ``wrong size`` for ``wrong_size="reject"``.
    """
    _, height, width = pixels.shape
    if (height, width) == (image_size, image_size):
        return pixels
    if wrong_size == "reject":
        raise Rejected(WRONG_SIZE, f"{width}x{height}, expected {image_size}x{image_size}")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[:, top : top + side, left : left + side].float().unsqueeze(0)
    resized = F.interpolate(
        square, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.squeeze(0).round().clamp(0, 255).to(torch.uint8)


def decode_many(
    raws: list[bytes],
    image_size: int = 64,
    wrong_size: str = "resize",
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
) -> list[Tensor | Rejected]:
    """Validate and decode each raw file to uint8 RGB (3, S, S), or the reason it is rejected.

    JPEGs whose header passes the pixel limit are decoded in a pool of ``workers`` threads
    (default: up to 8, at most the CPU count); everything else, and any JPEG libjpeg refuses,
    goes through Pillow.
    """
    results: list[Tensor | Rejected | None] = [None] * len(raws)
    jpeg_index: list[int] = []
    for i, raw in enumerate(raws):
        if not raw:
            results[i] = Rejected(EMPTY, "0 bytes")
            continue
        size = jpeg_size(raw) if raw[:3] == b"\xff\xd8\xff" else None
        if size is None:
            continue
        try:
            _check_pixels(*size, max_pixels)
            jpeg_index.append(i)
        except Rejected as err:
            results[i] = err
    if not has_torchvision():
        jpeg_index = []
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [chunk for k in range(workers) if (chunk := jpeg_index[k::workers])]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION)
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = pool.map(_decode_jpegs, [[raws[i] for i in chunk] for chunk in chunks])
            for chunk, outputs in zip(chunks, decoded, strict=True):
                for i, output in zip(chunk, outputs, strict=True):
                    results[i] = output if isinstance(output, Tensor) else None
    final: list[Tensor | Rejected] = []
    for raw, result in zip(raws, results, strict=True):
        try:
            if isinstance(result, Rejected):
                raise result
            pixels = result if result is not None else decode_with_pillow(raw, max_pixels)
            final.append(fit_size(pixels, image_size, wrong_size))
        except Rejected as err:
            final.append(err)
    return final


# --------------------------------------------------------------------------- duplicates


def _dct_matrix(n: int) -> Tensor:
    k = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi / n * (k[None, :] + 0.5) * k[:, None])
    basis[0] /= math.sqrt(2)
    return (basis * math.sqrt(2 / n)).float()


def perceptual_hash(images: Tensor) -> tuple[np.ndarray, Tensor]:
    """64-bit DCT hash (pHash) and a normalised 16 x 16 grey thumbnail of uint8 images
    (N, 3, H, W).

    Grey levels (ITU-R 601 luma) are averaged down to 32 x 32 and transformed by a 2-D DCT-II;
    bit i says whether the i-th of the 8 x 8 lowest frequencies exceeds their median (the DC
    term left out of the median). References: Zauner (2010), Implementation and benchmarking
    of perceptual image hash functions.

    Returns:
        Hashes as uint64, shape (N,); thumbnails with zero mean and unit norm, shape (N, 256),
        whose dot product is the correlation of two images.
    """
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    dct = _dct_matrix(32)
    hashes, thumbs = [], []
    for chunk in images.split(1024):
        grey = (F.adaptive_avg_pool2d(chunk.float(), 32) * weights).sum(1)
        low = (dct @ grey @ dct.T)[:, :8, :8].reshape(len(chunk), 64)
        bits = (low > low[:, 1:].median(dim=1, keepdim=True).values).numpy().astype(np.uint8)
        hashes.append(np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel())
        thumb = F.avg_pool2d(grey.unsqueeze(1), 2).flatten(1)
        thumb = thumb - thumb.mean(1, keepdim=True)
        thumbs.append(thumb / thumb.norm(dim=1, keepdim=True).clamp_min(1e-6))
    if not hashes:
        return np.zeros(0, dtype=np.uint64), torch.zeros(0, 256)
    return np.concatenate(hashes), torch.cat(thumbs)


def near_duplicate_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every i < j whose hashes differ in at most ``max_bits`` bits."""
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), 1024):
        block = hashes[start : start + 1024, None] ^ hashes[None, :]
        distance = np.bitwise_count(block)
        rows, cols = np.nonzero(distance <= max_bits)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + r < c:
                pairs.append((start + r, c, int(distance[r, c])))
    return pairs


def group_near_duplicates(
    images: Tensor, max_bits: int = NEAR_DUPLICATE_BITS, min_correlation: float = MIN_CORRELATION
) -> list[int]:
    """Group the same photo re-encoded: images whose pHashes differ in at most ``max_bits``
    bits and whose 16 x 16 grey thumbnails correlate at least ``min_correlation``.

    On cats64, pHash alone within 6 bits also pairs different cats with similar markings; the
    thumbnail correlation removes those.

    Returns:
        For each image the index of its group's root (connected components of near-duplicate
        pairs); the root is the smallest index of its group.
    """
    hashes, thumbs = perceptual_hash(images)
    parent = list(range(len(images)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_duplicate_pairs(hashes, max_bits):
        if float(thumbs[i] @ thumbs[j]) < min_correlation:
            continue
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(images))]


# --------------------------------------------------------------------------- split, files


def split_assignment(
    hashes: list[str], seed: int, val_fraction: float, test_fraction: float
) -> list[str]:
    """Seeded split of distinct images, given their pixel hashes in any order.

    The hashes are sorted first, so the result depends only on the set of images and the
    seed. Returns the split name of each hash in the order given.
    """
    ordered = sorted(hashes)
    permutation = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(ordered) * test_fraction)
    n_val = round(len(ordered) * val_fraction)
    split_of: dict[str, str] = {}
    for rank, index in enumerate(permutation.tolist()):
        split_of[ordered[index]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        )
    return [split_of[h] for h in hashes]


def data_hash(manifest: dict[str, Any]) -> str:
    """sha256 over the (pixel hash, split) pairs and image size: changes exactly when the
    stored content or its split changes."""
    lines = [f"{manifest['image_size']}"] + [
        f"{r['sha256']} {r['split']}" for r in manifest["images"]
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def check_settings(
    image_size: int, val_fraction: float, test_fraction: float, wrong_size: str
) -> None:
    """The checks of ``ingest``'s settings, also run where they are configured (the data
    module), so a bad value stops a run before anything is read.

    Raises:
        ValueError: Naming the setting that is out of range.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must lie in [0, 1), got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )
    if wrong_size not in WRONG_SIZE_ACTIONS:
        raise ValueError(f"wrong_size must be one of {WRONG_SIZE_ACTIONS}, got {wrong_size!r}")


def source_stamp(source: Path) -> str:
    """sha256 over the size and modification time of ``source`` (an archive) or of every file
    under it (a folder, with relative paths): cheap to compute, and it changes when a
    ``dvc pull`` or an edit changes the source, so a stale ingest is never reused.

    Raises:
        FileNotFoundError: If source does not exist.
    """
    _require_exists(source)
    if source.is_dir():
        entries = sorted(
            (str(path.relative_to(source)), path.stat())
            for path in source.rglob("*")
            if path.is_file()
        )
    else:
        entries = [(source.name, source.stat())]
    lines = [f"{name} {stat.st_size} {stat.st_mtime_ns}" for name, stat in entries]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def summary_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: files seen, kept, then rejected per reason."""
    rows = [("files seen", report["num_files"]), ("kept", report["num_kept"])]
    rows += [(f"rejected: {r}", n) for r, n in report["rejected_per_reason"].items()]
    width = max(len(label) for label, _ in rows)
    lines = [f"| {'outcome':<{width}} | {'files':>7} |", f"|{'-' * (width + 2)}|{'-' * 8}:|"]
    lines += [f"| {label:<{width}} | {n:>7,} |" for label, n in rows]
    return "\n".join(lines)


def ingest(
    source: Path,
    processed_dir: Path,
    image_size: int = 64,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    wrong_size: str = "resize",
    max_pixels: int = MAX_PIXELS,
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS,
    workers: int | None = None,
) -> dict[str, Any]:
    """Validate, decode, deduplicate and split the images of ``source`` into ``processed_dir``.

    Args:
        source: A folder, .tar (.tar.gz, .tgz) or .zip holding image files.
        processed_dir: Output folder for ``images.pt``, ``manifest.json``, ``ingest_report.json``.
        image_size: Side in pixels of the stored square images.
        seed: Seed of the split.
        val_fraction: Share of kept images in the validation split, in [0, 1).
        test_fraction: Share of kept images in the test split, in [0, 1).
        wrong_size: ``"resize"`` (centre-crop and resize) or ``"reject"`` images that are not
            ``image_size`` square.
        max_pixels: Largest accepted width x height, checked from the header before decoding.
        near_duplicate_bits: Largest perceptual-hash distance, in bits, of near duplicates;
            -1 turns near-duplicate grouping off.
        workers: Decoding threads; default up to 8, at most the CPU count.

    Returns:
        The manifest, as written to ``manifest.json``; its ``report`` key holds the summary.

    Raises:
        FileNotFoundError: If source does not exist.
        NoUsableImageError: If source holds no usable image.
        ValueError: If an argument is out of range or source is not a folder or archive.
    """
    check_settings(image_size, val_fraction, test_fraction, wrong_size)
    # Stamped before reading: a source changed during the ingest is ingested again next time.
    stamp = source_stamp(source)
    read = read_source(source)
    rejections = list(read.rejections)

    # Byte-identical files are decoded once.
    by_bytes: dict[bytes, list[str]] = {}
    raw_of: dict[bytes, bytes] = {}
    for name, raw in read.files:
        digest = hashlib.sha256(raw).digest()
        by_bytes.setdefault(digest, []).append(name)
        raw_of.setdefault(digest, raw)
    digests = list(by_bytes)
    decoded = decode_many(
        [raw_of[d] for d in digests], image_size, wrong_size, max_pixels, workers
    )

    # Exact duplicates: the same converted pixels, whatever the bytes.
    images: dict[str, Tensor] = {}
    names: dict[str, list[str]] = {}
    for digest, result in zip(digests, decoded, strict=True):
        if isinstance(result, Rejected):
            rejections += [Rejection(n, result.reason, result.detail) for n in by_bytes[digest]]
            continue
        pixel_hash = hashlib.sha256(result.numpy().tobytes()).hexdigest()
        names.setdefault(pixel_hash, []).extend(by_bytes[digest])
        images.setdefault(pixel_hash, result)
    for pixel_hash in names:
        names[pixel_hash].sort()
    if not images:
        counts = Counter(r.reason for r in rejections)
        seen = ", ".join(f"{n} {reason}" for reason, n in counts.most_common()) or "none"
        raise NoUsableImageError(
            f"{source}: holds no decodable image "
            f"({len(read.files) + len(read.rejections)} files seen; rejected: {seen})"
        )
    hashes = sorted(images)
    duplicates: dict[str, list[str]] = {}
    for h in hashes:
        keep, *copies = names[h]
        duplicates[h] = copies
        rejections += [Rejection(c, EXACT_DUPLICATE, f"same pixels as {keep}") for c in copies]

    # Near duplicates: each group keeps its image with the smallest pixel hash.
    near: dict[str, list[str]] = {h: [] for h in hashes}
    if near_duplicate_bits >= 0:
        roots = group_near_duplicates(
            torch.stack([images[h] for h in hashes]), near_duplicate_bits
        )
        for i, root in enumerate(roots):
            if root != i:
                keep, drop = hashes[root], hashes[i]
                near[keep] += names[drop]
                rejections += [
                    Rejection(n, NEAR_DUPLICATE, f"same photo as {names[keep][0]}")
                    for n in names[drop]
                ]
        hashes = [h for i, h in enumerate(hashes) if roots[i] == i]

    splits = split_assignment(hashes, seed, val_fraction, test_fraction)
    rejections.sort(key=lambda r: r.name)
    counts = Counter(r.reason for r in rejections)
    report: dict[str, Any] = {
        "source": source.name,
        "num_files": len(read.files) + len(read.rejections),
        "num_ignored_not_images": read.num_ignored,
        "num_kept": len(hashes),
        "rejected_per_reason": {r: counts[r] for r in REASONS if counts[r]},
        "rejected": [{"name": r.name, "reason": r.reason, "detail": r.detail} for r in rejections],
    }
    manifest: dict[str, Any] = {
        "source": source.name,
        "source_stamp": stamp,
        "image_size": image_size,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "wrong_size": wrong_size,
        "num_files": report["num_files"],
        "num_duplicates": counts[EXACT_DUPLICATE],
        "num_near_duplicates": counts[NEAR_DUPLICATE],
        "rejected": {
            r.name: f"{r.reason}: {r.detail}" if r.detail else r.reason for r in rejections
        },
        "images": [
            {
                "name": names[h][0],
                "sha256": h,
                "split": s,
                "duplicates": duplicates[h],
                "near_duplicates": sorted(near[h]),
            }
            for h, s in zip(hashes, splits, strict=True)
        ],
    }
    manifest["data_hash"] = data_hash(manifest)
    processed_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(torch.stack([images[h] for h in hashes]), buffer)
    atomic_write_bytes(processed_dir / "images.pt", buffer.getvalue())
    atomic_write_bytes(processed_dir / "ingest_report.json", json.dumps(report, indent=1).encode())
    # The manifest goes last: a current manifest means the other files are complete.
    atomic_write_bytes(processed_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    log.info("ingest of %s into %s:\n%s", source, processed_dir, summary_table(report))
    manifest["report"] = report
    return manifest


def processed_subdir(processed_dir: Path, source: Path) -> Path:
    """Where a source's ingest lands: ``processed_dir/<source name without suffixes>``."""
    return processed_dir / source.name.split(".")[0]


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m vae_cats.data.ingest``: ingest a source, print the summary table."""
    parser = argparse.ArgumentParser(
        prog="python -m vae_cats.data.ingest",
        description="Validate, deduplicate and split a folder, .tar or .zip of images.",
    )
    parser.add_argument("source", help="folder, .tar or .zip; 'bundled' for the bundled sample")
    parser.add_argument("--out", type=Path, default=Path("data/processed"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--wrong-size", choices=WRONG_SIZE_ACTIONS, default="resize")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--list-rejected", action="store_true", help="print every rejected file")
    args = parser.parse_args(None if argv is None else list(argv))
    source = resolve_source(args.source)
    out = processed_subdir(args.out, source)
    try:
        manifest = ingest(
            source,
            out,
            image_size=args.image_size,
            seed=args.seed,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            wrong_size=args.wrong_size,
            workers=args.workers,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # Name the path that failed: the source when reading, an output when writing.
        where = err.filename or source
        print(f"error: {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    report = manifest["report"]
    print(f"ingest of {source} -> {out}")
    print(summary_table(report))
    if args.list_rejected:
        for r in report["rejected"]:
            print(f"{r['name']}: {r['reason']}" + (f" ({r['detail']})" if r["detail"] else ""))
    print(f"data_hash {manifest['data_hash']}; report: {out / 'ingest_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
