"""Lightning callbacks: picture logging, run lineage and random states in checkpoints, a
``last.ckpt`` that ends as the final state, a stop on a NaN loss, a clean stop on Ctrl-C."""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from vae_cats.checkpoint import read_checkpoint
from vae_cats.images import make_grid, pairs_grid, save_png, to_float
from vae_cats.training.lit_module import VAELitModule

log = logging.getLogger(__name__)


def wandb_loggers(loggers: Iterable[Any]) -> list[WandbLogger]:
    """The W&B loggers among ``loggers`` (a trainer's, or those built from config)."""
    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def _log_image(trainer: pl.Trainer, key: str, png: Path, caption: str) -> None:
    """Log a PNG file as it is on disk, so the dashboard shows exactly its pixels.

    The locked wandb (0.31) stores a float tensor as ``astype(uint8)``, with no rescaling
    from [0, 1]: an all-black picture. The step is the one Lightning logs this validation's
    metrics at (as its own ``LearningRateMonitor`` does), so pictures and ``val/ssim`` share
    a ``trainer/global_step``.
    """
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    for logger in wandb_loggers(trainer.loggers):
        logger.log_image(key=key, images=[str(png)], caption=[caption], step=step)


class ImageGridLogger(pl.Callback):
    """After each validation epoch, pictures of fixed inputs and fixed noise.

    Writes ``<image_dir>/epoch_<NNN>_reconstructions.png`` (rows alternate the first
    ``num_images`` validation images and their reconstructions ``decode(mu)``) and
    ``epoch_<NNN>_samples.png`` (the decoding of ``num_images`` fixed N(0, I) codes drawn
    with ``seed``), and logs both PNG files to every W&B logger as ``val/reconstructions`` and
    ``val/samples`` (the dashboard shows the files' pixels). Runs on global rank 0 only.
    """

    def __init__(self, image_dir: str, num_images: int = 16, seed: int = 0) -> None:
        self.image_dir = Path(image_dir)
        self.num_images = num_images
        self.seed = seed
        self._x: Tensor | None = None
        self._z: Tensor | None = None

    def _fixed_inputs(self, trainer: pl.Trainer, pl_module: VAELitModule) -> tuple[Tensor, Tensor]:
        if self._x is None or self._z is None:
            val = trainer.datamodule.splits["val"][: self.num_images]  # type: ignore[attr-defined]
            self._x = to_float(val)
            generator = torch.Generator().manual_seed(self.seed)
            self._z = torch.randn(self.num_images, pl_module.net.latent_dim, generator=generator)
        return self._x.to(pl_module.device), self._z.to(pl_module.device)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        assert isinstance(pl_module, VAELitModule)
        x, z = self._fixed_inputs(trainer, pl_module)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            recon = pl_module.net.reconstruct(x)
            samples = pl_module.net.decode(z)
        pl_module.train(was_training)
        epoch = trainer.current_epoch
        recon_png = save_png(
            pairs_grid(x, recon), self.image_dir / f"epoch_{epoch:03d}_reconstructions.png"
        )
        samples_png = save_png(
            make_grid(samples), self.image_dir / f"epoch_{epoch:03d}_samples.png"
        )
        _log_image(
            trainer,
            "val/reconstructions",
            recon_png,
            f"epoch {epoch}: input rows, reconstruction rows",
        )
        _log_image(
            trainer, "val/samples", samples_png, f"epoch {epoch}: decoded fixed N(0, I) noise"
        )


class LineageCallback(pl.Callback):
    """Stores where a checkpoint came from: the resolved config, git commit and data hash.

    Every checkpoint gets ``checkpoint["lineage"] = {"config": ..., "git_commit": ...,
    "data_hash": ...}``, all plain containers, so it loads with ``weights_only=True``, and,
    when a W&B logger is attached, ``checkpoint["wandb_run_id"]``: a resumed job logs on to
    that same run.
    """

    def __init__(self, lineage: dict[str, Any]) -> None:
        self.lineage = lineage

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["lineage"] = self.lineage
        # Only global rank 0 holds the real W&B run (and writes the file).
        if trainer.is_global_zero and (loggers := wandb_loggers(trainer.loggers)):
            checkpoint["wandb_run_id"] = loggers[0].experiment.id


class BestCheckpointArtifact(pl.Callback):
    """At the end of fit, logs the best checkpoint to every W&B logger as artifact
    ``model-<run id>`` (type ``model``, alias ``best``, file ``best.ckpt``).

    Its metadata is read from the file itself: the checkpoint's lineage (git commit, data
    hash), global step, and the monitored metric with its best value. Works offline: W&B
    stages a copy under ``$WANDB_DATA_DIR`` (not in the run folder) that ``wandb sync``
    uploads. (Lightning's
    ``WandbLogger(log_model=True)`` logs the checkpoint of whichever ``ModelCheckpoint`` saved
    last; with the periodic ``last.ckpt`` callback beside the best one, that is not the best.)
    """

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        loggers = wandb_loggers(trainer.loggers)
        if not best or not loggers or not trainer.is_global_zero:
            return
        import wandb

        checkpoint = read_checkpoint(Path(best))
        lineage = checkpoint.get("lineage", {})
        score = getattr(trainer.checkpoint_callback, "best_model_score", None)
        metadata = {
            "git_commit": lineage.get("git_commit"),
            "data_hash": lineage.get("data_hash"),
            "global_step": checkpoint.get("global_step"),
            "monitor": getattr(trainer.checkpoint_callback, "monitor", None),
            "best_model_score": None if score is None else float(score),
        }
        for logger in loggers:
            run = logger.experiment
            artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
            artifact.add_file(best, name="best.ckpt")
            run.log_artifact(artifact, aliases=["best"])
            log.info("logged %s to W&B as artifact model-%s", best, run.id)


class RngStateCheckpoint(pl.Callback):
    """Makes a mid-epoch resume continue the random streams where the checkpoint left them.

    Lightning restores weights, optimiser, loop counters and (with a stateful data loader)
    the position in the epoch, but not the global random generators that draw the
    reparameterisation noise and the training flips. Every checkpoint gets
    ``checkpoint["rng_states"]`` (torch CPU and CUDA generators, Python's ``random``: plain
    tensors and tuples, so it loads weights-only); after a resume they are set again when
    training starts, before the first batch is drawn and flipped, which is where the
    uninterrupted run stood when it wrote the checkpoint.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["rng_states"] = states

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._pending = checkpoint.get("rng_states")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["torch"])
        random.setstate(self._pending["python"])
        if "cuda" in self._pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending["cuda"])
        self._pending = None


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that keeps ``last.ckpt`` the latest state: every
    ``every_n_train_steps`` optimiser steps (as its parent), after every validation, at every
    epoch end, and at the end of training whatever the step, so a finished run's
    ``last.ckpt`` holds its final weights. (The parent writes ``last.ckpt`` after a
    validation only when it also saved a top-k checkpoint there, and at the end only when it
    never wrote one.)

    A step that ends an epoch is saved when the epoch has ended (after its validation), not
    right after its batch: Lightning resumes a checkpoint taken between an epoch's last batch
    and its end one epoch ahead, and skips that epoch's validation.

    Takes ``ModelCheckpoint``'s arguments; meant with ``save_last=True``, ``save_top_k=0``.
    """

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._save_last_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_last_now(trainer)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


class FiniteLossGuard(pl.Callback):
    """Stops training at the first NaN or infinite training loss, before its backward pass.

    Raising in ``on_before_backward`` means the bad loss never reaches the weights, and the
    checkpoint callbacks (which Lightning runs after all others) never save that step, so the
    last checkpoint on disk holds the last good weights.

    Raises:
        NonFiniteLossError: Naming the loss value, the global step and the last checkpoint.
    """

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        value = float(loss.detach())
        if math.isfinite(value):
            return
        last = ""
        for callback in trainer.checkpoint_callbacks:
            path = getattr(callback, "last_model_path", "") or ""
            if path and Path(path).is_file():
                last = path
        kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"training loss is {value} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); stopped before updating the weights; {kept}"
        )


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGINT or SIGTERM once ``last.ckpt`` held its last step.

    Attributes:
        signum: The signal's number (``128 + signum`` is the conventional exit code).
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class InterruptCheckpoint(pl.Callback):
    """Turns SIGINT (Ctrl-C) and SIGTERM during training into a resumable stop.

    The first signal lets the optimiser step under way finish; at its end (or, for an
    epoch's last step, once the epoch has ended, where ``LastCheckpoint`` saves such a step
    too) ``<checkpoint_dir>/last.ckpt`` is written at that step through the trainer's
    checkpoint I/O (atomic: ``AtomicCheckpointIO``) and ``TrainingInterrupted`` ends the run.
    A checkpoint taken there resumes exactly like the periodic ones. A second signal stops at
    once (``KeyboardInterrupt``, Lightning's own shutdown). The handlers are installed when
    training starts (over Lightning's SIGTERM notifier) and put back when it ends; only the
    main thread can install them.

    Args:
        checkpoint_dir: Folder of ``last.ckpt``.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_dir: str | Path) -> None:
        self.path = Path(checkpoint_dir) / "last.ckpt"
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: saving last.ckpt after the current step (again to stop at once)",
            signal.Signals(signum).name,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_if_asked(self, trainer: pl.Trainer) -> None:
        if self.signum is None:
            return
        self._restore()
        trainer.save_checkpoint(self.path)
        name = signal.Signals(self.signum).name
        raise TrainingInterrupted(
            self.signum,
            f"interrupted by {name} at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); {self.path} holds that step",
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            self._stop_if_asked(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_asked(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A signal during the final validation: stop before the test pass too.
        self._stop_if_asked(trainer)
        self._restore()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
