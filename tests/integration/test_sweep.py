"""Hydra multirun and the Optuna sweeper, on a tiny config, as real subprocesses."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from tests.helpers import FAST_TRAIN_OVERRIDES, PROJECT_DIR, TRAIN_SCRIPT, wandb_records
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


def sweep(
    sweep_dir: Path, *overrides: str, base: Sequence[str] = TINY
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(TRAIN_SCRIPT),
        "-m",
        *base,
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


EXP1 = [
    *FAST_TRAIN_OVERRIDES,
    "experiments=exp1",
    "data.batch_size=16",
    "callbacks.image_grids=null",
    "test=false",
]


def test_optuna_search_with_exp1_builds_every_trial_and_traces_it(tmp_path: Path) -> None:
    """The trials the seeded sampler draws first all build with exp1 (its latent sizes are
    multiples of the 8x8 grid); each trial's folder, lineage and W&B run carry the study
    and trial number; optimization_results.yaml names the best checkpoint."""
    sweep_dir = tmp_path / "sweep"
    result = sweep(sweep_dir, "hparams_search=optuna", "hydra.sweeper.n_trials=3", base=EXP1)
    assert result.returncode == 0, result.stderr[-3000:]
    # Opening the study database logged alembic's seven "setup plugin" lines (issue 22).
    assert "setup plugin" not in result.stdout + result.stderr
    records = results(sweep_dir)
    assert [r["status"] for r in records] == ["finished"] * 3
    for number in range(3):
        run_dir = sweep_dir / str(number)
        lineage = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["lineage"]
        assert lineage["config"]["hparams_search"] == {
            "name": "optuna",
            "study": "vae_cats",
            "trial": number,
        }
        assert lineage["config"]["model"]["latent_dim"] in (256, 512, 1024)
        [run] = (run_dir / "wandb").glob("offline-run-*")
        [info] = [r.run for r in wandb_records(run) if r.WhichOneof("record_type") == "run"]
        assert (info.run_group, info.display_name) == ("vae_cats", f"vae_cats-trial{number}")
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["study_name"] == "vae_cats" and best["trials"] == {"complete": 3}
    assert best["best_checkpoint"] == str(
        sweep_dir / str(best["best_trial"]) / "checkpoints" / "best.ckpt"
    )
    assert (
        read_checkpoint(best["best_checkpoint"])["lineage"]["config"]["hparams_search"]["trial"]
        == best["best_trial"]
    )


def test_plain_sweep_goes_on_after_a_config_that_cannot_be_built(tmp_path: Path) -> None:
    """exp1 cannot build latent 32 (not a multiple of its 8x8 grid): job 0 is recorded as
    failed and job 1 still runs (the multirun used to exit 2 at job 0)."""
    sweep_dir = tmp_path / "sweep"
    result = sweep(sweep_dir, "logger=csv", "model.latent_dim=32,512", base=EXP1)
    assert result.returncode == 1
    failed, finished = results(sweep_dir)
    assert failed["status"] == "failed" and "multiple of 64" in failed["message"]
    assert finished["status"] == "finished" and finished["val/ssim"] is not None


def test_optuna_trial_that_cannot_be_built_is_failed_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    """A drawn learning rate the optimiser refuses (-1) fails that trial only."""
    sweep_dir = tmp_path / "sweep"
    result = sweep(
        sweep_dir, "hparams_search=optuna_divergence", "lit_module.optimizer.lr=choice(0.001,-1.0)"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_lr = {
        next(o for o in r["overrides"] if o.startswith("lit_module.optimizer.lr=")): r
        for r in results(sweep_dir)
    }
    assert by_lr["lit_module.optimizer.lr=-1.0"]["status"] == "failed"
    assert "lr" in by_lr["lit_module.optimizer.lr=-1.0"]["message"]
    assert by_lr["lit_module.optimizer.lr=0.001"]["status"] == "finished"
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["trials"] == {"complete": 1, "fail": 1}
    assert best["best_params"] == {"lit_module.optimizer.lr": 0.001}
