"""Offline W&B runs logged by predict are complete on disk when the call returns, also for the
second and third run of one long-lived process (a notebook, a test worker): finish() alone
returned while the run file still held only its header, more often under load."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from torchvision.io import read_image

from tests.helpers import wandb_history
from vae_cats.tracking import log_png_files


def test_each_run_of_one_process_holds_its_picture_row_at_once(tmp_path: Path) -> None:
    for k in range(3):
        picture = tmp_path / f"grid_{k}.png"
        Image.new("RGB", (66, 66), (40 * k, 200, 10)).save(picture)
        run = Path(log_png_files({"samples": picture}, tmp_path / f"out{k}", {"k": k}))
        (row,) = wandb_history(run)
        logged = run / "files" / row["predict/samples/path"]
        assert read_image(str(logged)).tolist() == read_image(str(picture)).tolist()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
