"""vae_cats's Optuna sweeper, where Hydra looks for plugins (the ``hydra_plugins`` namespace):
the study in a database, resumable and shared (``vae_cats.training.sweep``)."""

from __future__ import annotations

import logging
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

# alembic, imported with Optuna when Hydra builds the sweeper's sampler, logs every plugin
# it registers at INFO, which Hydra's logging prints before any refusal or trial. Hydra
# imports this module when it scans for plugins, before it builds any sweeper.
logging.getLogger("alembic").setLevel(logging.WARNING)


class StudySweeper(Sweeper):
    """Hydra's plugin face of ``vae_cats.training.sweep.StudySweeperImpl``; takes the keys of
    hydra-optuna-sweeper's config (``hydra/sweeper: optuna``). The implementation, and so
    Optuna, is imported only when a sweep uses it: Hydra imports every plugin module on every
    run."""

    def __init__(self, **kwargs: Any) -> None:
        from vae_cats.training.sweep import StudySweeperImpl

        self.sweeper = StudySweeperImpl(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
