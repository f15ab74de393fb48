"""CI step of data.yml: the raw data that data.dvc tracked at an earlier commit, for the data diff.

    python scripts/previous_data.py --rev HEAD~1 --out outputs/data-ci/previous/raw

Reads ``data.dvc`` as it was at ``--rev`` (``git show REV:data.dvc``) and downloads the folder
it tracked at that commit with ``dvc get PROJECT PATH --rev COMMIT -o OUT``, from the DVC
remote configured at that commit (for Google Drive, the service-account key comes from the
``GDRIVE_CREDENTIALS_DATA`` variable, as for ``scripts/dvc_pull_ci.py``).

Exit 0 with the files in ``--out``; exit 0 without ``--out`` when the commit has no
``data.dvc`` (the first version: nothing to compare), saying so; exit 2 with one line when
``--rev`` is not a commit, ``data.dvc`` there is malformed or the download fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
DVC = str(Path(sys.executable).with_name("dvc"))


class PreviousDataError(Exception):
    """Why the earlier data cannot be had; the message is the one line printed."""


def git(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, timeout=60)


def tracked_path(project: Path, rev: str) -> tuple[str, str] | None:
    """(commit, the folder data.dvc tracks) at ``rev``; None when data.dvc did not exist.

    Raises:
        PreviousDataError: If ``rev`` is not a commit or data.dvc there names no output.
    """
    commit = git(project, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if commit.returncode != 0:
        raise PreviousDataError(f"--rev {rev}: not a commit of {project}")
    sha = commit.stdout.strip()
    shown = git(project, "show", f"{sha}:data.dvc")
    if shown.returncode != 0:
        return None
    try:
        outs = yaml.safe_load(shown.stdout)["outs"]
        return sha, str(outs[0]["path"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        raise PreviousDataError(f"data.dvc at {rev} ({sha[:12]}) names no output") from None


def download(project: Path, sha: str, path: str, out: Path, timeout: float) -> int:
    """``dvc get`` the folder ``path`` as of commit ``sha`` into ``out``; returns the file count.

    Raises:
        PreviousDataError: If DVC fails or gives no answer in time (last line of its error).
    """
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [DVC, "get", str(project), path, "--rev", sha, "-o", str(out)],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"},
        )
    except subprocess.TimeoutExpired:
        raise PreviousDataError(f"dvc get gave no answer within {timeout:.0f} s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise PreviousDataError(f"dvc get {path} at {sha[:12]} failed: {last}")
    return sum(1 for p in out.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD~1", help="the earlier commit (default HEAD~1)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the earlier data")
    parser.add_argument("--project", type=Path, default=PROJECT_DIR)
    args = parser.parse_args(argv)
    timeout = float(os.environ.get("DVC_PULL_TIMEOUT", "600"))
    try:
        found = tracked_path(args.project, args.rev)
        if found is None:
            print(f"no data.dvc at {args.rev}: nothing to compare against")
            return 0
        sha, path = found
        count = download(args.project, sha, path, args.out, timeout)
    except PreviousDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{path} as of {args.rev} ({sha[:12]}): {count} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
