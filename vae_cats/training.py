"""The training job behind ``train_model.py``: build everything from config, fit, test."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from vae_cats.callbacks import BestCheckpointArtifact, LineageCallback
from vae_cats.data import CatFacesDataModule
from vae_cats.utils import (
    instantiate_callbacks,
    instantiate_loggers,
    run_lineage,
    save_config_file,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured VAE and score its best checkpoint on the test split.

    Returns:
        ``best_model_path``, ``data_hash`` and every final metric (floats), test metrics
        included when ``cfg.test`` is true.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule: CatFacesDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    lineage = run_lineage(cfg, datamodule.manifest["data_hash"])

    module = instantiate(cfg.lit_module, net=instantiate(cfg.model))
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    callbacks += [LineageCallback(lineage), BestCheckpointArtifact(lineage)]
    loggers = instantiate_loggers(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(lineage)
        save_config_file(logger, lineage)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        for results in trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False):
            metrics.update(results)
    return {"best_model_path": best, "data_hash": lineage["data_hash"], **metrics}
