"""Loss terms of the VAE: Kornia's SSIM reconstruction loss and the Gaussian KL."""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

SSIM_WINDOW = 11


def _check_unit_range(name: str, x: Tensor) -> None:
    # A 0..255 image gives SSIM a meaningless value without any error: refuse it here.
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must hold values in [0, 1], got range [{low:.3g}, {high:.3g}]")


def ssim_recon_loss(recon: Tensor, x: Tensor) -> Tensor:
    """Structural-dissimilarity loss ``mean((1 - SSIM) / 2)`` of recon against x.

    Uses ``kornia.losses.ssim_loss`` with an 11x11 Gaussian window and ``max_val=1``
    (Wang et al. 2004, "Image quality assessment: from error visibility to structural
    similarity").

    Args:
        recon: Reconstructions, shape (B, C, H, W), values in [0, 1].
        x: Targets, same shape, values in [0, 1].

    Returns:
        Scalar in [0, 1]: 0 for identical images, near 1 for inverted ones.

    Raises:
        ValueError: If a value lies outside [0, 1] or the shapes differ.
    """
    if recon.shape != x.shape:
        raise ValueError(f"recon and x differ in shape: {tuple(recon.shape)} vs {tuple(x.shape)}")
    _check_unit_range("recon", recon)
    _check_unit_range("x", x)
    return kornia.losses.ssim_loss(recon, x, window_size=SSIM_WINDOW, max_val=1.0)


def ssim(recon: Tensor, x: Tensor) -> Tensor:
    """Per-image SSIM (Kornia, window 11), shape (B,), values in [-1, 1]; 1 means identical."""
    return kornia.metrics.ssim(recon, x, window_size=SSIM_WINDOW, max_val=1.0).mean(dim=(1, 2, 3))


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of a diagonal Gaussian posterior, in nats.

    Args:
        mu: Posterior means, shape (B, latent_dim).
        logvar: Natural-log posterior variances, same shape as mu.

    Returns:
        Per-image KL, shape (B,), non-negative.

    Raises:
        ValueError: If mu and logvar differ in shape.

    References:
        Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix B.
    """
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar differ in shape: {tuple(mu.shape)} vs {tuple(logvar.shape)}"
        )
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
