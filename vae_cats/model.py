"""Convolutional variational autoencoder for 64x64 RGB cat faces.

Plain PyTorch: no Lightning, no logging, no file I/O, so the same module runs in a
notebook, the training loop, the predict script and an API.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vae_cats.losses import free_bits_kl, kl_divergence, ssim_loss

RECON_LOSSES = ("ssim", "mse")
BOTTLENECKS = ("linear", "conv")
# Range of the encoder's log-variance, as in latent diffusion's DiagonalGaussianDistribution
# (Rombach et al. 2022): posterior variances between e^-30 (about 1e-13) and e^20 (about
# 5e8). Trained encoders stay far inside it; outside it exp(logvar) overflows float32
# (above 88) and the KL turns infinite, so a runaway head is clamped instead of crashing.
LOGVAR_RANGE = (-30.0, 20.0)


class VAEOutput(NamedTuple):
    """Result of one forward pass; every image tensor is (B, 3, H, W) in [0, 1]."""

    recon: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor


class VAELoss(NamedTuple):
    """Negative ELBO-style objective and its parts, each a scalar tensor.

    ``loss = recon_loss + beta * kl``; ``recon_loss`` is unitless (SSIM loss plus the
    optional L1 term), ``kl`` is in nats per image.
    """

    loss: Tensor
    recon_loss: Tensor
    kl: Tensor


class BaseVAE(nn.Module, abc.ABC):
    """The model interface every VAE of this project implements."""

    latent_dim: int
    beta: float
    # Constructor arguments as plain values, enough to rebuild the model from a checkpoint.
    config: dict[str, Any]

    @abc.abstractmethod
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map images (B, 3, H, W) in [0, 1] to posterior (mu, logvar), each (B, latent_dim)."""

    @abc.abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Map latent codes (B, latent_dim) to images (B, 3, H, W) in [0, 1]."""

    @abc.abstractmethod
    def loss_function(self, x: Tensor, out: VAEOutput, beta: float) -> VAELoss:
        """Training objective for inputs ``x`` and the forward output ``out``."""

    @abc.abstractmethod
    def compile_loss(self) -> None:
        """Compile the costly part of ``loss_function`` with ``torch.compile`` from now on."""

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
        """Draw z ~ N(mu, exp(logvar)) differentiably.

        ``z = mu + eps * exp(0.5 * logvar)`` with ``eps ~ N(0, I)``
        (Kingma & Welling 2014, Auto-Encoding Variational Bayes, sec. 2.4).
        """
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: Tensor) -> VAEOutput:
        """Encode, sample z from the posterior and decode; no loss, no logging."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``num_samples`` codes drawn from the prior N(0, I).

        Args:
            num_samples: Number of images, >= 1.
            generator: Optional CPU generator for reproducible noise.

        Returns:
            Images, shape (num_samples, 3, H, W), values in [0, 1].
        """
        z = torch.randn(num_samples, self.latent_dim, generator=generator)
        return self.decode(z.to(self._device()))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction ``decode(mu)`` of images (B, 3, H, W) in [0, 1]."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    @torch.no_grad()
    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Decode ``steps`` codes on the straight line between the posterior means of a and b.

        Args:
            a: One image, shape (3, H, W), values in [0, 1].
            b: One image, same shape as a.
            steps: Number of images including both ends, >= 2.

        Returns:
            Images, shape (steps, 3, H, W), values in [0, 1]; the first decodes a, the last b.

        Raises:
            ValueError: If steps < 2 or a and b differ in shape.
        """
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        if a.shape != b.shape:
            raise ValueError(f"a and b differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        mu, _ = self.encode(torch.stack([a, b]))
        weights = torch.linspace(0.0, 1.0, steps, device=mu.device).unsqueeze(1)
        return self.decode((1 - weights) * mu[0] + weights * mu[1])


class GroupNormSiLU(nn.GroupNorm):
    """GroupNorm followed by SiLU; a bf16 input is normalised on a contiguous (NCHW) copy.

    Shape (B, C, H, W) in and out, in the input's dtype and memory layout. The parameters are
    ``nn.GroupNorm``'s, under the same names. The layout each dtype gets was measured on CPU:

    - bf16 (autocast on a CPU with native bf16, AVX-512): PyTorch's GroupNorm kernels (the
      backward above all) are about 3x slower on channels-last tensors than on contiguous
      ones, a quarter of an exp1 training step; normalising a contiguous copy and casting
      back once (to bf16, where the next convolution would cast anyway) costs far less.
    - float32 (``precision: auto`` on a CPU without native bf16, AVX2): the channels-last
      kernels are about 2x faster than that copy and cast (forward and backward, 6.9 against
      15.9 ms at (64, 32, 32, 32)), so the input is normalised as it is.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            return F.silu(super().forward(x))
        layout = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format
        )
        return F.silu(super().forward(x.contiguous()).to(dtype=x.dtype, memory_format=layout))


def _norm_silu(channels: int) -> GroupNormSiLU:
    # GroupNorm, unlike BatchNorm, behaves the same in train and eval and for batch size 1.
    return GroupNormSiLU(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; keeps shape (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm_silu(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm_silu(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _down(c_in: int, c_out: int, residual: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
        _norm_silu(c_out),
    ]
    if residual:
        layers.append(ResidualBlock(c_out))
    return nn.Sequential(*layers)


def _up(c_in: int, c_out: int, residual: bool) -> nn.Sequential:
    # Nearest upsampling + conv avoids the checkerboard artefacts of transposed convs
    # (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").
    layers: list[nn.Module] = []
    if residual:
        layers.append(ResidualBlock(c_in))
    layers += [
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, padding=1),
        _norm_silu(c_out),
    ]
    return nn.Sequential(*layers)


class ConvVAE(BaseVAE):
    """Convolutional VAE: strided-conv encoder, upsample+conv decoder, sigmoid output.

    Each encoder stage halves the image side, so ``image_size`` must be divisible by
    ``2 ** len(hidden_channels)``.

    Args:
        latent_dim: Size of z, >= 1.
        hidden_channels: Channels of the encoder stages (the decoder mirrors them), each >= 1.
        image_size: Side of the square input images in pixels.
        beta: Weight of the KL term in the loss, >= 0. The SSIM loss is a mean in [0, 1]
            while the KL is a sum over latent dimensions in nats, so useful values are
            small (about 1e-4 to 1e-3).
        l1_weight: Weight of a per-pixel L1 term added to the SSIM loss, >= 0. SSIM alone
            is weak on flat colour regions; a little L1 pins colours.
        residual: Add a residual block to every stage.
        recon_loss: ``"ssim"`` (Kornia SSIM loss plus the L1 term) or ``"mse"`` (mean squared
            error per pixel, the usual recipe of VAE zoos, kept for the baseline).
        encoder_dropout: Dropout probability on the encoder's flattened features, before
            the mu and logvar heads (training only), in [0, 1).
        free_bits: Floor of each latent dimension's batch-mean KL in the loss, in nats, >= 0
            (``losses.free_bits_kl``); 0 leaves the loss's KL as it is.
        bottleneck: How the encoder's last feature map (C, S, S) meets z. ``"linear"``:
            fully connected mu/logvar heads and decoder input, each latent dimension sees the
            whole image. ``"conv"``: z is a (latent_dim / S², S, S) feature map flattened to
            (B, latent_dim), with 1x1-conv mu/logvar heads (the "quant_conv" of Rombach et al.
            2022) and a 3x3-conv decoder input, so each code describes its region of the
            face; shared weights instead of two C·S²-by-latent_dim matrices. latent_dim must
            then be a multiple of S².

    Raises:
        ValueError: On a non-positive size, a negative weight or a probability out of
            range, naming the argument.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        hidden_channels: tuple[int, ...] | list[int] = (32, 64, 128, 256),
        image_size: int = 64,
        beta: float = 5e-4,
        l1_weight: float = 0.0,
        residual: bool = False,
        recon_loss: str = "ssim",
        encoder_dropout: float = 0.0,
        free_bits: float = 0.0,
        bottleneck: str = "linear",
    ) -> None:
        super().__init__()
        channels = [int(c) for c in hidden_channels]
        _check_architecture(latent_dim, channels, image_size, beta, l1_weight)
        if recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {recon_loss!r}")
        if not 0.0 <= encoder_dropout < 1.0:
            raise ValueError(f"encoder_dropout must lie in [0, 1), got {encoder_dropout}")
        if free_bits < 0:
            raise ValueError(f"free_bits must be >= 0, got {free_bits}")
        side = image_size // 2 ** len(channels)
        if bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {bottleneck!r}")
        if bottleneck == "conv" and latent_dim % side**2:
            raise ValueError(
                f"latent_dim must be a multiple of {side**2} (the bottom feature map's "
                f"{side}x{side} positions) with bottleneck 'conv', got {latent_dim}"
            )
        self.recon_loss = recon_loss
        self.latent_dim = latent_dim
        self.beta = beta
        self.l1_weight = l1_weight
        self.free_bits = free_bits
        self.config = {
            "latent_dim": latent_dim,
            "hidden_channels": channels,
            "image_size": image_size,
            "beta": beta,
            "l1_weight": l1_weight,
            "residual": residual,
            "recon_loss": recon_loss,
            "encoder_dropout": encoder_dropout,
            "free_bits": free_bits,
            "bottleneck": bottleneck,
        }
        self.bottleneck = bottleneck
        self._ssim_loss: Callable[[Tensor, Tensor], Tensor] = ssim_loss
        self._bottom = (channels[-1], side)

        stages = [
            _down(c_in, c_out, residual)
            for c_in, c_out in zip([3, *channels[:-1]], channels, strict=True)
        ]
        self.encoder = nn.Sequential(
            *stages, nn.Flatten() if bottleneck == "linear" else nn.Identity()
        )
        # No module at all without dropout: the same layers, random draws and outputs as
        # before the option existed.
        self.encoder_dropout = nn.Dropout(encoder_dropout) if encoder_dropout else nn.Identity()
        # The same attribute names in both modes (a 1x1 conv is a fully connected layer
        # applied at each position), so checkpoints keep their keys.
        self.fc_mu, self.fc_logvar, self.decoder_input = _bottleneck_layers(
            bottleneck, channels[-1], side, latent_dim
        )

        reversed_channels = channels[::-1]
        ups = [
            _up(c_in, c_out, residual)
            for c_in, c_out in zip(
                reversed_channels, [*reversed_channels[1:], reversed_channels[-1]], strict=True
            )
        ]
        self.decoder = nn.Sequential(
            *ups, nn.Conv2d(reversed_channels[-1], 3, 3, padding=1), nn.Sigmoid()
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters of images x, (B, 3, H, W) in [0, 1].

        Returns:
            (mu, logvar), each (B, latent_dim); logvar is the natural log of the variance,
            clamped to ``LOGVAR_RANGE``.
        """
        features = self.encoder_dropout(self.encoder(x))
        mu, logvar = self.fc_mu(features).flatten(1), self.fc_logvar(features).flatten(1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [0, 1] from latent codes z of shape (B, latent_dim)."""
        channels, side = self._bottom
        if self.bottleneck == "conv":
            # -1 in the batch place, not len(z): an ONNX export keeps the batch size dynamic.
            h = self.decoder_input(z.reshape(-1, self.latent_dim // side**2, side, side))
        else:
            h = self.decoder_input(z).view(-1, channels, side, side)
        return self.decoder(h)

    def compile_loss(self) -> None:
        """Run the SSIM loss through ``torch.compile`` from now on (the network itself stays
        eager: compiled whole, the step was slower on CPU). The first call compiles for its
        batch shape; the first call with another shape (a last, smaller batch) compiles once
        more, for any batch size. Each takes seconds to a minute on CPU.

        The compiled loss runs outside any autocast region, in float32: on CPU it is then
        about 2.5x faster than under bf16 autocast (eager or compiled) and gives the same
        value to float32 precision. Without gradients (validation, test) the eager loss runs:
        a few batches an epoch do not repay one more compilation.
        """
        compiled = torch.compile(ssim_loss)

        def float32_ssim_loss(recon: Tensor, x: Tensor) -> Tensor:
            if not torch.is_grad_enabled():
                return ssim_loss(recon, x)
            with torch.autocast(recon.device.type, enabled=False):
                return compiled(recon, x)

        self._ssim_loss = float32_ssim_loss

    def loss_function(self, x: Tensor, out: VAEOutput, beta: float) -> VAELoss:
        """``recon_loss + beta * kl`` for inputs x (B, 3, H, W) in [0, 1].

        ``recon_loss`` is Kornia's SSIM loss (window 11) plus ``l1_weight`` times the mean
        absolute error (or the mean squared error when ``recon_loss="mse"``); ``kl`` is
        KL(q(z|x) || N(0, I)) in nats per image, batch mean. With ``free_bits`` > 0 the loss
        weighs ``losses.free_bits_kl`` instead of ``kl`` (``kl`` is still the true KL).
        Everything is computed in float32, also when the network ran under bf16 autocast.

        The range of x is not checked here (that would read it back on every step):
        ``losses.check_unit_range`` it where the data enters; ``recon`` is a sigmoid output.
        """
        x, recon = x.float(), out.recon.float()
        if self.recon_loss == "mse":
            recon_loss = (recon - x).pow(2).mean()
        else:
            if recon.shape != x.shape:
                raise ValueError(
                    f"recon and x differ in shape: {tuple(recon.shape)} vs {tuple(x.shape)}"
                )
            recon_loss = self._ssim_loss(recon, x)
            if self.l1_weight > 0:
                recon_loss = recon_loss + self.l1_weight * (recon - x).abs().mean()
        mu, logvar = out.mu.float(), out.logvar.float()
        kl = kl_divergence(mu, logvar).mean()
        weighed = free_bits_kl(mu, logvar, self.free_bits) if self.free_bits else kl
        return VAELoss(recon_loss + beta * weighed, recon_loss, kl)


def _bottleneck_layers(
    bottleneck: str, channels: int, side: int, latent_dim: int
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The mu head, the logvar head and the decoder input of a ``ConvVAE`` bottleneck."""
    if bottleneck == "linear":
        features = channels * side**2
        return (
            nn.Linear(features, latent_dim),
            nn.Linear(features, latent_dim),
            nn.Linear(latent_dim, features),
        )
    latent_channels = latent_dim // side**2
    return (
        nn.Conv2d(channels, latent_channels, 1),
        nn.Conv2d(channels, latent_channels, 1),
        nn.Conv2d(latent_channels, channels, 3, padding=1),
    )


def _check_architecture(
    latent_dim: int, channels: list[int], image_size: int, beta: float, l1_weight: float
) -> None:
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    if not channels or min(channels) < 1:
        raise ValueError(f"hidden_channels must be a non-empty list of sizes >= 1, got {channels}")
    stride = 2 ** len(channels)
    if image_size < stride or image_size % stride:
        raise ValueError(
            f"image_size must be a multiple of {stride} (2 ** len(hidden_channels)), "
            f"got {image_size}"
        )
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if l1_weight < 0:
        raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
