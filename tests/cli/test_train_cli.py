"""The training entry point as a user runs it: run folder, checkpoints, pictures, W&B files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from vae_cats.checkpoint import read_checkpoint

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


def test_run_folder_holds_picture_grids(trained_run: Path) -> None:
    images = sorted(p.name for p in (trained_run / "images").glob("*.png"))
    assert "epoch_000_reconstructions.png" in images and "epoch_000_samples.png" in images


def test_offline_wandb_run_sits_in_the_run_folder_with_images_and_config(
    trained_run: Path,
) -> None:
    runs = list((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = {
        p.name.split("_")[0]
        for p in (runs[0] / "files" / "media" / "images" / "val").glob("*.png")
    }
    assert media == {"reconstructions", "samples"}
    lineage = yaml.safe_load((runs[0] / "files" / "lineage.yaml").read_text())
    assert lineage["config"]["tags"] == ["demo"]
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert lineage["data_hash"].encode() in records  # the config record of the run itself
    assert b"model-" in records  # the best checkpoint, logged as an artifact
