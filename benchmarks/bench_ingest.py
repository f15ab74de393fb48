"""Benchmark: hardened ingest of cats64 against a plain sequential PIL loop over the same files.

    python benchmarks/bench_ingest.py [SOURCE] [--workers N] [--repeat K]

Both read the same archive. The sequential loop opens each member with tarfile, decodes it
with Pillow, converts it to RGB and hashes its pixels (what a naive validate-and-deduplicate
script does). The ingest does all of vae_cats.data.ingest.ingest: safe reading, header checks,
decoding (once per distinct file), exact and near-duplicate grouping, split, writing. Prints
a table; the best of ``--repeat`` runs of each is reported. Targets: ingest < 20 s and at
least 3x faster than the loop.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vae_cats.data.ingest import ingest
from vae_cats.data.sources import SHARED_CATS64


def sequential_pil_loop(source: Path) -> tuple[int, int]:
    """(files decoded, distinct pixel hashes) with one Pillow decode per file, in order."""
    seen: set[str] = set()
    count = 0
    with tarfile.open(source) as archive:
        for member in archive:
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            with Image.open(io.BytesIO(handle.read())) as image:
                pixels = np.asarray(image.convert("RGB"))
            seen.add(hashlib.sha256(pixels.tobytes()).hexdigest())
            count += 1
    return count, len(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=SHARED_CATS64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if not args.source.is_file():
        print(
            f"error: {args.source}: no such archive (cats64 lives in ../shared)", file=sys.stderr
        )
        return 2
    loop_times, ingest_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            start = time.perf_counter()
            files, distinct = sequential_pil_loop(args.source)
            loop_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            manifest = ingest(args.source, Path(tmp) / "out", workers=args.workers)
            ingest_times.append(time.perf_counter() - start)
    report = manifest["report"]
    loop, fast = min(loop_times), min(ingest_times)
    rows = [
        ("sequential PIL loop", f"{loop:.2f}", f"{files:,} decoded, {distinct:,} distinct pixels"),
        (
            "vae_cats ingest",
            f"{fast:.2f}",
            f"{report['num_files']:,} files, {report['num_kept']:,} kept, "
            + ", ".join(f"{n:,} {r}" for r, n in report["rejected_per_reason"].items()),
        ),
        ("speed-up", f"{loop / fast:.2f}x", "target >= 3x; ingest target < 20 s"),
    ]
    print(f"source {args.source} | cpus {os.cpu_count()} | best of {args.repeat}")
    print("| run | seconds | what |\n|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
