"""What the benchmarks share: an experiment's config as ``train_model.py`` composes it, the bare
Trainer that runs training steps alone for timing and profiling, and the one load-average
format, which the end-of-run line of every training run prints too.

Scripts run as ``python benchmarks/<script>.py`` put the project root on ``sys.path`` to import
this module. Hydra and Lightning are imported inside the functions: a parent process that only
starts measuring children and prints their table stays light.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from vae_cats.fileio import PROJECT_DIR
from vae_cats.hardware import load_average

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from omegaconf import DictConfig

__all__ = ["PROJECT_DIR", "bare_trainer", "experiment_config", "load_average", "steps_parser"]

# The Trainer of a benchmark that brings no experiment config: one CPU process.
PLAIN_CPU_TRAINER = {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1}


def experiment_config(experiment: str, overrides: list[str]) -> DictConfig:
    """The root config of ``train_model.py experiments=<experiment> OVERRIDES...`` (Hydra
    compose, the project's resolvers registered), with the global seed set from its ``seed``."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    from vae_cats.training.lineage import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(PROJECT_DIR / "conf"), version_base="1.3"):
        cfg = compose("train_model", overrides=[f"experiments={experiment}", *overrides])
    pl.seed_everything(cfg.seed, verbose=False)
    return cfg


def bare_trainer(trainer_cfg: DictConfig | None = None, **settings: Any) -> pl.Trainer:
    """A Trainer for training steps alone (``training.train.fit_only_trainer``: no validation,
    sanity check, logger, checkpoints, progress bar, model summary, epoch or time limit).

    Args:
        trainer_cfg: An experiment's ``trainer`` config (its precision, devices, gradient
            clipping...); None: one plain CPU process.
        **settings: Trainer arguments on top (``max_steps``, ``precision``, ``profiler``,
            ``callbacks``, ...).
    """
    from omegaconf import OmegaConf

    from vae_cats.training.train import fit_only_trainer

    cfg = trainer_cfg if trainer_cfg is not None else OmegaConf.create(PLAIN_CPU_TRAINER)
    return fit_only_trainer(cfg, **settings)


def steps_parser(description: str, steps: int, warmup: int, what: str) -> argparse.ArgumentParser:
    """The options of a benchmark that runs an experiment's training steps: ``--experiment``,
    ``--steps`` (``what``: timed, profiled...), ``--warmup`` and Hydra overrides
    (``KEY=VALUE``) for every run; the script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--experiment", default="exp1")
    parser.add_argument("--steps", type=int, default=steps, help=f"{what} training steps")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"steps run first, not {what}")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, KEY=VALUE, for every run")
    return parser
