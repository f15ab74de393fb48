"""Helpers shared by the tests: real samples of cat faces and real subprocess runs."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from vae_cats.data.ingest import BUNDLED_SAMPLE

PROJECT_DIR = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = PROJECT_DIR / "vae_cats" / "train_model.py"
PREDICT_SCRIPT = PROJECT_DIR / "vae_cats" / "predict_model.py"
EXPERIMENTS = sorted(p.stem for p in (PROJECT_DIR / "conf" / "experiments").glob("*.yaml"))

# One epoch of 3 real optimiser steps, one validation batch, bundled data, CPU: seconds.
FAST_TRAIN_OVERRIDES = [
    "data.source=bundled",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.max_time=null",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
]


def bundled_members(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` real JPEG files of the bundled sample, as (file name, bytes)."""
    with tarfile.open(BUNDLED_SAMPLE) as archive:
        members = [m for m in archive if m.isfile()][:count]
        return [(Path(m.name).name, archive.extractfile(m).read()) for m in members]  # type: ignore[union-attr]


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write (name, bytes) pairs as a tar archive at ``path``."""
    with tarfile.open(path, "w") as archive:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def run_train(
    run_dir: Path, *overrides: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run the Hydra training entry point as a real subprocess with outputs in ``run_dir``."""
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        *overrides,
        f"hydra.run.dir={run_dir}",
        f"data.processed_dir={run_dir / 'processed'}",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_DIR
    )


def run_predict(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run the predict script as a real subprocess."""
    command = [sys.executable, str(PREDICT_SCRIPT), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_DIR
    )


class BatchRecorder(pl.Callback):
    """Test probe: appends a flip-invariant fingerprint (pixel sum) of every training image
    this process sees to ``<out_dir>/images_rank<global rank>.txt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        sums = (batch.double() * 255).round().sum(dim=(1, 2, 3)).long().tolist()
        with (self.out_dir / f"images_rank{trainer.global_rank}.txt").open("a") as handle:
            handle.writelines(f"{s}\n" for s in sums)
