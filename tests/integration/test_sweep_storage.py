"""Optuna studies in a database: a killed sweep resumes, two processes share a PostgreSQL
study, a storage or study that cannot be used is refused, optuna-dashboard reads a study.
Real subprocesses, a real SQLite file and a throwaway PostgreSQL server."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers import PROJECT_DIR, refusal
from tests.integration.test_sweep import TINY, TRAIN_SCRIPT, results

pytestmark = pytest.mark.slow


def sweep_command(sweep_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(TRAIN_SCRIPT),
        "-m",
        *TINY,
        "hparams_search=optuna",
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        f"data.processed_dir={sweep_dir.parent / 'processed'}",
    ]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=PROJECT_DIR)


def study_at(url: str, name: str = "vae_cats") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_killed_sweep_resumes_to_n_trials(tmp_path: Path) -> None:
    """SIGKILL during trial 1, the same command again: trial 0 kept as it was, trial 1
    failed, trial 2 run; three trials in all, not three more."""
    sweep_dir = tmp_path / "sweep"
    command = sweep_command(sweep_dir, "hydra.sweeper.n_trials=3")
    url = f"sqlite:///{sweep_dir}/vae_cats.db"
    first = subprocess.Popen(
        command, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not (sweep_dir / "1").exists() and first.poll() is None:
            assert time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.05)
    finally:
        first.kill()
        first.wait()
    before = study_at(url).trials
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    assert not (sweep_dir / "optimization_results.yaml").exists()

    again = run(command)
    assert again.returncode == 0, again.stderr[-3000:]
    after = study_at(url).trials
    assert [t.number for t in after] == [0, 1, 2]
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert after[0].value == before[0].value and after[0].params == before[0].params
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2"]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["trials"] == {"complete": 2, "fail": 1}
    assert Path(best["best_checkpoint"]).is_file()
    assert best["best_run_dir"] == str(sweep_dir / str(best["best_trial"]))

    done = run(command)  # a finished study runs nothing more
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(study_at(url).trials) == 3 and not (sweep_dir / "3").exists()


def test_sqlite_study_in_use_is_refused(tmp_path: Path) -> None:
    """A second process on the same SQLite study: one line, exit 2, nothing trained."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    with open(sweep_dir / "vae_cats.db.lock", "w") as held:  # what a running sweep holds
        fcntl.flock(held, fcntl.LOCK_EX)
        line = refusal(run(sweep_command(sweep_dir)))
    assert line.startswith("hydra.sweeper.storage: another sweep process is using"), line
    assert "postgresql://" in line and not (sweep_dir / "0").exists()


@pytest.fixture
def sweep_db(tmp_path: Path) -> str:
    """The SQLite URL of the study a sweep in tmp_path/sweep keeps (its folder made)."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    return f"sqlite:///{sweep_dir}/vae_cats.db"


@pytest.mark.parametrize(
    ("case", "start"),
    [
        ("unreachable", "hydra.sweeper.storage: cannot open postgresql://sweeper:***@127.0.0.1:"),
        ("not_a_url", "hydra.sweeper.storage: 'not a url' is not a database URL"),
        ("unsupported", "hydra.sweeper.storage: mysql is not supported"),
        ("other_direction", "hydra.sweeper.direction: study 'vae_cats' in sqlite:///"),
        ("other_params", "hydra.sweeper.params: study 'vae_cats' in sqlite:///"),
        ("unwritable_storage", "hydra.sweeper.storage: cannot write /proc/vae_cats/x.db"),
        ("unwritable_sweep_dir", "hydra.sweep.dir: cannot write /proc/vae_cats"),
    ],
)
def test_unusable_storage_or_study_is_refused_before_any_trial(
    case: str, start: str, tmp_path: Path, sweep_db: str
) -> None:
    sweep_dir = tmp_path / "sweep"
    overrides = {
        "unreachable": [
            f"hydra.sweeper.storage=postgresql://sweeper:secret@127.0.0.1:{free_port()}/x"
        ],
        "not_a_url": ["hydra.sweeper.storage='not a url'"],
        "unsupported": ["hydra.sweeper.storage=mysql://u@127.0.0.1/x"],
        "unwritable_storage": ["hydra.sweeper.storage=sqlite:////proc/vae_cats/x.db"],
        "unwritable_sweep_dir": [],
    }.get(case, [])
    if case == "other_direction":
        optuna.create_study(study_name="vae_cats", storage=sweep_db, direction="minimize")
    if case == "other_params":
        study = optuna.create_study(study_name="vae_cats", storage=sweep_db, direction="maximize")
        study.set_user_attr("optimized_metric", "val/ssim")
        study.set_user_attr("search_space", {"model.beta": "{}"})
    command = sweep_command(sweep_dir, *overrides)
    if case == "unwritable_sweep_dir":
        command[-2] = "hydra.sweep.dir=/proc/vae_cats"
    line = refusal(run(command))
    assert line.startswith(start), line
    assert "secret" not in line
    assert not (sweep_dir / "0").exists() and not (tmp_path / "processed").exists()


def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, or where Debian's postgresql package puts it."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.fail(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free 127.0.0.1 port, run as a non-root user
    (``postgres``, which Debian's package creates, when the tests run as root), trust
    authentication, no Unix socket; stopped and deleted at the end."""
    base = Path(tempfile.mkdtemp(prefix="vae_cats_pg_"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()
    subprocess.run(
        [*prefix, _pg_bin("initdb"), "-D", str(data), "-U", "sweeper", "--auth=trust"],
        check=True,
        capture_output=True,
        cwd=base,
    )
    ctl = [*prefix, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(base / "log")]
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"
    subprocess.run([*ctl, "-o", options, "-w", "start"], check=True, capture_output=True, cwd=base)
    try:
        yield f"postgresql://sweeper:secret@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)


def test_two_processes_share_one_postgresql_study(tmp_path: Path, postgresql_url: str) -> None:
    """Two sweeps at once against one study, each in its own folder (as on two machines):
    exactly n_trials trials, unique numbers, both contributed."""
    storage = f"hydra.sweeper.storage={postgresql_url}"
    processes = [
        subprocess.Popen(
            sweep_command(tmp_path / f"machine{i}", storage, "hydra.sweeper.n_trials=3"),
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        assert "secret" not in stderr
    trials = study_at(postgresql_url).trials
    assert sorted(t.number for t in trials) == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in trials)
    ran = [{int(p.name) for p in (tmp_path / f"machine{i}").glob("[0-9]*")} for i in (0, 1)]
    assert ran[0] and ran[1] and ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == {0, 1, 2}
    counts = []
    for i in (0, 1):
        for record in results(tmp_path / f"machine{i}"):
            assert record["status"] == "finished"
        best = yaml.safe_load((tmp_path / f"machine{i}" / "optimization_results.yaml").read_text())
        assert best["storage"].startswith("postgresql://sweeper:***@127.0.0.1:")
        counts.append(best["trials"])
    # The first process to stop may still see the other's last trial running.
    assert all(sum(c.values()) == 3 for c in counts) and {"complete": 3} in counts


def test_optuna_dashboard_serves_a_study(tmp_path: Path) -> None:
    """optuna-dashboard (the version pinned for Optuna 2.10) lists a study kept as a sweep
    keeps it, with its trials."""
    url = f"sqlite:///{tmp_path}/vae_cats.db"
    study = optuna.create_study(study_name="vae_cats", storage=url, direction="maximize")
    for value in (0.3, 0.5):
        trial = study.ask()
        trial.suggest_float("model.beta", 1e-5, 1e-2, log=True)
        study.tell(trial, value)
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "optuna-dashboard"),
            url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as reply:
                    studies = json.load(reply)["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "no dashboard"
                time.sleep(0.2)
        [listed] = studies
        assert listed["study_name"] == "vae_cats" and listed["directions"] == ["maximize"]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{listed['study_id']}"
        ) as reply:
            detail = json.load(reply)
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete"]
        assert [t["values"] for t in detail["trials"]] == [[0.3], [0.5]]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
