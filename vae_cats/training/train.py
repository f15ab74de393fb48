"""The training job behind ``train_model.py``: check and build everything from config, fit,
test; resume from the run folder's ``last.ckpt`` when asked."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from vae_cats.checkpoint import check_resumable, read_checkpoint
from vae_cats.data.datamodule import CatFacesDataModule
from vae_cats.hardware import Precision, resolve_precision
from vae_cats.training import config_check
from vae_cats.training.callbacks import (
    FiniteLossGuard,
    InterruptCheckpoint,
    LineageCallback,
    RngStateCheckpoint,
    wandb_loggers,
)
from vae_cats.training.lineage import (
    instantiate_loggers,
    run_lineage,
    save_config_file,
)
from vae_cats.training.schedule import StepBudget, resolve_run_length

log = logging.getLogger(__name__)


def resolve_trainer_precision(trainer_cfg: DictConfig) -> Precision:
    """Replace ``trainer.precision`` (``auto`` or explicit) by the value it resolves to on
    this machine (``vae_cats.hardware.resolve_precision``), in place, so the Trainer, the
    lineage and the W&B config all hold it. Returns the choice, for ``report_precision``
    once the config is known to be usable (a refused config prints only its error)."""
    chosen = resolve_precision(
        trainer_cfg.get("precision", "32-true"), str(trainer_cfg.get("accelerator", "cpu"))
    )
    trainer_cfg.precision = chosen.value
    return chosen


def report_precision(chosen: Precision) -> None:
    """Log the precision and why (``precision: 32-true (CPU capability AVX2, no native
    bf16)``), after a one-line warning for an emulated bf16."""
    if chosen.warning:
        log.warning("warning: %s", chosen.warning)
    log.info("precision: %s (%s)", chosen.value, chosen.reason)


def fit_only_trainer(trainer_cfg: DictConfig, **settings: Any) -> pl.Trainer:
    """The experiment's Trainer (precision, devices, gradient clipping...) stripped to
    training alone, for timing and profiling steps: no validation, sanity check, logger,
    checkpoints, progress bar or model summary, and no epoch or time limit. ``settings``
    (``max_steps``, ``callbacks``, ``profiler``, ...) go on top."""
    stripped: dict[str, Any] = {
        "max_epochs": -1,
        "max_time": None,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    trainer_cfg = trainer_cfg.copy()
    report_precision(resolve_trainer_precision(trainer_cfg))
    trainer: pl.Trainer = instantiate(trainer_cfg, **{**stripped, **settings})
    return trainer


def checkpoint_to_resume(cfg: DictConfig) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``fit`` starts from, with its content: ``ckpt_path`` when set; else,
    with ``resume=true``, ``<checkpoint_dir>/last.ckpt`` if it exists (a first run with
    ``resume=true`` starts fresh, so a pre-empted job can be requeued with one command).

    The file is read weights-only first, so a bad or malicious file stops the run here.

    Raises:
        CheckpointError: If the checkpoint is missing, unreadable or carries pickled objects.
    """
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
    elif cfg.get("resume"):
        path = Path(cfg.checkpoint_dir) / "last.ckpt"
        if not path.exists():
            log.info("resume=true but %s does not exist yet: starting fresh", path)
            return None
    else:
        return None
    return path, read_checkpoint(path)


def _build_module(cfg: DictConfig) -> pl.LightningModule:
    net = config_check.build(cfg.model, "model")
    module = config_check.build(cfg.lit_module, "lit_module", net=net)
    # Build the optimiser and scheduler once now, so their own checks (a negative lr, ...)
    # fail before any data is read or any step is taken.
    optimizer = instantiate(cfg.lit_module.optimizer)
    probe = [torch.nn.Parameter(torch.zeros(1))]
    config_check.call(cfg.lit_module.optimizer, "lit_module.optimizer", optimizer, params=probe)
    if cfg.lit_module.get("scheduler") is not None:
        config_check.call(
            cfg.lit_module.scheduler, "lit_module.scheduler", module.configure_optimizers
        )
    return module


def _finish_wandb(loggers: list[Any], exit_code: int) -> None:
    # Sweeps run many jobs in one process: each job's W&B run must end with its job.
    for logger in wandb_loggers(loggers):
        if logger._experiment is not None:
            finish = getattr(logger._experiment, "finish", None)
            if callable(finish):
                finish(exit_code=exit_code)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured VAE and score its best checkpoint on the test split.

    Returns:
        ``best_model_path``, ``data_hash``, ``global_step``, ``warnings`` (the run ended
        inside its LR warm-up, or ``trainer.max_time`` cut it short: one sentence each) and
        every final metric (floats), test metrics included when ``cfg.test`` is true.

    Raises:
        ConfigError: A config value of the wrong type or an impossible value, before training.
        CheckpointError: An unusable checkpoint to resume from, before training.
        NonFiniteLossError: The training loss became NaN or infinite.
        TrainingInterrupted: SIGINT or SIGTERM during training; last.ckpt holds the step.
    """
    config_check.check_root(cfg)
    if cfg.get("trainer") is not None:
        precision = resolve_trainer_precision(cfg.trainer)
        resolve_run_length(cfg.trainer)
    for group in ("trainer", "data", "model", "lit_module", "callbacks", "logger"):
        if cfg.get(group) is not None:
            config_check.check_types(cfg[group], group)
    # Quiet: a config refused below leaves its one error line alone (the seed is in the config).
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    resumed = checkpoint_to_resume(cfg)
    ckpt_path = resumed[0] if resumed else None
    wandb_run_id = resumed[1].get("wandb_run_id") if resumed else None
    module = _build_module(cfg)
    if resumed:
        check_resumable(resumed[1], resumed[0], module.state_dict())
        log.info("resuming from %s (global step %s)", resumed[0], resumed[1].get("global_step"))
    datamodule: CatFacesDataModule = config_check.build(cfg.data, "data")
    try:
        datamodule.prepare_data()
    except (OSError, ValueError) as err:  # ingest's messages name the source
        raise config_check.ConfigError(f"data.source: {err}") from err
    lineage = run_lineage(cfg, datamodule.manifest["data_hash"])

    callbacks = [
        config_check.build(node, f"callbacks.{name}")
        for name, node in (cfg.get("callbacks") or {}).items()
        if node is not None and "_target_" in node
    ]
    step_budget = StepBudget()
    callbacks += [
        FiniteLossGuard(),
        LineageCallback(lineage),
        RngStateCheckpoint(),
        step_budget,
        InterruptCheckpoint(cfg.checkpoint_dir),
    ]
    loggers = instantiate_loggers(cfg.get("logger"), wandb_run_id)
    trainer: pl.Trainer = config_check.build(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers
    )
    report_precision(precision)
    for logger in loggers:
        logger.log_hyperparams(lineage)
        save_config_file(logger, lineage)

    exit_code = 1
    try:
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(ckpt_path) if ckpt_path else None,
            weights_only=True,
        )
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            results = trainer.test(
                module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
            )
            for result in results:
                metrics.update(result)
        exit_code = 0
    finally:
        _finish_wandb(loggers, exit_code)
    return {
        "best_model_path": best,
        "data_hash": lineage["data_hash"],
        "global_step": trainer.global_step,
        "warnings": step_budget.warnings,
        **metrics,
    }
