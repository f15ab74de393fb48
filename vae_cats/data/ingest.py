"""The staged ingest: turn a folder, .tar or .zip of photos into a deduplicated, split tensor
file, and account for every file.

Stages, each a function that can be run alone:

1. ``read_source`` (``vae_cats.data.sources``): every file of the source, or why it is not
   read (unsafe path, link, not a regular file, too large, unsupported, unreadable);
2. ``decode_files``: validate and decode, once per distinct file content
   (``vae_cats.data.decode``: empty, not an image, truncated, corrupt, too many pixels, wrong
   size); images of another size are centre-cropped and resized, and listed as resized;
3. ``deduplicate``: exact and near duplicates (``vae_cats.data.dedupe``); each photo keeps
   its best copy (colour, native size, largest file), so no photo sits in two splits;
4. ``split_photos``: a hash-bucket split: each photo's split is a function of its own split
   key and the seed, not of file names, their order, which copy of a photo is kept, or which
   other photos the source holds (adding photos never moves one already split);
5. ``write_ingest``: ``images.pt`` (uint8 (N, 3, S, S), one row per kept image),
   ``ingest_report.json`` (the summary, every excluded file with its reason and detail,
   every resized file) and, last, ``manifest.json`` (the settings; per kept image its name,
   pixel sha256, split, the exact and near duplicates dropped for it and the size it was
   resized from; every excluded file with its reason; ``data_hash`` and ``content_hash``).

``data_hash`` names which photos are in which split: it covers each kept photo's split key
(the smallest pixel sha256 among its copies) and split, so it stays the same when only the
copy kept of a photo changes (as when version 2 of this ingest began to keep the best copy
rather than the one with the smallest sha256: the hashes that older manifests and model
lineages record still hold). ``content_hash`` covers the pixels stored (each kept image's
sha256) and their split, and changes whenever ``images.pt`` does.

Every file of the source has exactly one outcome, kept or excluded for one reason, so the
summary table (``summary_table``) adds up to the files seen. An exact copy of a near
duplicate is an exact duplicate (of that near duplicate), not a second near duplicate.

Command line (``--help`` lists every option with its default)::

    python -m vae_cats.data.ingest SOURCE [--out data/processed] [--seed 42] [--wrong-size reject]

prints the summary table; a missing source, one without a usable image, a bad option or an
unwritable ``--out`` is a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

import torch

from vae_cats.data import decode, dedupe, sources
from vae_cats.data.decode import BadImageError, decode_many
from vae_cats.data.dedupe import DecodedFile, Photo, exact_groups, group_photos, why_kept
from vae_cats.data.settings import IngestSettings
from vae_cats.data.sources import Rejection, read_source, resolve_source, source_stamp
from vae_cats.fileio import atomic_write_bytes, check_writable

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Bumped when the same source and settings would give another result: an ingest made by an
# older version is not reused. 3: the hash-bucket split (every photo may move once).
INGEST_VERSION = 3
# Every reason a file can be excluded for, in the order the summary lists them.
REASONS = (
    decode.EMPTY,
    decode.NOT_IMAGE,
    sources.UNSUPPORTED,
    decode.TRUNCATED,
    decode.CORRUPT,
    decode.TOO_MANY_PIXELS,
    sources.TOO_LARGE,
    decode.WRONG_SIZE,
    sources.UNSAFE_PATH,
    sources.LINK,
    sources.NOT_REGULAR,
    sources.UNREADABLE,
    dedupe.EXACT_DUPLICATE,
    dedupe.NEAR_DUPLICATE,
)


class NoUsableImageError(ValueError):
    """The source holds no image that survived validation."""


@dataclass(frozen=True)
class Outcome:
    """What became of a source's files: the photos kept and every file excluded."""

    photos: list[Photo]
    rejections: list[Rejection]
    num_files: int


def decode_files(
    files: list[tuple[str, bytes]], settings: IngestSettings, workers: int | None = None
) -> tuple[list[DecodedFile], list[Rejection]]:
    """Stage 2: decode and validate (name, bytes) files; byte-identical files decode once.

    Returns:
        The files that decoded, and the others with their reasons.
    """
    names_of: dict[bytes, list[str]] = {}
    raw_of: dict[bytes, bytes] = {}
    for name, raw in files:
        digest = hashlib.sha256(raw).digest()
        names_of.setdefault(digest, []).append(name)
        raw_of.setdefault(digest, raw)
    digests = list(names_of)
    results = decode_many(
        [raw_of[d] for d in digests],
        settings.image_size,
        settings.wrong_size,
        settings.max_pixels,
        workers,
    )
    decoded: list[DecodedFile] = []
    rejections: list[Rejection] = []
    for digest, result in zip(digests, results, strict=True):
        for name in names_of[digest]:
            if isinstance(result, BadImageError):
                rejections.append(Rejection(name, result.reason, result.detail))
            else:
                size = len(raw_of[digest])
                decoded.append(DecodedFile(name, result.pixels, result.width, result.height, size))
    return decoded, rejections


def deduplicate(
    files: list[DecodedFile], settings: IngestSettings
) -> tuple[list[Photo], list[Rejection]]:
    """Stage 3: one kept copy per photo, every other file an exact or a near duplicate.

    Returns:
        The photos sorted by split key, and one rejection per dropped file: a file with the
        same pixels as another is an exact duplicate of it; the first file of each other
        copy of a photo is a near duplicate of the kept copy.
    """
    photos = group_photos(exact_groups(files), settings.image_size, settings.near_duplicate_bits)
    rejections = []
    for photo in photos:
        kept = photo.kept.first.name
        for copy in (photo.kept, *photo.others):
            first, *rest = copy.names
            if copy is not photo.kept:
                why = why_kept(photo.kept, copy, settings.image_size)
                detail = f"same photo as {kept} (kept: {why})"
                rejections.append(Rejection(first, dedupe.NEAR_DUPLICATE, detail))
            rejections += [
                Rejection(name, dedupe.EXACT_DUPLICATE, f"same pixels as {first}") for name in rest
            ]
    return photos, rejections


SPLIT_BUCKETS = 2**64


def split_bucket(key: str, seed: int) -> float:
    """Where a photo falls in [0, 1): the first 64 bits of sha256(``"<seed>:<key>"``) over
    2**64. A function of the photo's own split key and the seed alone, so a photo keeps its
    bucket, hence its split, whatever other photos a data version adds or removes (the
    hash-bucket split of data tooling, e.g. TensorFlow Transform's and Google's "ML
    Engineering" rule of splitting by a hash of a stable key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SPLIT_BUCKETS


def split_assignment(
    keys: list[str], seed: int, val_fraction: float, test_fraction: float
) -> list[str]:
    """Split of distinct keys (pixel hashes) by hash bucket, given in any order.

    A key goes to ``test`` when its ``split_bucket`` is below ``test_fraction``, to ``val``
    below ``test_fraction + val_fraction``, else to ``train``: each key's split depends on
    that key and the seed only, so adding photos never moves a photo already split. The
    fractions hold in expectation (binomially: +-1% of 8,483 photos at 10%), not exactly.
    Returns the split name of each key in the order given.
    """
    splits = []
    for key in keys:
        bucket = split_bucket(key, seed)
        splits.append(
            "test"
            if bucket < test_fraction
            else "val"
            if bucket < test_fraction + val_fraction
            else "train"
        )
    return splits


def split_photos(photos: list[Photo], settings: IngestSettings) -> list[str]:
    """Stage 4: the split of each photo, by its split key (see ``vae_cats.data.dedupe``)."""
    keys = [p.split_key for p in photos]
    return split_assignment(keys, settings.seed, settings.val_fraction, settings.test_fraction)


def resized_from(photo: Photo, image_size: int) -> str | None:
    """``"WxH"``, the size of the kept file before it was fitted, or None if it was not."""
    first = photo.kept.first
    if (first.width, first.height) == (image_size, image_size):
        return None
    return f"{first.width}x{first.height}"


def data_hash(manifest: dict[str, Any]) -> str:
    """sha256 over the image size and each kept photo's (split key, split): changes exactly
    when the photos or their split change. A manifest from before split keys were recorded
    kept the copy with the smallest sha256, which is its split key."""
    return _hash_records(manifest, lambda r: r.get("split_key", r["sha256"]))


def content_hash(manifest: dict[str, Any]) -> str:
    """sha256 over the image size and each kept image's (pixel sha256, split): changes
    exactly when the stored pixels or their split change."""
    return _hash_records(manifest, lambda r: r["sha256"])


def _hash_records(manifest: dict[str, Any], key: Callable[[dict[str, Any]], str]) -> str:
    lines = [f"{manifest['image_size']}"] + [f"{key(r)} {r['split']}" for r in manifest["images"]]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_report(source: Path, outcome: Outcome, settings: IngestSettings) -> dict[str, Any]:
    """The summary of an ingest, as ``ingest_report.json`` holds it."""
    counts = Counter(r.reason for r in outcome.rejections)
    resized = [
        {"name": p.kept.first.name, "detail": f"resized from {size}"}
        for p in outcome.photos
        if (size := resized_from(p, settings.image_size))
    ]
    return {
        "source": source.name,
        "image_size": settings.image_size,
        "num_files": outcome.num_files,
        "num_kept": len(outcome.photos),
        "num_resized": len(resized),
        "rejected_per_reason": {r: counts[r] for r in REASONS if counts[r]},
        "resized": sorted(resized, key=lambda r: r["name"]),
        "rejected": [
            {"name": r.name, "reason": r.reason, "detail": r.detail} for r in outcome.rejections
        ],
    }


def build_manifest(
    source: Path, stamp: str, outcome: Outcome, splits: list[str], settings: IngestSettings
) -> dict[str, Any]:
    """The manifest of an ingest (see the module docstring), ``data_hash`` included."""
    counts = Counter(r.reason for r in outcome.rejections)
    manifest: dict[str, Any] = {
        "source": source.name,
        "source_stamp": stamp,
        "ingest_version": INGEST_VERSION,
        **settings.as_dict(),
        "num_files": outcome.num_files,
        "num_kept": len(outcome.photos),
        "num_duplicates": counts[dedupe.EXACT_DUPLICATE],
        "num_near_duplicates": counts[dedupe.NEAR_DUPLICATE],
        "rejected": {
            r.name: f"{r.reason}: {r.detail}" if r.detail else r.reason for r in outcome.rejections
        },
        "images": [
            {
                "name": photo.kept.first.name,
                "sha256": photo.kept.sha256,
                "split_key": photo.split_key,
                "split": split,
                "duplicates": photo.kept.names[1:],
                "near_duplicates": sorted(n for copy in photo.others for n in copy.names),
                "resized_from": resized_from(photo, settings.image_size),
            }
            for photo, split in zip(outcome.photos, splits, strict=True)
        ],
    }
    manifest["data_hash"] = data_hash(manifest)
    manifest["content_hash"] = content_hash(manifest)
    return manifest


def write_ingest(
    processed_dir: Path, photos: list[Photo], manifest: dict[str, Any], report: dict[str, Any]
) -> None:
    """Stage 5: write ``images.pt``, ``ingest_report.json`` and, last, ``manifest.json``
    (a current manifest means the other files are complete), each atomically."""
    buffer = io.BytesIO()
    torch.save(torch.stack([p.kept.first.pixels for p in photos]), buffer)
    atomic_write_bytes(processed_dir / "images.pt", buffer.getvalue())
    atomic_write_bytes(processed_dir / "ingest_report.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(processed_dir / "manifest.json", json.dumps(manifest, indent=1).encode())


def _no_usable_image(source: Path, outcome: Outcome) -> NoUsableImageError:
    counts = Counter(r.reason for r in outcome.rejections)
    seen = ", ".join(f"{n} {reason}" for reason, n in counts.most_common()) or "none"
    return NoUsableImageError(
        f"{source}: holds no decodable image ({outcome.num_files} files seen; rejected: {seen})"
    )


def ingest(
    source: Path,
    processed_dir: Path,
    settings: IngestSettings | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Read, validate, decode, deduplicate and split the images of ``source`` into
    ``processed_dir``.

    Args:
        source: A folder, .tar (.tar.gz, .tgz) or .zip holding image files.
        processed_dir: Output folder for ``images.pt``, ``manifest.json``, ``ingest_report.json``.
        settings: How to ingest; default ``IngestSettings()``.
        workers: JPEG decoding threads; default up to 8, at most the CPU count.

    Returns:
        The manifest, as written to ``manifest.json``; its ``report`` key holds the summary.

    Raises:
        FileNotFoundError: If source does not exist.
        NoUsableImageError: If source holds no usable image (nothing is written).
        ValueError: If source is not a folder or archive.
        OSError: If ``processed_dir`` cannot be written.
    """
    settings = settings or IngestSettings()
    # Stamped before reading: a source changed during the ingest is ingested again next time.
    stamp = source_stamp(source)
    read = read_source(source, settings.max_file_bytes)
    decoded, bad = decode_files(read.files, settings, workers)
    photos, copies = deduplicate(decoded, settings)
    rejections = sorted(read.rejections + bad + copies, key=lambda r: r.name)
    outcome = Outcome(photos, rejections, read.num_files)
    if not photos:
        raise _no_usable_image(source, outcome)
    splits = split_photos(photos, settings)
    report = build_report(source, outcome, settings)
    manifest = build_manifest(source, stamp, outcome, splits, settings)
    write_ingest(processed_dir, photos, manifest, report)
    log.info("ingest of %s into %s:\n%s", source, processed_dir, summary_table(report))
    manifest["report"] = report
    return manifest


def summary_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: files seen, then one row per outcome; the outcome
    rows add up to the files seen."""
    side = f"{report['image_size']}x{report['image_size']}"
    rows = [
        ("files seen", report["num_files"]),
        (f"kept, already {side}", report["num_kept"] - report["num_resized"]),
    ]
    if report["num_resized"]:
        rows.append((f"kept, resized to {side}", report["num_resized"]))
    rows += [(f"rejected: {r}", n) for r, n in report["rejected_per_reason"].items()]
    width = max(len(label) for label, _ in rows)
    lines = [f"| {'outcome':<{width}} | {'files':>7} |", f"|{'-' * (width + 2)}|{'-' * 8}:|"]
    lines += [f"| {label:<{width}} | {n:>7,} |" for label, n in rows]
    return "\n".join(lines)


def processed_subdir(processed_dir: Path, source: Path) -> Path:
    """Where a source's ingest lands: ``processed_dir/<source name without suffixes>``."""
    return processed_dir / source.name.split(".")[0]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (``error: ...``), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="python -m vae_cats.data.ingest",
        description="Validate, deduplicate and split a folder, .tar or .zip of images; print "
        "what became of every file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("source", help="folder, .tar or .zip; 'bundled' for the bundled sample")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("data/processed"),
        help="parent folder of the processed ingest (written to OUT/<source name>/)",
    )
    defaults = IngestSettings()
    for f in fields(IngestSettings):
        option = "--" + f.name.replace("_", "-")
        kind = {"int": int, "float": float}.get(str(f.type), str)
        choices = decode.WRONG_SIZE_ACTIONS if f.name == "wrong_size" else None
        parser.add_argument(
            option,
            type=kind,
            default=getattr(defaults, f.name),
            choices=choices,
            help=f.metadata["help"],
        )
    parser.add_argument(
        "--workers",
        type=int,
        # Not given: decode_many's own choice, which the help states (not "None").
        default=argparse.SUPPRESS,
        help="JPEG decoding threads (default: the CPU count, at most 8)",
    )
    parser.add_argument(
        "--list-rejected",
        action="store_true",
        help="also print every excluded file with its reason, and every resized file",
    )
    return parser


def _settings(args: argparse.Namespace) -> IngestSettings:
    """The settings of the CLI's options; an error names the options, not the fields.

    Raises:
        ValueError: As ``IngestSettings``.
    """
    names = [f.name for f in fields(IngestSettings)]
    try:
        return IngestSettings(**{name: getattr(args, name) for name in names})
    except ValueError as err:
        message = str(err)
        for name in names:
            message = message.replace(name, "--" + name.replace("_", "-"))
        raise ValueError(message) from err


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m vae_cats.data.ingest``: ingest a source, print the summary table."""
    args = _parser().parse_args(None if argv is None else list(argv))
    source = resolve_source(args.source)
    out = processed_subdir(args.out, source)
    try:
        settings = _settings(args)
        workers = getattr(args, "workers", None)
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        sources.require_exists(source)
        try:
            check_writable(out)
        except OSError as err:
            raise ValueError(
                f"--out {args.out}: cannot write there ({err.strerror or err})"
            ) from err
        manifest = ingest(source, out, settings, workers=workers)
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
        for r in report["resized"]:
            print(f"{r['name']}: kept, {r['detail']}")
        for r in report["rejected"]:
            print(f"{r['name']}: {r['reason']}" + (f" ({r['detail']})" if r["detail"] else ""))
    print(f"data_hash {manifest['data_hash']}; report: {out / 'ingest_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
