"""Loss terms of the VAE: Kornia's SSIM reconstruction loss and the Gaussian KL."""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

SSIM_WINDOW = 11


def check_unit_range(name: str, x: Tensor) -> None:
    """Refuse images outside [0, 1]: a 0..255 image gives SSIM a meaningless value without
    any error.

    Reads the minimum and maximum back to the host (a device sync and a pass over ``x``), so
    training checks where its data enters, not on every step.

    Raises:
        ValueError: Naming ``name`` and the range found.
    """
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must hold values in [0, 1], got range [{low:.3g}, {high:.3g}]")


def ssim_loss(recon: Tensor, x: Tensor) -> Tensor:
    """``kornia.losses.ssim_loss`` with this project's window and range, unchecked: the
    kernel of ``ssim_recon_loss`` (and of the model's loss, where it may be compiled).

    Args:
        recon: Reconstructions, shape (B, C, H, W), values in [0, 1] (not checked).
        x: Targets, same shape and range.

    Returns:
        Scalar in [0, 1], ``mean((1 - SSIM) / 2)``.
    """
    return kornia.losses.ssim_loss(recon, x, window_size=SSIM_WINDOW, max_val=1.0)


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
    check_unit_range("recon", recon)
    check_unit_range("x", x)
    return ssim_loss(recon, x)


def ssim(recon: Tensor, x: Tensor) -> Tensor:
    """Per-image SSIM (Kornia, window 11), shape (B,), values in [-1, 1]; 1 means identical."""
    return kornia.metrics.ssim(recon, x, window_size=SSIM_WINDOW, max_val=1.0).mean(dim=(1, 2, 3))


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of each latent dimension of a diagonal Gaussian posterior, in
    nats: ``(mu^2 + exp(logvar) - 1 - logvar) / 2``.

    Args:
        mu: Posterior means, shape (B, latent_dim).
        logvar: Natural-log posterior variances, same shape as mu.

    Returns:
        Shape (B, latent_dim), non-negative.

    Raises:
        ValueError: If mu and logvar differ in shape.

    References:
        Kingma & Welling (2014), Auto-Encoding Variational Bayes, appendix B.
    """
    if mu.shape != logvar.shape:
        raise ValueError(
            f"mu and logvar differ in shape: {tuple(mu.shape)} vs {tuple(logvar.shape)}"
        )
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


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
    return kl_per_dim(mu, logvar).sum(dim=1)


def free_bits_kl(mu: Tensor, logvar: Tensor, free_bits: float) -> Tensor:
    """The batch's KL with every latent dimension's batch-mean KL floored at ``free_bits``
    nats: ``sum_j max(free_bits, mean_i KL_ij)``.

    Below the floor a dimension's KL costs nothing, so the encoder may spend up to
    ``free_bits`` nats on it without being pulled back to the prior: a guard against
    posterior collapse, and a KL weight that acts only on dimensions above it.

    Args:
        mu: Posterior means, shape (B, latent_dim).
        logvar: Natural-log posterior variances, same shape as mu.
        free_bits: Floor per latent dimension, in nats, >= 0.

    Returns:
        Scalar, >= ``latent_dim * free_bits``; the mean per-image KL when ``free_bits`` is 0.

    Raises:
        ValueError: If mu and logvar differ in shape or free_bits < 0.

    References:
        Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive
        Flow, appendix C.8 ("free bits").
    """
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0, got {free_bits}")
    return kl_per_dim(mu, logvar).mean(dim=0).clamp(min=free_bits).sum()
