"""DDP on CPU (gloo): two processes, different data, one writer of checkpoints and W&B."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import FAST_TRAIN_OVERRIDES, PROJECT_DIR, run_train
from vae_cats.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow


def test_ddp_two_cpu_processes_split_the_data_and_write_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_DIR))  # the probe callback lives in tests/
    overrides = [o for o in FAST_TRAIN_OVERRIDES if not o.startswith("trainer.devices")]
    result = run_train(
        tmp_path,
        *overrides,
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "data.batch_size=16",
        "callbacks.last_checkpoint.every_n_train_steps=2",
        "+callbacks.probe._target_=tests.helpers.BatchRecorder",
        f"+callbacks.probe.out_dir={tmp_path / 'probe'}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [(tmp_path / "probe" / f"images_rank{r}.txt").read_text().split() for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3 * 16
    assert not set(seen[0]) & set(seen[1]), "both ranks trained on the same images"

    writes = []
    for log in tmp_path.glob("*.log"):
        writes += re.findall(r"rank (\d+) wrote (\S+) at global step (\d+)", log.read_text())
    assert writes and {rank for rank, _, _ in writes} == {"0"}
    assert len(writes) == len(set(writes)), "a checkpoint was written twice"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
    assert result.stdout.count("best checkpoint:") == 1
