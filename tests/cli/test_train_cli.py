"""The training entry point as a user runs it: run folder, checkpoints, pictures, W&B files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.io import read_image

from tests.helpers import wandb_history
from vae_cats.checkpoint import read_checkpoint
from vae_cats.hardware import describe_hardware, resolve_precision

pytestmark = pytest.mark.slow


def test_run_folder_holds_checkpoints_with_lineage(trained_run: Path) -> None:
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = read_checkpoint(trained_run / "checkpoints" / name)
        lineage = checkpoint["lineage"]
        manifest = json.loads(
            (trained_run / "processed" / "cats_sample" / "manifest.json").read_text()
        )
        assert lineage["data_hash"] == manifest["data_hash"]
        assert len(lineage["git_commit"]) >= 7
        assert lineage["config"]["model"]["latent_dim"] == checkpoint["net_config"]["latent_dim"]
        # The demo names precision: auto; the lineage holds what it resolved to here.
        assert lineage["config"]["trainer"]["precision"] == resolve_precision("auto").value
        assert lineage["hardware"] == describe_hardware()


def test_run_prints_the_precision_it_chose_and_why(trained_run: Path) -> None:
    chosen = resolve_precision("auto")
    log = (trained_run / "train_model.log").read_text()
    assert f"precision: {chosen.value} ({chosen.reason})" in log


def test_run_folder_holds_picture_grids(trained_run: Path) -> None:
    images = trained_run / "images"
    assert sorted(p.name for p in images.glob("*.png")) == [
        "epoch_000_reconstructions.png",
        "epoch_000_samples.png",
    ]
    # 16 cells of 64x64 with 2-pixel gaps, 8 a row; reconstruction rows follow the face rows.
    samples = read_image(str(images / "epoch_000_samples.png"))
    assert samples.shape == (3, 2 + 2 * 66, 2 + 8 * 66)
    pairs = read_image(str(images / "epoch_000_reconstructions.png"))
    assert pairs.shape == (3, 2 + 4 * 66, 2 + 8 * 66)
    for cell in (samples[:, 2:66, 2:66], pairs[:, 68:132, 2:66]):
        assert cell.float().std() > 1.0  # a decoded face, not a flat field


def test_offline_wandb_run_sits_in_the_run_folder_with_images_and_config(
    trained_run: Path,
) -> None:
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = wandb_history(runs[0])
    for key in ("reconstructions", "samples"):
        logged = [
            row[f"val/{key}/filenames"][0] for row in history if f"val/{key}/filenames" in row
        ]
        assert len(logged) == 2  # validations after steps 3 and 6, both in epoch 0
        # The later one is the picture images/ keeps for epoch 0: the same pixels.
        shown = read_image(str(runs[0] / "files" / logged[-1]))
        assert torch.equal(shown, read_image(str(trained_run / "images" / f"epoch_000_{key}.png")))
    lineage = yaml.safe_load((runs[0] / "files" / "lineage.yaml").read_text())
    assert lineage["config"]["tags"] == ["demo"]
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert lineage["data_hash"].encode() in records  # the config record of the run itself
    assert b"model-" in records  # the best checkpoint, logged as an artifact
