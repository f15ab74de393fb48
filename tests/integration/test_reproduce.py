"""`make reproduce-model` as a user runs it: the shipped recipe from a commit with a fixed step
count, then packaged; two runs of the same command give the same weights (a few steps here)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers import PROJECT_DIR
from vae_cats.checkpoint import load_vae, read_checkpoint

pytestmark = pytest.mark.slow

# A few steps on the bundled sample; everything else is exp1 as `make reproduce-model` runs it.
SMALL = "data.source=bundled logger=csv trainer.limit_val_batches=1 trainer.limit_test_batches=1"


def reproduce(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "reproduce-model",
            f"REPRODUCE_DIR={out}",
            "REPRODUCE_STEPS=4",
            f"REPRODUCE_ARGS={SMALL} data.processed_dir={out.parent / 'processed'}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=PROJECT_DIR,
        # A developer's tree may hold uncommitted edits; CI's clean clone does not.
        env={**os.environ, "ALLOW_DIRTY": "1", "WANDB_MODE": "offline"},
    )


def weights(path: Path) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in load_vae(path)[0].parameters()])


def test_two_runs_of_the_same_command_give_the_same_model(tmp_path: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        result = reproduce(run)
        assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    packaged = [run / "cats_vae.ckpt" for run in runs]
    for run in runs:
        assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert torch.equal(weights(packaged[0]), weights(packaged[1]))
    for path in packaged:
        checkpoint = read_checkpoint(path)
        lineage = checkpoint["lineage"]
        assert lineage["config"]["trainer"]["max_steps"] == 4
        assert lineage["config"]["trainer"]["max_time"] is None  # max_steps wins
        assert "gmm_sampler" in checkpoint and "test_faces" in checkpoint
        assert lineage["git_commit"] == read_checkpoint(packaged[0])["lineage"]["git_commit"]


def test_a_missing_step_count_is_refused_in_one_line(tmp_path: Path) -> None:
    result = reproduce(tmp_path / "a", "REPRODUCE_STEPS=")
    assert result.returncode != 0
    assert "reproduce-model: REPRODUCE_STEPS" in result.stderr
    assert not (tmp_path / "a").exists()
