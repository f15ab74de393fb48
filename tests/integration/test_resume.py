"""Kill training with SIGKILL and resume it, over several epochs: the user cases of issues 6
and 17.

Three epochs of 13 steps (the bundled faces in batches of 64), ``last.ckpt`` every 5 steps,
after every validation and at the end. One uninterrupted run; one run killed mid-epoch
(step 20), resumed, killed again at the epoch boundary (step 26, right after the end-of-epoch
checkpoint), resumed to the end, all without the sanity check; one run killed during the
epoch-end validation at step 13 and resumed. Every resumed run must end with weights bit-equal
to the uninterrupted run's. The learning rate anneals over an explicit ``trainer.max_steps``,
so the schedule is the same whatever the machine's speed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import PROJECT_DIR, TRAIN_SCRIPT, wandb_history
from vae_cats.checkpoint import load_vae, read_checkpoint

pytestmark = pytest.mark.slow

STEPS, EVERY = 39, 5
OVERRIDES = [
    "data.source=bundled",
    "data.batch_size=64",
    # Random shifts and colour jitter draw from torch's global generator too.
    "data.shift=0.05",
    "data.color_jitter=0.1",
    "model.latent_dim=8",
    "model.hidden_channels=[8,16]",
    "lit_module.kl_warmup_steps=20",
    "lit_module.scheduler.warmup_steps=5",
    "trainer.max_epochs=-1",
    f"trainer.max_steps={STEPS}",
    "trainer.max_time=null",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    f"callbacks.last_checkpoint.every_n_train_steps={EVERY}",
    "callbacks.image_grids=null",
    "logger=wandb_csv",
    "logger.csv.flush_logs_every_n_steps=1",
    "test=false",
]


def train(
    run_dir: Path, *extra: str, overrides: list[str] = OVERRIDES
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        *overrides,
        *extra,
        f"hydra.run.dir={run_dir}",
        f"data.processed_dir={run_dir.parent / 'processed'}",
    ]
    # PYTHONPATH: the kill callback (tests.helpers.KillAtStep) is imported by the training
    # process, whose sys.path starts at vae_cats/, not at the project root.
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONPATH": str(PROJECT_DIR),
    }
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, cwd=PROJECT_DIR, env=env
    )


def killed_at(run_dir: Path, step: int, *extra: str, in_validation: bool = False) -> None:
    """Train until the process SIGKILLs itself at ``step`` (``tests.helpers.KillAtStep``)."""
    result = train(
        run_dir,
        *extra,
        "+callbacks.kill._target_=tests.helpers.KillAtStep",
        f"+callbacks.kill.step={step}",
        f"+callbacks.kill.in_validation={in_validation}",
    )
    assert result.returncode == -9, result.stderr[-3000:]


def weights(checkpoint: Path) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in load_vae(checkpoint)[0].parameters()])


def wandb_steps(run_dir: Path) -> list[list[int]]:
    """``trainer/global_step`` of every history record, per offline W&B run (oldest first)."""
    return [
        [
            int(row["trainer/global_step"])
            for row in wandb_history(run)
            if "trainer/global_step" in row
        ]
        for run in sorted((run_dir / "wandb").glob("offline-run-*"))
    ]


def csv_steps(run_dir: Path) -> list[list[int]]:
    """Steps of the per-step training rows, per CSV log (one per process, oldest first)."""
    logs = sorted(
        (run_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:])
    )
    steps = []
    for path in logs:
        with path.open() as handle:
            steps.append(
                [int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss_step")]
            )
    return steps


def epoch_losses(run_dir: Path) -> dict[int, float]:
    """``train/loss_epoch`` of every epoch in the run's CSV logs (any process)."""
    losses = {}
    for path in (run_dir / "csv").glob("version_*/metrics.csv"):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss_epoch"):
                    losses[int(row["epoch"])] = float(row["train/loss_epoch"])
    return losses


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "uninterrupted"
    result = train(run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"global step: {STEPS}" in result.stdout
    return run_dir / "checkpoints" / "last.ckpt"


def test_killed_mid_epoch_and_at_an_epoch_end_resumes_to_the_same_weights(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    no_sanity = "trainer.num_sanity_val_steps=0"

    killed_at(run_dir, 20, no_sanity)  # mid-epoch: epochs are steps 0-12, 13-25, 26-38
    assert read_checkpoint(last)["global_step"] == 20
    killed_at(run_dir, 26, no_sanity, "resume=true")  # after the step-26 epoch-end checkpoint
    checkpoint = read_checkpoint(last)
    assert (checkpoint["global_step"], checkpoint["epoch"]) == (26, 1)
    assert checkpoint["callbacks"]["StepBudget"]["total_steps"] == STEPS
    result = train(run_dir, no_sanity, "resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"global step: {STEPS}" in result.stdout
    assert "step budget: 39 optimiser steps (from the checkpoint)" in result.stdout

    # Same step count and epoch, bit-identical weights: the data loader resumes inside the
    # epoch's shuffle, the next epochs are shuffled as the uninterrupted run's, and the
    # checkpoint's random states give the same flips, shifts, jitter and noise from there on.
    assert read_checkpoint(last)["epoch"] == read_checkpoint(uninterrupted)["epoch"]
    difference = float((weights(uninterrupted) - weights(last)).abs().max())
    print(f"max weight difference resumed twice vs uninterrupted: {difference}")
    assert torch.equal(weights(uninterrupted), weights(last))

    # Each process logs on to the same W&B run (its id came with the checkpoint), going on
    # from its checkpoint's step: neither from 0 nor from the epoch end.
    run_ids = {run.name.rsplit("-", 1)[1] for run in (run_dir / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1 and read_checkpoint(last)["wandb_run_id"] in run_ids
    processes = wandb_steps(run_dir)
    assert len(processes) == 3
    for steps in processes:
        assert steps == sorted(steps), "W&B step axis went backwards"
    # (A SIGKILLed process may lose its last W&B records; the CSV rows are flushed per step.)
    assert min(processes[2]) >= 26 and max(processes[2]) == STEPS - 1
    assert [min(s) for s in csv_steps(run_dir)] == [0, 20, 26]

    # Epoch 1 ran in two processes (steps 13-19, then 20-25): its train/loss_epoch still
    # covers all 13 steps (it covered the 6 after the resume: 0.3889 against 0.4122).
    expected = epoch_losses(uninterrupted.parent.parent)
    assert sorted(expected) == [0, 1, 2]
    assert epoch_losses(run_dir) == pytest.approx(expected, rel=1e-6)


def test_killed_during_the_epoch_end_validation_resumes_to_the_same_weights(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    killed_at(run_dir, 13, in_validation=True)
    # The epoch's last step (13) is saved only once its validation is over: the file on
    # disk is the step-10 one, which Lightning resumes inside epoch 0.
    assert read_checkpoint(last)["global_step"] == 10
    result = train(run_dir, "resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(last)["epoch"] == read_checkpoint(uninterrupted)["epoch"]
    assert torch.equal(weights(uninterrupted), weights(last))


def test_the_same_seed_gives_the_same_steps_with_the_compiled_loss(tmp_path: Path) -> None:
    """exp1's arithmetic (bf16 autocast, channels-last, the compiled SSIM loss) on CPU."""
    exp1 = [
        "experiments=exp1",
        "lit_module.compile_loss=true",
        "trainer.max_steps=4",
        "trainer.max_time=null",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
    ]
    # exp1's conv bottleneck needs a latent size that fills the tiny net's 16x16 grid.
    tiny = [o for o in OVERRIDES if not o.startswith("model.latent_dim=")]
    runs = []
    for name in ("a", "b"):
        result = train(tmp_path / name, *exp1, overrides=[*tiny, "model.latent_dim=256"])
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(weights(tmp_path / name / "checkpoints" / "last.ckpt"))
    assert torch.equal(*runs)
