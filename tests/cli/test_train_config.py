"""Configs ``train_model.py`` cannot run, as a user types them: each is refused with one line
naming the key and exit code 2, before any data is read or any step is taken."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import FAST_TRAIN_OVERRIDES, TRAIN_SCRIPT, refusal, run_script


def train_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``train_model.py`` with ``args`` exactly as given (a later override wins)."""
    return run_script(TRAIN_SCRIPT, *args, timeout=600)


@pytest.fixture
def demo_args(tmp_path: Path) -> list[str]:
    """The fast demo run with its run folder and processed data under tmp_path."""
    return [
        "experiments=demo",
        *FAST_TRAIN_OVERRIDES,
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.processed_dir={tmp_path / 'processed'}",
    ]


def assert_no_work(tmp_path: Path) -> None:
    assert not (tmp_path / "processed").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "csv").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+foo=1", "foo"),  # README: an unknown key is refused (it trained to the end)
        ("+callbacks.foo=1", "callbacks.foo"),  # was a TypeError traceback
        ("+logger.foo=1", "logger.foo"),  # was a TypeError traceback
        ("+hparams_search.foo=1", "hparams_search.foo"),
        ("tags=abc", "tags"),
        ("seed=-1", "seed"),  # was Lightning's ValueError traceback
        ("seed=4294967296", "seed"),
        ("optimized_metric=val/psrn", "optimized_metric"),
        ("optimized_metric=test/ssim", "optimized_metric"),  # a sweep never tunes on test
        # Issue 22: trained nothing, then printed a test SSIM and exited 0.
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
    ],
)
def test_unknown_or_misshapen_key_is_refused_naming_it(
    override: str, key: str, demo_args: list[str], tmp_path: Path
) -> None:
    line = refusal(train_cli(*demo_args, override))
    assert line.startswith(f"{key}: "), line
    assert_no_work(tmp_path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("logger.wandb.mode=bogus", "logger.wandb.mode"),  # was wandb's traceback
        ("+logger.wandb.projct=x", "logger.wandb.projct"),  # a typo of a wandb.init key
    ],
)
def test_bad_wandb_setting_is_refused_naming_it(
    override: str, key: str, demo_args: list[str], tmp_path: Path
) -> None:
    args = [a for a in demo_args if a != "logger=csv"]  # the default logger: W&B
    line = refusal(train_cli(*args, override))
    assert line.startswith(f"{key}: "), line
    assert_no_work(tmp_path)
    assert not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize(
    "key",
    [
        "data.processed_dir",  # blamed data.source
        "checkpoint_dir",  # a traceback after all the training
        "callbacks.image_grids.image_dir",
        "logger.csv.save_dir",
        "hydra.run.dir",  # Hydra's own traceback
    ],
)
@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_unwritable_output_folder_is_refused_before_any_work(
    key: str, where: str, demo_args: list[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    bad = "/proc/vae_cats_out" if where == "proc" else f"{blocker}/out"
    line = refusal(train_cli(*demo_args, f"{key}={bad}"))
    assert line.startswith(f"{key}: cannot write {bad}"), line
    assert_no_work(tmp_path)
    assert blocker.read_text() == "not a folder" and not Path(bad).exists()


def test_sweep_whose_direction_worsens_its_metric_is_refused_before_any_job(
    demo_args: list[str], tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    line = refusal(
        train_cli(
            "-m",
            *demo_args,
            "hparams_search=optuna",
            "optimized_metric=val/loss",
            f"hydra.sweep.dir={sweep_dir}",
        )
    )
    assert line.startswith("hydra.sweeper.direction: maximize would make val/loss worse"), line
    assert not sweep_dir.exists()


def test_unwritable_sweep_folder_is_refused(demo_args: list[str]) -> None:
    line = refusal(train_cli("-m", *demo_args, "model.beta=1e-4,2e-4", "hydra.sweep.dir=/proc/x"))
    assert line.startswith("hydra.sweep.dir: cannot write /proc/x"), line


@pytest.mark.parametrize("override", ["experiment=exp1", "+experiment=exp1"])
def test_a_misspelt_group_is_refused_naming_the_real_one(
    override: str, demo_args: list[str], tmp_path: Path
) -> None:
    """Hydra suggested +experiment=exp1, which then failed as an unknown key (issue 22)."""
    args = [a for a in demo_args if not a.startswith("experiments=")]
    line = refusal(train_cli(*args, override))
    assert (
        line
        == f"{override}: there is no config group 'experiment'; did you mean experiments=exp1?"
    )
    assert_no_work(tmp_path)


def test_a_fresh_run_over_earlier_checkpoints_is_refused(
    demo_args: list[str], tmp_path: Path
) -> None:
    """A rerun into the same folder without resume=true started from scratch beside the old
    checkpoints (issue 22)."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    line = refusal(train_cli(*demo_args))
    assert line.startswith(f"checkpoint_dir: {checkpoints} already holds checkpoints"), line
    assert "(last.ckpt)" in line and "resume=true" in line and "overwrite=true" in line
    assert (checkpoints / "last.ckpt").read_bytes() == b"an earlier run's checkpoint"
    assert not (tmp_path / "processed").exists()
