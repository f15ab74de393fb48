"""Lightning wrapper of a VAE: training/validation/test steps, KL warm-up, optimisers, metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.seed import isolate_rng
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio

from vae_cats.losses import check_unit_range, ssim
from vae_cats.model import BaseVAE, VAELoss

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class VAELitModule(pl.LightningModule):
    """Trains a ``BaseVAE`` on image batches (B, 3, H, W) in [0, 1].

    The KL weight grows linearly from 0 to ``net.beta`` over ``kl_warmup_steps`` optimiser
    steps (Bowman et al. 2016, "Generating Sentences from a Continuous Space"), which keeps
    the posterior from collapsing before the decoder has learned anything. Validation and
    test losses always use the full ``net.beta``, so they are comparable across epochs.

    Validation and test draw their reparameterisation noise from a fixed seed per batch,
    inside ``isolate_rng``: their losses are comparable from epoch to epoch, and they leave
    the global random streams of training untouched, so a run's weights do not depend on
    when, or whether, it validated (a resumed run skips validations the interrupted one did).

    Logged metrics: ``train/loss``, ``train/recon_loss``, ``train/kl`` (each per step,
    ``_step``, and as the epoch's batch-size-weighted mean, ``_epoch``), ``train/beta``, the
    same losses under ``val/``, and ``val/ssim``, ``val/psnr`` (dB), ``test/ssim``,
    ``test/psnr`` of the deterministic reconstruction ``decode(mu)``. The training epoch
    means are summed here and kept in every checkpoint (Lightning's own epoch accumulators
    are not), so after a mid-epoch resume ``train/loss_epoch`` still covers the whole epoch.

    Args:
        net: The VAE.
        optimizer: Partial optimiser constructor taking the parameters.
        scheduler: Optional partial LR-scheduler constructor taking the optimiser.
        scheduler_interval: Step the scheduler after every optimiser ``"step"`` or every
            ``"epoch"``.
        kl_warmup_steps: Optimiser steps of the linear KL warm-up, >= 0.
        channels_last: Run the network on channels-last tensors; oneDNN's convolutions are
            faster in that layout on CPU, above all under bf16 autocast.
        compile_loss: Compile the network's SSIM loss with ``torch.compile`` when fitting
            starts. ``"auto"``: only when the Trainer computes in bf16 (there the compiled loss
            runs in float32 outside autocast, about 2x faster on an AVX-512 CPU); in float32
            it saved nothing measurable on an AVX2 CPU (605 against 610 ms a step) and costs
            20-30 s of compiling plus a recompilation for a smaller last batch.

    Raises:
        ValueError: If kl_warmup_steps < 0 or scheduler_interval is unknown.
    """

    def __init__(
        self,
        net: BaseVAE,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        kl_warmup_steps: int = 0,
        channels_last: bool = False,
        compile_loss: bool | Literal["auto"] = False,
    ) -> None:
        super().__init__()
        if compile_loss not in (True, False, "auto"):
            raise ValueError(f"compile_loss must be true, false or auto, got {compile_loss!r}")
        if kl_warmup_steps < 0:
            raise ValueError(f"kl_warmup_steps must be >= 0, got {kl_warmup_steps}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.kl_warmup_steps = kl_warmup_steps
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.compile_loss = compile_loss
        self._loss_compiled = False
        # The training epoch so far: (epoch, {loss name: sum of value x batch size}, images).
        self._epoch_sums: tuple[int, dict[str, Tensor], int] | None = None
        # The last epoch this process trained on: a run resumed from a checkpoint taken at an
        # epoch's end (its means logged by the earlier process) does not log them again.
        self._trained_epoch: int | None = None

    def current_beta(self) -> float:
        """KL weight at the current global step, in [0, net.beta]."""
        if self.kl_warmup_steps == 0:
            return float(self.net.beta)
        return float(self.net.beta) * min(1.0, self.global_step / self.kl_warmup_steps)

    def _log_loss(self, stage: str, loss: VAELoss, batch_size: int) -> None:
        if stage == "train":
            self._add_to_epoch(loss, batch_size)
        for name, value in loss._asdict().items():
            self.log(
                f"{stage}/{name}_step" if stage == "train" else f"{stage}/{name}",
                value,
                on_step=stage == "train",
                on_epoch=stage != "train",
                prog_bar=name == "loss",
                batch_size=batch_size,
            )

    def _add_to_epoch(self, loss: VAELoss, batch_size: int) -> None:
        epoch = self.current_epoch
        if self._epoch_sums is None or self._epoch_sums[0] != epoch:
            self._epoch_sums = (epoch, {}, 0)
        _, sums, images = self._epoch_sums
        for name, value in loss._asdict().items():
            weighted = value.detach().double() * batch_size
            sums[name] = weighted + sums[name].to(weighted.device) if name in sums else weighted
        self._epoch_sums = (epoch, sums, images + batch_size)
        self._trained_epoch = epoch

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch
        if (
            self._epoch_sums is None
            or self._epoch_sums[0] != epoch
            or self._trained_epoch != epoch
        ):
            return
        _, sums, images = self._epoch_sums
        for name, total in sums.items():
            self.log(f"train/{name}_epoch", (total / images).float(), on_step=False, on_epoch=True)

    def _prepare(self, x: Tensor, batch_idx: int) -> Tensor:
        # The [0, 1] check reads the batch back: once per epoch and stage, not every step.
        if batch_idx == 0:
            check_unit_range("batch", x)
        return x.contiguous(memory_format=self.memory_format)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        x = self._prepare(x, batch_idx)
        beta = self.current_beta()
        loss = self.net.loss_function(x, self.net(x), beta)
        self._log_loss("train", loss, len(x))
        self.log("train/beta", beta, on_step=True, on_epoch=False, batch_size=len(x))
        return loss.loss

    def _evaluate(self, stage: str, x: Tensor, batch_idx: int) -> None:
        x = self._prepare(x, batch_idx)
        with isolate_rng():
            torch.manual_seed(batch_idx)
            out = self.net(x)
        loss = self.net.loss_function(x, out, float(self.net.beta))
        self._log_loss(stage, loss, len(x))
        # The deterministic reconstruction decode(mu), from the encoding already computed.
        recon = self.net.decode(out.mu).float()
        self.log(
            f"{stage}/ssim", ssim(recon, x).mean(), prog_bar=stage == "val", batch_size=len(x)
        )
        psnr = peak_signal_noise_ratio(recon, x, data_range=1.0, dim=(1, 2, 3))
        self.log(f"{stage}/psnr", psnr, batch_size=len(x))

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        self._evaluate("val", x, batch_idx)

    def test_step(self, x: Tensor, batch_idx: int) -> None:
        self._evaluate("test", x, batch_idx)

    def setup(self, stage: str) -> None:
        # Under Trainer(deterministic=True) torch also fills every new tensor with NaN, to
        # expose reads of uninitialised memory: a debugging aid that costs about 15% of a
        # CPU training step here (aten::fill_) and changes no result of a correct op.
        if torch.are_deterministic_algorithms_enabled():
            torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
        if stage == "fit" and not self._loss_compiled and self._wants_compiled_loss():
            self.net.compile_loss()
            self._loss_compiled = True

    def _wants_compiled_loss(self) -> bool:
        if self.compile_loss == "auto":
            return "bf16" in str(self.trainer.precision)
        return bool(self.compile_loss)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain containers only, so predict can rebuild the net under torch's weights-only load.
        checkpoint["net_config"] = dict(self.net.config)
        if self._epoch_sums is not None:
            epoch, sums, images = self._epoch_sums
            checkpoint["train_epoch_sums"] = {
                "epoch": epoch,
                "sums": {name: float(total) for name, total in sums.items()},
                "images": images,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint taken mid-epoch goes on summing that epoch; one taken at an epoch's
        # end holds a finished epoch, which the next epoch's first step replaces.
        saved = checkpoint.get("train_epoch_sums")
        if saved is not None:
            sums = {n: torch.tensor(v, dtype=torch.float64) for n, v in saved["sums"].items()}
            self._epoch_sums = (int(saved["epoch"]), sums, int(saved["images"]))
