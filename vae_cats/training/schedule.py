"""The learning-rate schedule and the step budget of a run.

A run's total number of optimiser steps is fixed near its start and kept in every
checkpoint: from ``trainer.max_steps`` when set (the same schedule on any machine; it wins
over a ``max_time`` of the experiment, ``resolve_run_length``), else measured over the first
steps to fit ``trainer.max_time`` (a faster machine gets more steps) and refined once the
first epoch end is timed, else ``max_epochs`` times the batches per epoch. The learning
rate warms up linearly, holds, then follows a half cosine down to its floor exactly at that
total (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts",
without restarts), stepped after every optimiser step, so it stays a function of the step
and a resumed run continues it bit for bit.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Timer

from vae_cats.hardware import load_average

log = logging.getLogger(__name__)


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up, then a half cosine to ``min_lr_ratio`` times the base LR.

    At optimiser step ``t`` (0-based) the LR is the base LR times

    - ``(t + 1) / warmup_steps`` while ``t < warmup_steps``;
    - ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * p)) / 2`` after, with
      ``p = (t - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1];
    - 1 after the warm-up while ``total_steps`` is still unknown (a run whose total is
      measured holds its peak LR until then: its first few steps).

    ``total_steps`` comes from ``set_total_steps`` (``StepBudget`` calls it once per run) and
    is part of ``state_dict``, so a resumed run anneals over the same total.

    Args:
        optimizer: The optimiser whose learning rates are scheduled.
        warmup_steps: Optimiser steps of the linear warm-up, >= 0.
        min_lr_ratio: Final LR as a fraction of the base LR, in [0, 1].
        last_epoch: Index of the last step taken (-1: start fresh), as in torch schedulers.

    Raises:
        ValueError: If warmup_steps < 0 or min_lr_ratio is outside [0, 1].
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.total_steps: int | None = None
        super().__init__(optimizer, last_epoch)

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the step at which the LR reaches its floor.

        Raises:
            ValueError: If total_steps < 1.
        """
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps = total_steps

    def factor(self, step: int) -> float:
        """The LR at optimiser step ``step`` as a fraction of the base LR, in [0, 1]."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.total_steps is None:
            return 1.0
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span > 0 else 1.0
        cosine = (1.0 + math.cos(math.pi * progress)) / 2
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [float(base) * self.factor(self.last_epoch) for base in self.base_lrs]


def _timer(trainer: pl.Trainer) -> Timer | None:
    return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]


def resolve_run_length(trainer_cfg: DictConfig) -> None:
    """Make an explicit ``trainer.max_steps`` (> 0) the run's length: a ``max_time`` beside
    it (say the experiment's) is set to null, with one log line, so the schedule set for N
    steps runs N steps on any machine instead of being cut wherever the time runs out."""
    max_steps, max_time = trainer_cfg.get("max_steps"), trainer_cfg.get("max_time")
    if isinstance(max_steps, int) and max_steps > 0 and max_time is not None:
        log.info(
            "trainer.max_steps=%d wins over trainer.max_time=%s: the run takes its %d steps "
            "however long they take",
            max_steps,
            max_time,
            max_steps,
        )
        trainer_cfg.max_time = None


class StepBudget(pl.Callback):
    """Fixes the run's total optimiser steps once and makes the run end there.

    The total is, in this order: the one stored in the checkpoint a run resumes from;
    ``trainer.max_steps`` when > 0; measured when ``trainer.max_time`` is set; else
    ``max_epochs`` times the batches per epoch. A measured total is capped by
    ``max_epochs`` when set. It is logged, becomes the trainer's ``max_steps`` (``max_time``
    stays a hard cap), is handed to the LR schedule (``WarmupCosineLR.set_total_steps``) and
    is saved in every checkpoint (``state_dict``).

    Measuring: from step ``skip_steps`` on, the time between the ends of consecutive
    training steps is recorded. After ``measure_steps`` of them the total is fixed from
    their median, so even a run that ends within its first epoch anneals over its own length.
    The first step after the first validation also carries the epoch's end (validation,
    checkpoints, picture grids); once it is timed the total is refined, once: seconds per
    step = the median step + what the validation step takes beyond it, spread over the steps
    between validations. Medians, so one-off stalls (compiling for a new batch shape) do not
    count as speed. Total = steps so far + time left * (1 - ``margin``) / seconds per step.
    Refining moves the end of a cosine that has hardly begun (an epoch in), or of a warm-up.

    When the last step is not at an epoch end, it asks the trainer to stop there, which makes
    Lightning validate the final weights (a run shorter than an epoch then has ``val/*``
    metrics, early stopping its metric, and the best checkpoint a candidate).

    At the end of training it logs the steps/s, images/s and the load average, and a warning
    (kept in ``warnings``) when the run ended before its planned total because
    ``trainer.max_time`` ran out, before its speed was measured, or inside the LR warm-up.

    Args:
        skip_steps: First steps not timed (allocator and oneDNN warm-up, compilation), >= 0.
        measure_steps: Timed steps the first total is fixed from, >= 1.
        margin: Share of the time left kept in reserve, in [0, 1).

    Raises:
        ValueError: On an argument out of range.
    """

    def __init__(self, skip_steps: int = 3, measure_steps: int = 5, margin: float = 0.02) -> None:
        if skip_steps < 0 or measure_steps < 1 or not 0.0 <= margin < 1.0:
            raise ValueError(
                "need skip_steps >= 0, measure_steps >= 1, 0 <= margin < 1, got "
                f"{skip_steps}, {measure_steps}, {margin}"
            )
        self.skip_steps = skip_steps
        self.measure_steps = measure_steps
        self.margin = margin
        self.total_steps: int | None = None
        self.measured_steps_per_s: float | None = None
        # Whether the total includes a timed epoch end (or needs none): no more measuring.
        self.refined = False
        self.warnings: list[str] = []
        self._measuring = False
        self._step_seconds: list[float] = []
        self._validation_step_seconds: list[float] = []
        self._validated = False
        self._last_step_end: float | None = None
        self._run_start: tuple[int, float] = (0, 0.0)

    # -- the total -------------------------------------------------------------------------

    def _epochs_cap(self, trainer: pl.Trainer) -> int | None:
        max_epochs, batches = trainer.max_epochs, trainer.num_training_batches
        if max_epochs is None or max_epochs <= 0 or not math.isfinite(batches):
            return None
        return max_epochs * math.ceil(batches / trainer.accumulate_grad_batches)

    def _fix(self, trainer: pl.Trainer, total: int, how: str, final: bool = True) -> None:
        self.total_steps = max(total, trainer.global_step + 1)
        self.refined = final
        self._measuring = not final
        log.info("step budget: %d optimiser steps in all (%s)", self.total_steps, how)
        self._apply(trainer)

    def _apply(self, trainer: pl.Trainer) -> None:
        assert self.total_steps is not None
        trainer.fit_loop.epoch_loop.max_steps = self.total_steps
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, WarmupCosineLR):
                config.scheduler.set_total_steps(self.total_steps)

    def _steps_between_validations(self, trainer: pl.Trainer) -> float:
        every = trainer.val_check_batch
        if every is None or not math.isfinite(every):
            return math.inf
        return every * (trainer.check_val_every_n_epoch or 1)

    def _measure(self, trainer: pl.Trainer) -> None:
        first = self.total_steps is None
        timer = _timer(trainer)
        remaining = timer.time_remaining() if timer is not None else None
        assert remaining is not None
        step_s = statistics.median(self._step_seconds)
        validation_s = (
            max(0.0, statistics.median(self._validation_step_seconds) - step_s)
            if self._validation_step_seconds
            else 0.0
        )
        per_step = step_s + validation_s / self._steps_between_validations(trainer)
        self.measured_steps_per_s = 1.0 / per_step
        total = trainer.global_step + int(max(0.0, remaining) * (1.0 - self.margin) / per_step)
        # Every process measures at the same step; under DDP they all take rank 0's total.
        total = trainer.strategy.broadcast(total, src=0)
        cap = self._epochs_cap(trainer)
        if first:
            how = f"measured over {len(self._step_seconds)} steps at step {trainer.global_step}"
        else:
            how = f"refined at step {trainer.global_step} with the first epoch end timed"
        self._fix(
            trainer,
            total if cap is None else min(total, cap),
            f"{self.measured_steps_per_s:.2f} steps/s {how}: {step_s * 1000:.0f} ms a step, "
            f"{validation_s:.1f} s an epoch end; {remaining:.0f} s of trainer.max_time left",
            # Final once an epoch end is in it, or when no validation will come.
            final=bool(self._validation_step_seconds)
            or not math.isfinite(self._steps_between_validations(trainer)),
        )

    # -- hooks -----------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run_start = (trainer.global_step, time.monotonic())
        self.warnings = []
        timer = _timer(trainer)
        if self.total_steps is not None:  # restored from the checkpoint
            log.info("step budget: %d optimiser steps (from the checkpoint)", self.total_steps)
            self._apply(trainer)
            # A run stopped before its first epoch end was timed refines its total after it.
            self._measuring = not self.refined and timer is not None
            return
        if trainer.max_steps > 0:
            self._fix(trainer, trainer.max_steps, "trainer.max_steps")
        elif timer is not None and timer.time_remaining() is not None:
            self._measuring = True
        elif (cap := self._epochs_cap(trainer)) is not None:
            self._fix(trainer, cap, "trainer.max_epochs x batches per epoch")
        else:
            log.warning("step budget: no max_steps, max_time or max_epochs: the LR never anneals")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self._measuring:
            now = time.monotonic()
            if (
                self._last_step_end is not None
                and trainer.global_step > self._run_start[0] + self.skip_steps
            ):
                seconds = now - self._last_step_end
                if self._validated:
                    self._validation_step_seconds.append(seconds)
                else:
                    self._step_seconds.append(seconds)
            self._last_step_end = now
            if (self._validation_step_seconds and self._step_seconds) or (
                self.total_steps is None and len(self._step_seconds) >= self.measure_steps
            ):
                self._measure(trainer)
            self._validated = False
        if self.total_steps is not None and trainer.global_step >= self.total_steps:
            # Stopping here makes Lightning validate the final weights (a no-op at an epoch end).
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def _end_warnings(self, trainer: pl.Trainer) -> list[str]:
        step, timer = trainer.global_step, _timer(trainer)
        remaining = timer.time_remaining() if timer is not None else None
        timed_out = remaining is not None and remaining <= 0.0
        found = []
        if self.total_steps is None and timed_out:
            found.append(
                f"trainer.max_time ran out at step {step}, before the speed was measured "
                f"({self.skip_steps + self.measure_steps} steps): no LR schedule was fitted"
            )
        elif self.total_steps is not None and step < self.total_steps and timed_out:
            found.append(
                f"trainer.max_time ran out at step {step} of the {self.total_steps} planned: "
                "the LR schedule did not finish annealing"
            )
        for config in trainer.lr_scheduler_configs:
            warmup = getattr(config.scheduler, "warmup_steps", 0)
            if isinstance(config.scheduler, WarmupCosineLR) and step < warmup:
                found.append(
                    f"the run ended inside the LR warm-up, at step {step} of {warmup}: the "
                    "learning rate never reached its peak and the model is barely trained "
                    "(give more trainer.max_time or trainer.max_steps)"
                )
        return found

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.warnings = self._end_warnings(trainer)
        for warning in self.warnings:
            log.warning("warning: %s", warning)
        step0, time0 = self._run_start
        steps, seconds = trainer.global_step - step0, time.monotonic() - time0
        rate = steps / seconds if seconds > 0 else 0.0
        batch_size = getattr(trainer.datamodule, "batch_size", None)  # type: ignore[attr-defined]
        images = f", {rate * batch_size:.0f} images/s" if batch_size else ""
        load = load_average()
        log.info(
            "trained %d steps in %.0f s: %.2f steps/s%s (validation included); "
            "load average (1, 5, 15 min): %s on %d CPUs",
            steps,
            seconds,
            rate,
            images,
            load,
            os.cpu_count() or 0,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "measured_steps_per_s": self.measured_steps_per_s,
            "refined": self.refined,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total_steps = state_dict.get("total_steps")
        self.measured_steps_per_s = state_dict.get("measured_steps_per_s")
        # Checkpoints written before totals were refined hold a final total.
        self.refined = state_dict.get("refined", True)
