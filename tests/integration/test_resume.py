"""Kill training with SIGKILL mid-epoch and resume it: the user case of issue 6.

About 100 steps per epoch, ``last.ckpt`` every 37 steps, SIGKILL right after the step-37
checkpoint, then the same command plus ``resume=true``.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import PROJECT_DIR, TRAIN_SCRIPT, wandb_history
from vae_cats.checkpoint import load_vae, read_checkpoint

pytestmark = pytest.mark.slow

STEPS, EVERY = 100, 37
OVERRIDES = [
    "data.source=bundled",
    "data.batch_size=8",
    "model.latent_dim=8",
    "model.hidden_channels=[8,16]",
    "trainer.max_epochs=1",
    "trainer.max_time=null",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    f"callbacks.last_checkpoint.every_n_train_steps={EVERY}",
    "callbacks.image_grids=null",
    "logger=wandb_csv",
    "logger.csv.flush_logs_every_n_steps=1",
    "test=false",
]


def command(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(TRAIN_SCRIPT),
        *OVERRIDES,
        *extra,
        f"hydra.run.dir={run_dir}",
        f"data.processed_dir={run_dir.parent / 'processed'}",
    ]


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


def csv_steps(run_dir: Path) -> list[int]:
    rows = []
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with path.open() as handle:
            rows += [int(r["step"]) for r in csv.DictReader(handle) if r.get("train/loss_step")]
    return rows


def test_sigkill_mid_epoch_then_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = subprocess.run(
        command(full_dir), capture_output=True, text=True, timeout=900, cwd=PROJECT_DIR, env=env
    )
    assert full.returncode == 0, full.stderr[-3000:]

    process = subprocess.Popen(
        command(killed_dir),
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert read_checkpoint(last)["global_step"] == EVERY
    # Steps the killed process finished: its checkpoint proves 37; the CSV rows (one per
    # step, counted from 0, flushed every step) may show more that the kill then threw away.
    done_before_kill = max(EVERY, max(csv_steps(killed_dir)) + 1)
    lost = done_before_kill - EVERY
    print(f"steps done before SIGKILL: {done_before_kill}, lost on resume: {lost}")
    assert 0 <= lost <= EVERY

    resumed = subprocess.run(
        command(killed_dir, "resume=true"),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=PROJECT_DIR,
        env=env,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"global step: {STEPS}" in resumed.stdout and f"global step: {STEPS}" in full.stdout
    assert read_checkpoint(last)["global_step"] == STEPS

    # The resumed process logs on to the same W&B run (its id came with the checkpoint):
    # `wandb sync` uploads both offline folders into one run, in start order.
    run_ids = {run.name.rsplit("-", 1)[1] for run in (killed_dir / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1 and read_checkpoint(last)["wandb_run_id"] in run_ids
    # The resumed process goes on from step 37: neither from 0 nor from the epoch end.
    first_run, second_run = wandb_steps(killed_dir)
    assert second_run and min(second_run) >= EVERY and max(second_run) == STEPS - 1
    for run in (first_run, second_run, *wandb_steps(full_dir)):
        assert run == sorted(run), "W&B step axis went backwards"
    resumed_csv = [s for s in csv_steps(killed_dir) if s >= EVERY]
    assert resumed_csv and min(resumed_csv) == EVERY

    # Same step count and bit-identical weights: the stateful data loader resumes at the
    # step-37 batch of the same shuffle, and the checkpoint's random states give the same
    # flips and reparameterisation noise from there on.
    a = torch.cat(
        [
            p.detach().flatten()
            for p in load_vae(full_dir / "checkpoints" / "last.ckpt")[0].parameters()
        ]
    )
    b = torch.cat([p.detach().flatten() for p in load_vae(last)[0].parameters()])
    print(f"max weight difference resumed vs uninterrupted: {float((a - b).abs().max())}")
    assert torch.equal(a, b)
