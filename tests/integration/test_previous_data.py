"""data.yml's step that fetches the data of the previous data.dvc: a real git + DVC repository
with a local directory remote and two versions of the data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_DIR, bundled_members

DVC = str(Path(sys.executable).with_name("dvc"))
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}
MEMBERS = bundled_members(8)


def run(*command: str, cwd: Path) -> None:
    result = subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=180, env=ENV
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-1500:]} {result.stderr[-1500:]}"


def commit_data(repo: Path, files: dict[str, bytes], message: str) -> None:
    raw = repo / "data" / "raw"
    if raw.exists():
        for path in raw.iterdir():
            path.unlink()
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (raw / name).write_bytes(data)
    run(DVC, "commit", "-f", "-q", "data.dvc", cwd=repo)
    run(DVC, "push", "-q", "data.dvc", cwd=repo)
    run("git", "add", "data.dvc", cwd=repo)
    run("git", "commit", "-q", "-m", message, cwd=repo)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Commits: no data.dvc, then data v1 (5 faces), then v2 (3 of them and 3 others)."""
    root = tmp_path_factory.mktemp("previous_data")
    repo = root / "repo"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run("git", "config", "user.email", "t@example.com", cwd=repo)
    run("git", "config", "user.name", "t", cwd=repo)
    (repo / ".gitignore").write_text("/data/\n")
    run(DVC, "init", "-q", cwd=repo)
    run(DVC, "remote", "add", "-d", "local", str(root / "remote"), cwd=repo)
    run("git", "add", ".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore", cwd=repo)
    run("git", "commit", "-q", "-m", "dvc", cwd=repo)
    (repo / "data.dvc").write_text("outs:\n- path: data/raw\n")
    commit_data(repo, dict(MEMBERS[:5]), "data v1")
    commit_data(repo, dict(MEMBERS[2:8]), "data v2")
    return repo


def previous(repo: Path, out: Path, rev: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "scripts/previous_data.py",
            "--project",
            str(repo),
            "--rev",
            rev,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_DIR,
        env=ENV,
    )


@pytest.mark.slow
def test_gets_the_data_of_the_previous_data_dvc(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "previous" / "raw"
    result = previous(repo, out, "HEAD~1")
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == dict(MEMBERS[:5])
    assert "5 files" in result.stdout
    # The working copy still holds the current version.
    assert sorted(p.name for p in (repo / "data" / "raw").iterdir()) == sorted(
        name for name, _ in MEMBERS[2:8]
    )


@pytest.mark.slow
def test_a_commit_without_data_dvc_has_nothing_to_compare(repo: Path, tmp_path: Path) -> None:
    result = previous(repo, tmp_path / "previous", "HEAD~2")
    assert result.returncode == 0, result.stderr
    assert "nothing to compare" in result.stdout
    assert not (tmp_path / "previous").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rev", "message"), [("no-such-branch", "not a commit"), ("HEAD~9", "not a commit")]
)
def test_bad_revision_is_one_line_and_exit_2(
    repo: Path, tmp_path: Path, rev: str, message: str
) -> None:
    result = previous(repo, tmp_path / "previous", rev)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
