"""Faults as a user meets them: bad config, a NaN loss, a malicious checkpoint, a write
that dies half-way. Real subprocesses, a real pickle payload, a real SIGKILL."""

from __future__ import annotations

import math
import pickle
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import (
    FAST_TRAIN_OVERRIDES,
    PROJECT_DIR,
    TRAIN_SCRIPT,
    run_predict,
    run_train,
)
from vae_cats.checkpoint import CheckpointError, load_vae, read_checkpoint
from vae_cats.predict_model import SHIPPED_MODEL
from vae_cats.training.checkpoint_io import AtomicCheckpointIO


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=-3", "model.latent_dim"),
        ("model.latent_dim=abc", "model.latent_dim"),
        ("model.beta=-0.1", "model.beta"),
        ("data.image_size=60", "model.image_size"),
        ("lit_module.optimizer.lr=-1", "lit_module.optimizer.lr"),
        ("lit_module.kl_warmup_steps=-5", "lit_module.kl_warmup_steps"),
        ("+model.latnt_dim=3", "model.latnt_dim"),
        ("trainer.max_epochs=many", "trainer.max_epochs"),
        ("seed=abc", "seed"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_fraction=1.2", "data.val_fraction"),
        ("data.source=/no/such/cats", "data.source"),
    ],
)
def test_bad_config_is_refused_before_training_naming_the_key(
    override: str, key: str, tmp_path: Path
) -> None:
    result = run_train(tmp_path, *FAST_TRAIN_OVERRIDES, override, timeout=300)
    assert result.returncode == 2
    assert result.stdout.strip() == ""
    line = one_error_line(result)
    assert f"error: {key}:" in line
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    result = run_train(
        tmp_path,
        *[o for o in FAST_TRAIN_OVERRIDES if "limit_train_batches" not in o],
        "trainer.limit_train_batches=12",
        "lit_module.optimizer.lr=1e6",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "logger=csv",
    )
    assert result.returncode == 1
    line = one_error_line(result)
    assert "training loss is nan" in line or "training loss is inf" in line
    step = int(line.split("at global step ")[1].split()[0])
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert str(tmp_path / "checkpoints" / "last.ckpt") in line
    assert checkpoint["global_step"] == step  # the last step whose loss was finite
    net, _ = load_vae(tmp_path / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "last_step"),
    [
        # The first thing a user tries: fewer steps than an epoch (13 steps of 64 faces).
        (["experiments=demo", "trainer.max_steps=4"], 4),
        # The default callbacks stop early on val/loss (the experiments do not): this died in
        # EarlyStopping ("val/loss ... not available") before any validation.
        (["trainer.max_steps=4"], 4),
        # Epochs of 3 steps, last.ckpt every 2: the run ends at step 5, mid-epoch and off
        # that interval; last.ckpt stayed at step 4 (Lightning wrote no final last.ckpt).
        (
            [
                "experiments=demo",
                "trainer.max_steps=5",
                "trainer.limit_train_batches=3",
                "callbacks.last_checkpoint.every_n_train_steps=2",
            ],
            5,
        ),
    ],
)
def test_any_run_length_ends_cleanly_with_its_final_state_in_last_ckpt(
    overrides: list[str], last_step: int, tmp_path: Path
) -> None:
    result = run_train(tmp_path, "data.source=bundled", "logger=csv", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"global step: {last_step}" in result.stdout
    assert f"step budget: {last_step} optimiser steps in all (trainer.max_steps)" in result.stdout
    assert "steps/s" in result.stdout and "load average" in result.stdout
    # The final weights were validated (the test SSIM comes from the best checkpoint) and
    # last.ckpt holds them.
    assert "test SSIM:" in result.stdout
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == last_step
    assert last["callbacks"]["StepBudget"]["total_steps"] == last_step
    best = read_checkpoint(tmp_path / "checkpoints" / "best.ckpt")
    assert best["global_step"] <= last_step


class WritesMarker:
    """Unpickling this object opens (so creates) the file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def malicious_ckpt(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "global_step": 0, "payload": WritesMarker(marker)}, path)
    with zipfile.ZipFile(path) as archive:  # a real pickle that calls open() on load
        assert any(b"open" in archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    assert not marker.exists()
    return path, marker


def test_malicious_checkpoint_is_refused_by_predict(
    malicious_ckpt: tuple[Path, Path], tmp_path: Path
) -> None:
    path, marker = malicious_ckpt
    result = run_predict("--model", str(path), "--out", str(tmp_path / "out"), "--no-wandb")
    assert result.returncode != 0
    assert str(path) in one_error_line(result)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["ckpt_path", "resume"])
def test_malicious_checkpoint_is_refused_by_resume(
    how: str, malicious_ckpt: tuple[Path, Path], tmp_path: Path
) -> None:
    path, marker = malicious_ckpt
    run_dir = tmp_path / "run"
    if how == "resume":
        (run_dir / "checkpoints").mkdir(parents=True)
        path = path.rename(run_dir / "checkpoints" / "last.ckpt")
        args = ["resume=true"]
    else:
        args = [f"ckpt_path={path}"]
    result = run_train(run_dir, *FAST_TRAIN_OVERRIDES, "logger=csv", *args, timeout=300)
    assert result.returncode == 2
    line = one_error_line(result)
    assert str(path) in line and "refused" in line
    assert not marker.exists()
    with pytest.raises(CheckpointError):  # Lightning's own load path goes through the plugin
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["packaged", "other_architecture"])
def test_checkpoint_training_cannot_go_on_from_is_refused_naming_it(
    kind: str, trained_run: Path, tmp_path: Path
) -> None:
    if kind == "packaged":  # the shipped model: network weights and a mixture, no optimiser
        latent_dim = read_checkpoint(SHIPPED_MODEL)["net_config"]["latent_dim"]
        path, override = SHIPPED_MODEL, f"model.latent_dim={latent_dim}"
        expected = "not a training checkpoint"
    else:  # the demo run's checkpoint (three stages, latent 128) under another network
        path, override = trained_run / "checkpoints" / "best.ckpt", "model.latent_dim=16"
        expected = "holds nothing for net.encoder.3.0.weight"  # the fourth stage it lacks
    run_dir = tmp_path / "run"
    result = run_train(run_dir, *FAST_TRAIN_OVERRIDES, f"ckpt_path={path}", override)
    assert result.returncode == 2
    line = one_error_line(result)
    assert str(path) in line and expected in line
    assert result.stdout.strip() == "" and not (run_dir / "checkpoints").exists()


class FailsHalfWay:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        raise OSError("disk full")


def test_failing_write_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(10**6), "x": FailsHalfWay()}, path)
    checkpoint = io.load_checkpoint(path)
    assert checkpoint["global_step"] == 1 and torch.equal(checkpoint["w"], torch.ones(1000))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


WRITER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from vae_cats.training.checkpoint_io import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), Path(sys.argv[1])
    step = 0
    while True:
        step += 1
        io.save_checkpoint({"global_step": step, "w": torch.full((4_000_000,), float(step))}, path)
        print(step, flush=True)
    """
)


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for _ in range(3):  # at least three whole checkpoints written, then kill mid-stream
        process.stdout.readline()
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    checkpoint = read_checkpoint(path)
    step = checkpoint["global_step"]
    assert step >= 3 and torch.equal(checkpoint["w"], torch.full((4_000_000,), float(step)))
    assert not math.isnan(float(checkpoint["w"][0]))


def test_pickle_payload_really_writes_when_loaded_unsafely(tmp_path: Path) -> None:
    """The fixture's file is a real exploit: full unpickling does create the marker."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(WritesMarker(marker))).close()
    assert marker.exists()


# -- run length, interruption and noise (issue 22) ------------------------------------------

SHORT_DEMO = [
    "experiments=demo",
    "data.source=bundled",
    "logger=csv",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.mark.slow
def test_an_explicit_max_steps_wins_over_the_experiments_max_time(tmp_path: Path) -> None:
    """The demo's max_time stopped a run set for N steps wherever the time ran out, with the
    schedule set for N never annealed."""
    result = run_train(
        tmp_path, *SHORT_DEMO, "trainer.max_steps=12", "trainer.max_time=00:00:00:01"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trainer.max_steps=12 wins over trainer.max_time=00:00:00:01" in result.stdout
    assert "step budget: 12 optimiser steps in all (trainer.max_steps)" in result.stdout
    assert "global step: 12" in result.stdout
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 12


@pytest.mark.slow
def test_a_time_budget_is_measured_from_the_first_steps_and_warm_up_is_reported(
    tmp_path: Path,
) -> None:
    """A run that ended before its first epoch end printed no step budget, never left its LR
    warm-up and said nothing about it."""
    result = run_train(
        tmp_path,
        *SHORT_DEMO,
        "trainer.max_time=00:00:00:30",
        "lit_module.scheduler.warmup_steps=1000",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    steps = int(result.stdout.split("global step: ")[1].split()[0])
    if steps >= 8:
        # Steps 1-3 are not timed, the ends of steps 4-8 are: the total is fixed at step 8,
        # before the first epoch end (13 steps of 64 bundled faces).
        (budget,) = [line for line in result.stdout.splitlines() if "measured over" in line]
        assert "steps/s measured over 5 steps at step 8:" in budget, budget
    else:  # a machine so busy that 30 s held fewer steps: that is said too
        assert f"trainer.max_time ran out at step {steps}, before the speed was measured" in (
            result.stdout
        )
    if steps > 14:
        assert "steps/s refined at step 14 with the first epoch end timed" in result.stdout
    warning = f"the run ended inside the LR warm-up, at step {steps} of 1000"
    assert warning in result.stdout
    record = yaml.safe_load((tmp_path / "result.yaml").read_text())
    assert record["status"] == "finished"
    assert any(w.startswith(warning) for w in record["warnings"]), record


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_current_step_and_prints_the_command_that_resumes_it(
    signum: signal.Signals, tmp_path: Path
) -> None:
    """Ctrl-C left last.ckpt steps behind, no result.yaml and no hint how to go on."""
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        *SHORT_DEMO,
        "trainer.max_steps=30",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        f"data.processed_dir={tmp_path / 'processed'}",
        f"hydra.run.dir={run_dir}",
    ]
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=PROJECT_DIR)
        deadline = time.monotonic() + 300
        # The first periodic last.ckpt (step 2) says training is under way.
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signum)
        returncode = process.wait(timeout=300)
    stderr = (tmp_path / "err.txt").read_text()
    assert returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if "interrupted by" in line]
    assert signal.Signals(signum).name in line and str(last) in line
    step = int(line.split("at global step ")[1].split()[0])
    assert 2 <= step < 30
    assert read_checkpoint(last)["global_step"] == step
    assert yaml.safe_load((run_dir / "result.yaml").read_text())["status"] == "interrupted"
    (resume,) = [
        line.split("resume with: ", 1)[1]
        for line in stderr.splitlines()
        if "resume with: " in line
    ]
    args = shlex.split(resume)
    assert args[:2] == ["python", str(TRAIN_SCRIPT)]
    assert args[-2:] == ["resume=true", f"hydra.run.dir={run_dir}"]
    if signum != signal.SIGINT:
        return
    # The same command without resume=true is refused: it would start over beside them.
    fresh = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=PROJECT_DIR)
    assert fresh.returncode == 2
    assert "checkpoint_dir:" in one_error_line(fresh)
    # The printed command goes on from that step to the end.
    resumed = subprocess.run(
        [sys.executable, *args[1:]], capture_output=True, text=True, timeout=600, cwd=PROJECT_DIR
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {last} (global step {step})" in resumed.stdout
    assert "global step: 30" in resumed.stdout


@pytest.mark.slow
def test_a_demo_run_prints_none_of_the_libraries_known_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B's anonymous-setting warning, Lightning's litlogger advert, torch's LeafSpec
    deprecation and its "No CUDA runtime" line came with every run."""
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # as a user runs it: W&B speaks
    overrides = [o for o in SHORT_DEMO if o != "logger=csv"]  # the default logger: W&B
    result = run_train(tmp_path, *overrides, "trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    for noise in (
        "anonymous setting has no effect",
        "litlogger",
        "LeafSpec",
        "No CUDA runtime is found",
    ):
        assert noise not in output, noise
    assert "wandb" in output  # W&B itself still reports its offline run
