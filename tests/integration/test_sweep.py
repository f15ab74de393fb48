"""Hydra multirun and the Optuna sweeper, on a tiny config, as real subprocesses."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import FAST_TRAIN_OVERRIDES, PROJECT_DIR, TRAIN_SCRIPT
from vae_cats.checkpoint import read_checkpoint
from vae_cats.training.config_check import VAL_METRICS

pytestmark = pytest.mark.slow

TINY = [
    *FAST_TRAIN_OVERRIDES,
    "model.latent_dim=8",
    "model.hidden_channels=[8,16]",
    "data.batch_size=16",
    "logger=csv",
    "callbacks.image_grids=null",
    "test=false",
]


def sweep(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        "-m",
        *TINY,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        f"data.processed_dir={sweep_dir.parent / 'processed'}",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=PROJECT_DIR)


def results(sweep_dir: Path) -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(sweep_dir.glob("*/result.yaml"))]


def test_multirun_jobs_get_their_own_folders(tmp_path: Path) -> None:
    result = sweep(tmp_path / "sweep", "model.beta=1e-4,5e-4")
    assert result.returncode == 0, result.stderr[-3000:]
    for job, beta in (("0", 1e-4), ("1", 5e-4)):
        last = read_checkpoint(tmp_path / "sweep" / job / "checkpoints" / "last.ckpt")
        assert last["global_step"] == 3 and last["lineage"]["config"]["model"]["beta"] == beta
    assert [r["status"] for r in results(tmp_path / "sweep")] == ["finished", "finished"]


def test_optuna_sweep_records_a_diverged_trial_and_names_the_best(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        sweep_dir,
        "hparams_search=optuna_divergence",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_lr = {
        next(o for o in r["overrides"] if o.startswith("lit_module.optimizer.lr=")): r
        for r in results(sweep_dir)
    }
    assert set(by_lr) == {"lit_module.optimizer.lr=0.001", "lit_module.optimizer.lr=10000.0"}
    assert by_lr["lit_module.optimizer.lr=10000.0"]["status"] == "failed"
    assert "training loss is" in by_lr["lit_module.optimizer.lr=10000.0"]["message"]
    assert by_lr["lit_module.optimizer.lr=0.001"]["status"] == "finished"
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"lit_module.optimizer.lr": 0.001}
    assert best["best_value"] == pytest.approx(by_lr["lit_module.optimizer.lr=0.001"]["val/ssim"])


def test_optuna_sweep_optimises_the_configured_metric(tmp_path: Path) -> None:
    """optimized_metric=val/psnr: the trial returns PSNR (dB, the value the CSV logger wrote
    for that validation), not the SSIM that used to be hard-coded."""
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        sweep_dir,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "optimized_metric=val/psnr",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [record] = results(sweep_dir)
    assert record["status"] == "finished" and record["optimized_metric"] == "val/psnr"
    with next((sweep_dir / "0" / "csv").glob("version_*/metrics.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(VAL_METRICS) <= set(rows[0])  # every metric a sweep may name is logged
    logged_psnr = [float(row["val/psnr"]) for row in rows if row["val/psnr"]]
    ssim = [float(row["val/ssim"]) for row in rows if row["val/ssim"]]
    assert record["val/psnr"] == pytest.approx(logged_psnr[-1])
    assert record["val/psnr"] > 1.0 >= ssim[-1]  # dB, not an SSIM
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(record["val/psnr"])
