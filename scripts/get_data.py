"""`make data`: fill data/raw/ (the set data.dvc tracks) from the first source that answers.

1. `dvc pull data.dvc` when the default DVC remote is configured (not the placeholder
   folder id) and answers within DVC_PULL_TIMEOUT seconds (default 60);
2. else the shared cats64 archive (../shared/datasets/cats64/cats64.tar);
3. else the 1,024 faces bundled in the package.

Archives are unpacked through the hardened reader of vae_cats.data.sources: only regular image
files with safe names are written, never links or paths leaving data/raw. The script prints
which source it used; it exits 2 with a one-line error when none works.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from vae_cats.data.sources import BUNDLED_SAMPLE, DATA_RAW, SHARED_CATS64, read_source
from vae_cats.fileio import PROJECT_DIR

PLACEHOLDER = "REPLACE_WITH_YOUR_FOLDER_ID"


def default_remote_url(project: Path) -> str | None:
    """URL of the default DVC remote (``dvc remote default`` + ``dvc config``), or None."""
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    try:
        name = subprocess.run(
            [*dvc, "remote", "default"], cwd=project, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        if not name:
            return None
        url = subprocess.run(
            [*dvc, "config", f"remote.{name}.url"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return url or None


def dvc_pull(project: Path, timeout: float) -> str:
    """Run ``dvc pull data.dvc``; return '' on success, else why it was not used."""
    url = default_remote_url(project)
    if url is None:
        return "no default DVC remote"
    if PLACEHOLDER in url:
        return f"DVC remote {url} is the placeholder (see instructions/dvc_gdrive.md)"
    dvc = str(Path(sys.executable).with_name("dvc"))
    try:
        result = subprocess.run(
            [dvc, "pull", "data.dvc"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,  # never wait on a browser sign-in prompt
        )
    except subprocess.TimeoutExpired:
        return f"dvc pull from {url} gave no answer within {timeout:.0f} s"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        return f"dvc pull from {url} failed: {last}"
    return ""


def export_raw(source: Path, dest: Path) -> int:
    """Write the safe image files of ``source`` into ``dest`` (replaced atomically)."""
    read = read_source(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".raw-", dir=dest.parent))
    for name, raw in read.files:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
    old = dest.with_name(dest.name + ".old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return len(read.files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=PROJECT_DIR)
    parser.add_argument("--skip-dvc", action="store_true", help="do not try `dvc pull`")
    args = parser.parse_args()
    timeout = float(os.environ.get("DVC_PULL_TIMEOUT", "60"))
    dest = args.project / DATA_RAW.relative_to(PROJECT_DIR)
    why = "skipped (--skip-dvc)" if args.skip_dvc else dvc_pull(args.project, timeout)
    if not why:
        print(f"data/raw: pulled with DVC from {default_remote_url(args.project)}")
        return 0
    print(f"dvc pull not used: {why}")
    for label, source in (
        ("the shared cats64 archive", SHARED_CATS64),
        ("the bundled sample", BUNDLED_SAMPLE),
    ):
        if source.is_file():
            try:
                count = export_raw(source, dest)
            except (OSError, ValueError) as err:
                print(f"{label} not used: {err}")
                continue
            print(f"data/raw: {count} files from {label} ({source})")
            return 0
    print(
        "error: no data source answered: no DVC remote, no ../shared cats64, no bundled sample",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
