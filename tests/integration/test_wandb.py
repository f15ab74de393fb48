"""What a person sees on the W&B dashboard, read back from the offline run files of a real
short training (two epochs of the demo recipe on the bundled faces) and of a predict run:
pictures pixel for pixel equal to the local PNGs, finite scalars, config and lineage, the
best-checkpoint artifact, and docs that name the keys really logged."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import (
    FAST_TRAIN_OVERRIDES,
    PROJECT_DIR,
    run_predict,
    run_train,
    wandb_history,
    wandb_records,
)
from vae_cats.checkpoint import read_checkpoint
from vae_cats.data.store import load_splits

pytestmark = pytest.mark.slow

# Two epochs of 5 real steps, a validation after each: two pictures of each kind to compare.
TRAIN_OVERRIDES = [
    *(o for o in FAST_TRAIN_OVERRIDES if "train_batches" not in o and "max_epochs" not in o),
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=5",
    "trainer.num_sanity_val_steps=0",
]
PICTURES = ("val/reconstructions", "val/samples")
# Every scalar a training run with test=true logs (LearningRateMonitor names lr-<optimiser>).
SCALARS = {
    *(
        f"train/{name}_{when}"
        for name in ("loss", "recon_loss", "kl")
        for when in ("step", "epoch")
    ),
    "train/beta",
    *(f"{stage}/{name}" for stage in ("val", "test") for name in ("loss", "recon_loss", "kl")),
    *(f"{stage}/{name}" for stage in ("val", "test") for name in ("ssim", "psnr")),
    "lr-AdamW",
    "epoch",
    "trainer/global_step",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("wandb_train")
    result = run_train(run_dir, "experiments=demo", *TRAIN_OVERRIDES)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def wandb_run(run_dir: Path) -> Path:
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def history(wandb_run: Path) -> list[dict[str, Any]]:
    return wandb_history(wandb_run)


def records(wandb_run: Path, kind: str) -> list[Any]:
    return [
        getattr(r, kind) for r in wandb_records(wandb_run) if r.WhichOneof("record_type") == kind
    ]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def cells(grid: np.ndarray) -> list[np.ndarray]:
    """The 64x64 cells of a ``make_grid`` picture (2-pixel gaps), row by row."""
    rows, cols = (grid.shape[0] - 2) // 66, (grid.shape[1] - 2) // 66
    return [
        grid[2 + r * 66 : 66 + r * 66, 2 + c * 66 : 66 + c * 66]
        for r in range(rows)
        for c in range(cols)
    ]


def logged_pictures(history: list[dict[str, Any]], wandb_run: Path) -> dict[tuple[str, int], Path]:
    """(key, epoch) -> the picture's file in the run, from the history rows and captions."""
    logged = {}
    for row in history:
        for key in PICTURES:
            if f"{key}/filenames" in row:
                (name,) = row[f"{key}/filenames"]
                (caption,) = row[f"{key}/captions"]
                epoch = int(re.match(r"epoch (\d+):", caption)[1])  # type: ignore[index]
                assert (key, epoch) not in logged
                logged[key, epoch] = wandb_run / "files" / name
    return logged


def test_training_pictures_on_wandb_are_the_local_pngs(
    run_dir: Path, wandb_run: Path, history: list[dict[str, Any]]
) -> None:
    logged = logged_pictures(history, wandb_run)
    assert sorted(logged) == [(key, epoch) for key in PICTURES for epoch in (0, 1)]
    # Every picture in the run's media folder is one of these, and every local PNG is logged.
    media = (wandb_run / "files" / "media" / "images").rglob("*.png")
    assert sorted(media) == sorted(logged.values())
    local = {(f"val/{p.stem[10:]}", int(p.stem[6:9])) for p in (run_dir / "images").glob("*.png")}
    assert local == set(logged)

    val = load_splits(run_dir / "processed" / "cats_sample")["val"][:16]  # uint8, as ingested
    faces = [face.permute(1, 2, 0).numpy() for face in val]
    for (key, epoch), path in logged.items():
        shown = pixels(path)
        assert np.array_equal(
            shown, pixels(run_dir / "images" / f"epoch_{epoch:03d}_{key[4:]}.png")
        )
        grid = cells(shown)
        if key == "val/reconstructions":  # rows of 8 validation faces, then their reconstructions
            inputs = [c for i, c in enumerate(grid) if i // 8 % 2 == 0]
            assert len(inputs) == len(faces) == 16
            assert all(np.array_equal(a, b) for a, b in zip(inputs, faces, strict=True))
            grid = [c for i, c in enumerate(grid) if i // 8 % 2 == 1]
        assert len(grid) == 16
        # Decoded pictures, not a flat (black) field: every cell has some structure.
        assert min(float(c.std()) for c in grid) > 1.0, f"{key} epoch {epoch} is flat"
    for key in PICTURES:
        assert not np.array_equal(pixels(logged[key, 0]), pixels(logged[key, 1]))


def test_scalars_are_finite_and_val_ssim_rises(history: list[dict[str, Any]]) -> None:
    values: dict[str, list[float]] = {}
    for row in history:
        for key, value in row.items():
            if isinstance(value, int | float) and not key.startswith("_"):
                values.setdefault(key, []).append(float(value))
    assert set(values) >= SCALARS
    bad = {k: v for k, v in values.items() if not all(math.isfinite(x) for x in v)}
    assert not bad
    ssim = values["val/ssim"]
    assert len(ssim) == 2 and 0 < ssim[0] < ssim[1] <= 1
    steps = [row["trainer/global_step"] for row in history]
    assert steps == sorted(steps), "the dashboard's step axis goes backwards"
    # Each validation's pictures sit at the trainer/global_step of its val/ssim.
    metric_steps = [row["trainer/global_step"] for row in history if "val/ssim" in row]
    for key in PICTURES:
        shown_at = [row["trainer/global_step"] for row in history if f"{key}/filenames" in row]
        assert shown_at == metric_steps


def test_config_and_lineage_are_in_the_run(run_dir: Path, wandb_run: Path) -> None:
    lineage = read_checkpoint(run_dir / "checkpoints" / "best.ckpt")["lineage"]
    manifest = json.loads((run_dir / "processed" / "cats_sample" / "manifest.json").read_text())
    assert lineage["data_hash"] == manifest["data_hash"]
    config = {
        item.key: json.loads(item.value_json)
        for record in records(wandb_run, "config")
        for item in record.update
    }
    assert config["git_commit"] == lineage["git_commit"] and len(lineage["git_commit"]) >= 7
    assert config["data_hash"] == lineage["data_hash"]
    assert config["config"] == lineage["config"]
    assert config["config"]["tags"] == ["demo"] and config["config"]["model"]["latent_dim"] == 128
    (run,) = records(wandb_run, "run")
    assert run.job_type == "train" and list(run.tags) == ["demo"]
    # lineage.yaml is among the files the run records, so `wandb sync` uploads it.
    saved = {f.path for record in records(wandb_run, "files") for f in record.files}
    assert "lineage.yaml" in saved
    assert yaml.safe_load((wandb_run / "files" / "lineage.yaml").read_text()) == lineage
    (exit_record,) = records(wandb_run, "exit")
    assert exit_record.exit_code == 0


def test_best_checkpoint_is_logged_as_an_artifact(
    run_dir: Path, wandb_run: Path, history: list[dict[str, Any]]
) -> None:
    best = run_dir / "checkpoints" / "best.ckpt"
    checkpoint = read_checkpoint(best)
    (artifact,) = records(wandb_run, "artifact")
    run_id = wandb_run.name.rsplit("-", 1)[1]
    assert (artifact.name, artifact.type) == (f"model-{run_id}", "model")
    assert "best" in artifact.aliases
    (entry,) = artifact.manifest.contents
    md5 = base64.b64encode(hashlib.md5(best.read_bytes()).digest()).decode()
    assert (entry.path, entry.size, entry.digest) == ("best.ckpt", best.stat().st_size, md5)
    # The copy `wandb sync` uploads, staged under $WANDB_DATA_DIR (a temporary one in tests).
    staged = Path(entry.local_path)
    assert staged.is_relative_to(os.environ["WANDB_DATA_DIR"])
    assert staged.read_bytes() == best.read_bytes()
    metadata = json.loads(artifact.metadata)
    val_loss = [row["val/loss"] for row in history if "val/loss" in row]
    assert metadata == {
        "git_commit": checkpoint["lineage"]["git_commit"],
        "data_hash": checkpoint["lineage"]["data_hash"],
        "global_step": checkpoint["global_step"],
        "monitor": "val/loss",
        "best_model_score": pytest.approx(min(val_loss)),
    }


def test_predict_pictures_on_wandb_are_the_pngs(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "predict"
    model = run_dir / "checkpoints" / "best.ckpt"
    args = ("--model", str(model), "--n", "8", "--interpolate", "--traverse", "--out", str(out))
    result = run_predict(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    (row,) = wandb_history(wandb_run)
    keys = ("samples", "reconstructions", "interpolation", "traversal")
    shown = {key: wandb_run / "files" / row[f"predict/{key}/path"] for key in keys}
    assert sorted((wandb_run / "files" / "media" / "images").rglob("*.png")) == sorted(
        shown.values()
    )
    for key, path in shown.items():
        picture = pixels(path)
        assert np.array_equal(picture, pixels(out / f"{key}.png"))
        assert min(float(c.std()) for c in cells(picture)) > 1.0, f"{key} is flat"
    (run,) = records(wandb_run, "run")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert run.job_type == "predict" and config["model"] == str(model)
    assert config["git_commit"] == read_checkpoint(model)["lineage"]["git_commit"]


@pytest.mark.parametrize("doc", ["README.md", "docs/training.md"])
def test_docs_name_only_logged_keys(doc: str, history: list[dict[str, Any]]) -> None:
    text = (PROJECT_DIR / doc).read_text()
    section = text.split("## Weights & Biases", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:train|val|test|predict|trainer)/[a-z_]+|lr-\w+)`", section))
    assert {"train/loss_step", "val/ssim", "val/samples"} <= named
    logged = {key.removesuffix("/filenames") for row in history for key in row}
    # Predict's keys are checked against its run by test_predict_pictures_on_wandb_are_the_pngs.
    predict = {
        f"predict/{k}" for k in ("samples", "reconstructions", "interpolation", "traversal")
    }
    assert named - logged <= predict, f"{doc} names keys no run logs"
