"""Validating and decoding image files into uint8 RGB tensors: the one decoder of the ingest
and of uploads to the HTTP API (``decode_image``). Plain torch, numpy and Pillow.

Each file ends as uint8 (3, S, S) pixels or a ``BadImageError`` whose reason is one of:

- ``empty file``: zero bytes;
- ``not an image``: no image format recognises it (say a text file named ``.jpg``);
- ``truncated image``: the data ends before the image does;
- ``corrupt image``: recognised, but the decoder fails, or libjpeg warns that the data is
  damaged (``Corrupt JPEG data: premature end of data segment``: it would fill the rest of
  the picture with grey); libjpeg prints such warnings on the process's stderr, so they
  are caught there and become the file's reason instead;
- ``too many pixels``: declared width x height above ``max_pixels``, read from the header
  before any pixel is decoded (decompression bombs);
- ``wrong size``: not ``image_size`` square, when ``wrong_size="reject"``.

Pixels are normalised: EXIF orientation is applied, transparency (palette ``tRNS``, RGBA,
LA) is composited onto ``BACKGROUND`` (white), 16-bit samples are scaled to 8 bits
(``round(v * 255 / 65535)``), everything else is converted to RGB. With
``wrong_size="resize"`` an image of another size is centre-cropped to a square and resized
(bicubic, antialiased).

JPEGs are decoded by libjpeg-turbo (``torchvision.io.decode_jpeg``) in a thread pool when
torchvision is installed, other formats and JPEGs libjpeg refuses by Pillow. Without
torchvision (the slim predict image) Pillow decodes everything; its libjpeg keeps its
warnings to itself, so a JPEG with damaged data is then decoded as it comes.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

log = logging.getLogger(__name__)

# Transparent pixels are composited onto white before RGB conversion.
BACKGROUND = (255, 255, 255)
# 4096 x 4096: a decoded RGB image of at most 48 MiB; cat photos are far smaller.
MAX_PIXELS = 4096 * 4096
WRONG_SIZE_ACTIONS = ("resize", "reject")

EMPTY = "empty file"
NOT_IMAGE = "not an image"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"
TOO_MANY_PIXELS = "too many pixels"
WRONG_SIZE = "wrong size"

_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"
# libjpeg's warnings (jerror.h, JWRN_*) as it prints them; anything else captured from
# stderr while libjpeg runs is someone else's and is passed on.
_LIBJPEG_WARNING = re.compile(
    r"^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters|"
    r"Inconsistent progression sequence|Warning: unknown JFIF revision|"
    r"Unknown Adobe color transform|Application transferred too)"
)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# One capture of file descriptor 2 at a time: it is shared by the whole process.
_STDERR_LOCK = threading.Lock()


class BadImageError(ValueError):
    """A file that cannot be used as an image; ``str()`` is one line: ``reason: detail``.

    Attributes:
        reason: One of the reasons listed in this module's docstring.
        detail: What exactly was wrong, one line.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        detail = " ".join(detail.split())
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Decoded(NamedTuple):
    """One decoded file: uint8 (3, S, S) pixels and its width and height before fitting."""

    pixels: Tensor
    width: int
    height: int


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


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raises: BadImageError (too many pixels) if width x height exceeds ``max_pixels``."""
    if width * height > max_pixels:
        raise BadImageError(TOO_MANY_PIXELS, f"{width}x{height} > {max_pixels} pixels")


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
        BadImageError: Not an image, too many pixels, truncated or corrupt image.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(raw)) as image:
                check_pixels(image.width, image.height, max_pixels)
                for warning in caught:
                    if issubclass(warning.category, Image.DecompressionBombWarning):
                        raise BadImageError(TOO_MANY_PIXELS, str(warning.message))
                image.load()
                pixels = _to_rgb_array(ImageOps.exif_transpose(image))
        except BadImageError:
            raise
        except Image.DecompressionBombError as err:
            raise BadImageError(TOO_MANY_PIXELS, str(err)) from err
        except UnidentifiedImageError as err:
            raise BadImageError(NOT_IMAGE, "no image format recognises it") from err
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            truncated = "truncated" in str(err) or isinstance(err, EOFError)
            raise BadImageError(TRUNCATED if truncated else CORRUPT, str(err)) from err
    for warning in caught:
        log.debug("pillow: %s", warning.message)
    return torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def has_torchvision() -> bool:
    """Whether the libjpeg-turbo fast path is available; the slim predict image has no
    torchvision, and Pillow decodes everything there."""
    return importlib.util.find_spec("torchvision") is not None


@contextmanager
def _libjpeg_warnings() -> Iterator[list[str]]:
    """Catch what libjpeg prints on file descriptor 2 while the block runs.

    Yields a list that holds, once the block has ended, libjpeg's warning lines; any other
    text written to stderr meanwhile (by another thread) is written on to stderr.
    """
    found: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode(errors="replace").splitlines(keepends=True)
    found += [line.strip() for line in lines if _LIBJPEG_WARNING.match(line)]
    other = "".join(line for line in lines if not _LIBJPEG_WARNING.match(line))
    if other:
        sys.stderr.write(other)


def _libjpeg_decode(raw: bytes) -> Tensor | None:
    """libjpeg-turbo decode of one JPEG to RGB (3, H, W); None where libjpeg refuses it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        return decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError:
        return None


def _libjpeg_decode_all(raws: list[bytes]) -> list[Tensor | None]:
    return [_libjpeg_decode(raw) for raw in raws]


def _decode_jpegs(raws: list[bytes], workers: int) -> list[Tensor | BadImageError | None]:
    """libjpeg-turbo decode of each JPEG in ``workers`` threads: RGB (3, H, W) pixels, None
    where libjpeg refuses the file (Pillow tries it next), ``corrupt image`` where libjpeg
    warns that the data is damaged."""
    size = -(-len(raws) // workers)
    chunks = [raws[k : k + size] for k in range(0, len(raws), size)]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION)
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        with _libjpeg_warnings() as warned, ThreadPoolExecutor(max_workers=workers) as pool:
            decoded = [out for chunk in pool.map(_libjpeg_decode_all, chunks) for out in chunk]
        if not warned:
            return list(decoded)
        # libjpeg does not say which file it warns about: decode again one at a time.
        results: list[Tensor | BadImageError | None] = []
        for raw in raws:
            with _libjpeg_warnings() as warned:
                pixels = _libjpeg_decode(raw)
            results.append(BadImageError(CORRUPT, warned[0]) if warned else pixels)
    return results


def fit_size(pixels: Tensor, image_size: int, wrong_size: str) -> Tensor:
    """Return (3, S, S) uint8: unchanged when already S x S; else centre-cropped to a square
    and resized (bicubic, antialiased) for ``wrong_size="resize"``.

    Raises:
        BadImageError: ``wrong size`` for ``wrong_size="reject"``.
    """
    _, height, width = pixels.shape
    if (height, width) == (image_size, image_size):
        return pixels
    if wrong_size == "reject":
        raise BadImageError(WRONG_SIZE, f"{width}x{height}, expected {image_size}x{image_size}")
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[:, top : top + side, left : left + side].float().unsqueeze(0)
    resized = F.interpolate(
        square, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.squeeze(0).round().clamp(0, 255).to(torch.uint8)


def _jpeg_candidates(raws: list[bytes], max_pixels: int) -> dict[int, BadImageError | None]:
    """Early verdicts from the bytes alone: ``empty file``, ``too many pixels`` (from a JPEG
    frame header), or None for a JPEG that libjpeg may decode."""
    early: dict[int, BadImageError | None] = {}
    for i, raw in enumerate(raws):
        if not raw:
            early[i] = BadImageError(EMPTY, "0 bytes")
            continue
        size = jpeg_size(raw) if raw[:3] == b"\xff\xd8\xff" else None
        if size is None:
            continue
        try:
            check_pixels(*size, max_pixels)
            early[i] = None
        except BadImageError as err:
            early[i] = err
    return early


def decode_many(
    raws: list[bytes],
    image_size: int = 64,
    wrong_size: str = "resize",
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
) -> list[Decoded | BadImageError]:
    """Validate and decode each raw file to uint8 RGB (3, S, S), or the reason it is rejected.

    JPEGs whose header passes the pixel limit are decoded by libjpeg-turbo in a pool of
    ``workers`` threads (default: up to 8, at most the CPU count); everything else, and any
    JPEG libjpeg refuses, goes through Pillow.

    Returns:
        Per file, in order: its ``Decoded`` pixels and size before fitting, or the error.
    """
    early = _jpeg_candidates(raws, max_pixels)
    jpegs = [i for i, verdict in early.items() if verdict is None] if has_torchvision() else []
    workers = workers or min(8, os.cpu_count() or 1)
    decoded: dict[int, Tensor | BadImageError | None] = dict(early)
    if jpegs:
        fast = _decode_jpegs([raws[i] for i in jpegs], workers)
        decoded.update(zip(jpegs, fast, strict=True))
    final: list[Decoded | BadImageError] = []
    for i, raw in enumerate(raws):
        try:
            result = decoded.get(i)
            if isinstance(result, BadImageError):
                raise result
            pixels = result if result is not None else decode_with_pillow(raw, max_pixels)
            _, height, width = pixels.shape
            final.append(Decoded(fit_size(pixels, image_size, wrong_size), width, height))
        except BadImageError as err:
            final.append(err)
    return final


def decode_image(
    raw: bytes,
    image_size: int = 64,
    wrong_size: str = "resize",
    max_pixels: int = MAX_PIXELS,
) -> Tensor:
    """Decode one image file (an upload, say) exactly as the ingest decodes its files.

    Args:
        raw: The file's bytes, any format Pillow reads.
        image_size: Side S of the square result, in pixels.
        wrong_size: ``"resize"`` (centre-crop and resize) or ``"reject"`` an image that is not
            S x S.
        max_pixels: Largest accepted width x height, checked from the header before decoding.

    Returns:
        uint8 RGB pixels, shape (3, S, S), values in [0, 255].

    Raises:
        BadImageError: A ``ValueError`` whose one-line message names the problem: empty
            file, not an image, truncated image, corrupt image, too many pixels, wrong size.
    """
    (result,) = decode_many([raw], image_size, wrong_size, max_pixels, workers=1)
    if isinstance(result, BadImageError):
        raise result
    return result.pixels
