"""Helpers shared by the tests: real samples of cat faces and real subprocess runs."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from PIL import Image

from vae_cats.data.sources import BUNDLED_SAMPLE

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
    # exp1 compiles its SSIM loss: tens of seconds per process that a 3-step run never repays.
    "lit_module.compile_loss=false",
]


def bundled_members(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` real JPEG files of the bundled sample, as (file name, bytes)."""
    with tarfile.open(BUNDLED_SAMPLE) as archive:
        members = [m for m in archive if m.isfile()][:count]
        return [(Path(m.name).name, archive.extractfile(m).read()) for m in members]  # type: ignore[union-attr]


def image_bytes(image: Image.Image, image_format: str = "PNG", **params: Any) -> bytes:
    """``image`` encoded in ``image_format`` (Pillow's save parameters in ``params``)."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write (name, bytes) pairs as a tar archive at ``path``."""
    with tarfile.open(path, "w") as archive:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def hostile_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of the given faces plus what a safe reader must refuse: a copy of the first face
    under ``../escape.jpg`` and ``/abs/evil.jpg``, and ``link.jpg``, a symlink to /etc/passwd.
    """
    evil = members[0][1]
    make_tar(path, [*members[1:], ("../escape.jpg", evil), ("/abs/evil.jpg", evil)])
    with tarfile.open(path, "a") as archive:
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
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


def wandb_records(run: Path) -> Iterator[Any]:
    """Every record of an offline W&B run folder's ``run-*.wandb`` file, in write order, as
    ``wandb.proto.wandb_internal_pb2.Record`` (wandb 0.31 ships no Python reader for it).

    The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records
    (4-byte CRC, 2-byte length, 1-byte type: full, first, middle, last), each a serialized
    ``Record``. A killed writer may leave a torn tail, where reading stops.
    """
    from wandb.proto import wandb_internal_pb2

    data = next(run.glob("run-*.wandb")).read_bytes()
    payload, pos, block = b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 or len(chunk) < length:
            return
        payload = chunk if kind in (1, 2) else payload + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            yield record


def wandb_history(run: Path) -> list[dict[str, Any]]:
    """The history rows of an offline W&B run (one per ``log`` call), values JSON-decoded;
    nested keys joined with ``/`` (``val/samples/filenames``)."""
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in r.history.item
        }
        for r in wandb_records(run)
        if r.WhichOneof("record_type") == "history"
    ]


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


class KillAtStep(pl.Callback):
    """Test probe: SIGKILLs its own process, as a pre-empted job dies, at global step ``step``:
    when a training batch starts there (every checkpoint of the steps before is on disk), or
    with ``in_validation=True`` when a validation (not the sanity check) starts there."""

    def __init__(self, step: int, in_validation: bool = False) -> None:
        self.step = step
        self.in_validation = in_validation

    def _kill_at(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.in_validation:
            self._kill_at(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.in_validation and not trainer.sanity_checking:
            self._kill_at(trainer)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The message of a training run or sweep refused before any work: exit 2, nothing on
    stdout, one stderr line ``train_model: error: ...``."""
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    assert result.stdout.strip() == "", result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("train_model: error: "), lines[0]
    return lines[0].removeprefix("train_model: error: ")
