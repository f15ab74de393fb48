"""Run lineage (resolved config, git commit, data hash), loggers built from config, and the
per-job result file of sweeps."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_cats.fileio import PROJECT_DIR, atomic_write_bytes
from vae_cats.hardware import describe_hardware
from vae_cats.tracking import wandb_mode

log = logging.getLogger(__name__)


def _global_rank_zero() -> bool:
    """Whether this process is global rank 0 (or the only one). Lightning is imported here,
    not at module level, so the entry point registers resolvers and refuses a bad config
    without loading torch."""
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return bool(rank_zero_only.rank == 0)  # type: ignore[attr-defined]


def register_resolvers() -> None:
    """Make ``${wandb_mode:}`` usable in configs; safe to call more than once."""
    if not OmegaConf.has_resolver("wandb_mode"):
        OmegaConf.register_new_resolver("wandb_mode", wandb_mode)


def git_commit() -> str:
    """HEAD commit of the project checkout, suffixed ``-dirty`` with uncommitted changes to
    tracked files; ``unknown`` outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def run_lineage(cfg: DictConfig, data_hash: str) -> dict[str, Any]:
    """Plain-dict record of a run: resolved config (``trainer.precision`` as resolved on this
    machine), git commit, data hash and the hardware it ran on (``describe_hardware``)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return {
        "config": config,
        "git_commit": git_commit(),
        "data_hash": data_hash,
        "hardware": describe_hardware(),
    }


def instantiate_loggers(cfg: DictConfig | None, wandb_run_id: str | None = None) -> list[Any]:
    """Build every ``_target_`` node of the ``logger`` config group.

    Args:
        cfg: The ``logger`` group.
        wandb_run_id: The W&B run a resumed job continues (from its checkpoint): W&B loggers
            get ``id=wandb_run_id, resume="allow"``, so the dashboard shows one run whose
            step axis goes on; offline, each process writes an ``offline-run-*-<id>`` folder
            and ``wandb sync`` uploads them into that one run in start order.
    """
    if not cfg:
        return []
    loggers = []
    for node in cfg.values():
        if node is None or "_target_" not in node:
            continue
        if wandb_run_id and node["_target_"].endswith("WandbLogger"):
            logger = instantiate(node, id=wandb_run_id, resume="allow")
        else:
            logger = instantiate(node)
        # Lightning's WandbLogger passes anonymous=None to wandb.init, and wandb 0.31 warns
        # that "the anonymous setting has no effect" for any value but unset.
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            init.pop("anonymous", None)
        loggers.append(logger)
    return loggers


def save_config_file(logger: Any, lineage: dict[str, Any]) -> None:
    """Put the lineage as ``lineage.yaml`` among a W&B run's files, readable before
    (and uploaded by) ``wandb sync``; other loggers already store their hyperparameters.
    Global rank 0 only: on other DDP ranks the W&B experiment is a placeholder."""
    from pytorch_lightning.loggers import WandbLogger

    if not _global_rank_zero():
        return
    if isinstance(logger, WandbLogger) and logger.experiment.dir:
        path = Path(logger.experiment.dir) / "lineage.yaml"
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(lineage)))
        # wandb-core uploads (and `wandb sync` replays) only the run files it was told of.
        logger.experiment.save(str(path), base_path=logger.experiment.dir, policy="now")


def name_sweep_trial(cfg: DictConfig) -> None:
    """In a trial of the study sweeper (``hparams_search.study`` and ``hparams_search.trial``
    set), group the W&B run by study and name it ``<study>-trial<number>``; the trial's
    config and lineage already hold both. Does nothing outside such a trial."""
    study = OmegaConf.select(cfg, "hparams_search.study")
    trial = OmegaConf.select(cfg, "hparams_search.trial")
    if trial is None:
        return
    for node in (cfg.get("logger") or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(node):
                node.group = study
                node.name = f"{study}-trial{trial}"


def save_job_result(
    status: str,
    metric: str,
    value: float | None,
    message: str,
    warnings: list[str] | None = None,
    *,
    best_checkpoint: str | None = None,
) -> None:
    """Write ``result.yaml`` into the Hydra job's output folder, atomically: one file per run
    or sweep trial, failed ones too. It holds ``status`` (``finished``, ``failed`` or
    ``interrupted``), the job's ``overrides``, ``optimized_metric`` (the metric's name), the
    metric's final value under its own name (e.g. ``val/ssim: 0.41``; null when the job
    failed), the error ``message`` and the run's ``warnings`` (say, it ended inside its LR
    warm-up)."""
    from hydra.core.hydra_config import HydraConfig

    if not _global_rank_zero():
        return
    hydra_cfg = HydraConfig.get()
    # best_checkpoint: read back by the study sweeper (vae_cats.training.sweep) for the trial.
    record = {
        "status": status,
        "overrides": list(hydra_cfg.overrides.task),
        "optimized_metric": metric,
        metric: value,
        "message": message,
        "best_checkpoint": best_checkpoint,
        "warnings": list(warnings or []),
    }
    path = Path(hydra_cfg.runtime.output_dir) / "result.yaml"
    atomic_write_bytes(path, OmegaConf.to_yaml(OmegaConf.create(record)).encode())
