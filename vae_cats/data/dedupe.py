"""Exact and near duplicates: which decoded files are the same photo, and which copy to keep.

- Exact duplicates decode to the same pixels (sha256 of the converted uint8 pixels, whatever
  the file bytes or format); of these files the first by name represents them.
- Near duplicates are the same photo re-encoded, resized or re-cropped a little: DCT
  perceptual hashes within ``max_bits`` bits and 16 x 16 grey thumbnails that correlate at
  least ``MIN_CORRELATION``; groups are the connected components of such pairs.

Of each photo one copy is kept, the best by ``best_copy_key``: colour over greyscale, then
native size (already ``image_size`` square) over resized, then the larger pixel count before
fitting, then a file in the source's own format (the commonest file extension of the source:
a PNG among JPEGs is a re-encoding, or a model's output, not the original) over another
format, then the largest file (the least compressed; sizes compare within a format), then
the smallest pixel sha256. The photo's ``split_key``, the smallest pixel
sha256 of all its copies, does not depend on which copy is kept, so the split of a photo
stays the same when a better copy is chosen.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

EXACT_DUPLICATE = "exact duplicate"
NEAR_DUPLICATE = "near duplicate"
# pHash alone pairs a few different cats with similar markings; requiring this thumbnail
# correlation keeps those apart (checked by eye on cats64 pairs).
MIN_CORRELATION = 0.95
# Mean spread between the largest and smallest of R, G, B, in 8-bit levels, under which an
# image counts as greyscale: a grey photo saved as a colour JPEG decodes within about 1.
GREY_SPREAD = 2.0


@dataclass(frozen=True)
class DecodedFile:
    """One file that decoded.

    Attributes:
        name: Its name in the source.
        pixels: uint8 (3, S, S), as stored.
        width: Its width before it was fitted to S x S.
        height: Its height before it was fitted.
        num_bytes: Its size in bytes.
    """

    name: str
    pixels: Tensor
    width: int
    height: int
    num_bytes: int


@dataclass(frozen=True)
class Distinct:
    """All files with the same decoded pixels, sorted by name; the first represents them.
    ``in_source_format``: one of them has the source's commonest format (``exact_groups``)."""

    sha256: str
    files: tuple[DecodedFile, ...]
    in_source_format: bool = True

    @property
    def first(self) -> DecodedFile:
        return self.files[0]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]


@dataclass(frozen=True)
class Photo:
    """One photo: the copy kept, its other copies (near duplicates), and its split key."""

    kept: Distinct
    others: tuple[Distinct, ...]
    split_key: str


def pixel_sha256(pixels: Tensor) -> str:
    """sha256 (hex) of uint8 pixels, as the manifest records it."""
    return hashlib.sha256(pixels.numpy().tobytes()).hexdigest()


def file_format(name: str) -> str:
    """A file's format as its name's extension says, lower case, ``.jpeg`` as ``.jpg``."""
    suffix = PurePosixPath(name).suffix.lower()
    return ".jpg" if suffix in (".jpeg", ".jpe") else suffix


def source_format(files: list[DecodedFile]) -> str | None:
    """The commonest format of ``files``; None when two formats tie for it."""
    ranked = Counter(file_format(f.name) for f in files).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def exact_groups(files: list[DecodedFile]) -> list[Distinct]:
    """Files grouped by pixel sha256, sorted by it; each group's files sorted by name, and
    marked ``in_source_format`` when one of them has the commonest format of ``files`` (all
    are when no format is commonest)."""
    usual = source_format(files)
    groups: dict[str, list[DecodedFile]] = {}
    # Byte-identical files share one pixel tensor: hash each tensor once.
    sha_of: dict[int, str] = {}
    for file in files:
        if id(file.pixels) not in sha_of:
            sha_of[id(file.pixels)] = pixel_sha256(file.pixels)
        groups.setdefault(sha_of[id(file.pixels)], []).append(file)
    return [
        Distinct(
            sha,
            tuple(sorted(groups[sha], key=lambda f: f.name)),
            usual is None or any(file_format(f.name) == usual for f in groups[sha]),
        )
        for sha in sorted(groups)
    ]


def is_grey(pixels: Tensor) -> bool:
    """Whether uint8 (3, H, W) pixels are greyscale: mean max-minus-min of R, G, B under
    ``GREY_SPREAD`` levels."""
    channels = pixels.numpy()
    spread = channels.max(axis=0) - channels.min(axis=0)  # uint8: max >= min, no overflow
    return float(spread.mean()) < GREY_SPREAD


def best_copy_key(copy: Distinct, image_size: int) -> tuple[bool, bool, int, bool, int, str]:
    """Sort key of the copies of one photo, best first: colour over greyscale, native size
    over resized, more pixels before fitting over fewer, the source's format over another,
    larger file over smaller, smaller pixel sha256 over larger."""
    first = copy.first
    resized = (first.width, first.height) != (image_size, image_size)
    pixels = max(f.width * f.height for f in copy.files)
    largest = max(f.num_bytes for f in copy.files)
    return (
        is_grey(first.pixels),
        resized,
        -pixels,
        not copy.in_source_format,
        -largest,
        copy.sha256,
    )


def why_kept(kept: Distinct, other: Distinct, image_size: int) -> str:
    """Which rule of ``best_copy_key`` put ``kept`` before ``other``, in words."""
    a, b = best_copy_key(kept, image_size), best_copy_key(other, image_size)
    if a[0] != b[0]:
        return "colour over greyscale"
    if a[1] != b[1]:
        return f"native {image_size}x{image_size} over resized"
    if a[2] != b[2]:
        return f"more pixels, {-a[2]} over {-b[2]}"
    if a[3] != b[3]:
        formats = file_format(kept.first.name), file_format(other.first.name)
        return f"the source's own format, {formats[0]} over {formats[1]}"
    if a[4] != b[4]:
        return f"larger file, {-a[4]} over {-b[4]} bytes"
    return "smaller pixel sha256"


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
    images: Tensor, max_bits: int, min_correlation: float = MIN_CORRELATION
) -> list[int]:
    """Group the same photo re-encoded: images whose pHashes differ in at most ``max_bits``
    bits and whose 16 x 16 grey thumbnails correlate at least ``min_correlation``.

    Args:
        images: uint8 (N, 3, H, W).
        max_bits: Largest pHash distance of a pair, in bits; -1 groups nothing.
        min_correlation: Smallest thumbnail correlation of a pair, in [-1, 1].

    Returns:
        For each image the index of its group's root (connected components of near-duplicate
        pairs); the root is the smallest index of its group.
    """
    parent = list(range(len(images)))
    if max_bits < 0:
        return parent
    hashes, thumbs = perceptual_hash(images)

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


def group_photos(distinct: list[Distinct], image_size: int, max_bits: int) -> list[Photo]:
    """The photos among distinct pixel contents, each keeping its best copy.

    Args:
        distinct: Distinct pixel contents, as ``exact_groups`` gives them.
        image_size: Side S of the stored images (native size, for ``best_copy_key``).
        max_bits: As ``group_near_duplicates``.

    Returns:
        One ``Photo`` per group of near duplicates, sorted by split key; ``others`` sorted
        by pixel sha256.
    """
    if not distinct:
        return []
    roots = group_near_duplicates(torch.stack([d.first.pixels for d in distinct]), max_bits)
    members: dict[int, list[Distinct]] = {}
    for copy, root in zip(distinct, roots, strict=True):
        members.setdefault(root, []).append(copy)
    photos = []
    for copies in members.values():
        if len(copies) == 1:  # most photos: nothing to choose
            photos.append(Photo(copies[0], (), copies[0].sha256))
            continue
        kept = min(copies, key=lambda c: best_copy_key(c, image_size))
        others = tuple(sorted((c for c in copies if c is not kept), key=lambda c: c.sha256))
        photos.append(Photo(kept, others, min(c.sha256 for c in copies)))
    return sorted(photos, key=lambda p: p.split_key)
