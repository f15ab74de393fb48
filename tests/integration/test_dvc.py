"""DVC for real, without network: the project's DVC files, and a whole add-push-clone-pull
cycle against a local directory remote."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from configobj import ConfigObj

from tests.helpers import PROJECT_DIR, bundled_members

DVC = str(Path(sys.executable).with_name("dvc"))
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_TERMINAL_PROMPT": "0"}


def run(*command: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=180, env=env or ENV
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-1500:]} {result.stderr[-1500:]}"
    return result


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_data_dvc_tracks_data_raw_and_the_default_remote_is_gdrive() -> None:
    tracked = yaml.safe_load((PROJECT_DIR / "data.dvc").read_text())
    (out,) = tracked["outs"]
    assert out["path"] == "data/raw" and out["md5"].endswith(".dir") and out["nfiles"] > 0
    config = ConfigObj(str(PROJECT_DIR / ".dvc" / "config"))
    remote = config["core"]["remote"]
    section = config[f'remote "{remote}"']
    assert section["url"].startswith("gdrive://")
    assert section["gdrive_use_service_account"] == "true"


@pytest.mark.slow
def test_add_push_clone_pull_gives_the_same_files(tmp_path: Path) -> None:
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    raw = repo / "data" / "raw"
    raw.mkdir(parents=True)
    for name, data in bundled_members(20):
        (raw / name).write_bytes(data)
    run("git", "init", "-q", cwd=repo)
    run("git", "config", "user.email", "t@example.com", cwd=repo)
    run("git", "config", "user.name", "t", cwd=repo)
    (repo / ".gitignore").write_text("/data/\n")
    run(DVC, "init", "-q", cwd=repo)
    run(DVC, "remote", "add", "-d", "local", str(remote), cwd=repo)
    (repo / "data.dvc").write_text("outs:\n- path: data/raw\n")
    run(DVC, "commit", "-f", "-q", "data.dvc", cwd=repo)
    run(DVC, "push", "data.dvc", cwd=repo)
    run(
        "git",
        "add",
        ".gitignore",
        ".dvc/config",
        ".dvc/.gitignore",
        ".dvcignore",
        "data.dvc",
        cwd=repo,
    )
    run("git", "commit", "-q", "-m", "data", cwd=repo)

    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists()
    run(DVC, "pull", "data.dvc", cwd=clone)
    assert tree_hashes(clone / "data" / "raw") == tree_hashes(raw)
    assert len(tree_hashes(raw)) == 20
    status = run(DVC, "status", "--json", "data.dvc", cwd=clone)
    assert json.loads(status.stdout) == {}


def run_ci_step(secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in ENV.items() if k != "GDRIVE_CREDENTIALS_DATA"}
    if secret is not None:
        env["GDRIVE_CREDENTIALS_DATA"] = secret
    return subprocess.run(
        [sys.executable, "scripts/dvc_pull_ci.py"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "secret",
    [None, "", "not-json TOPSECRET-123", '{"type": "authorized_user", "k": "TOPSECRET-123"}'],
)
def test_ci_pull_without_a_usable_secret_fails_fast_in_one_line_naming_it(
    secret: str | None,
) -> None:
    result = run_ci_step(secret)
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "GDRIVE_CREDENTIALS_DATA" in lines[0]
    assert "TOPSECRET" not in result.stdout + result.stderr
