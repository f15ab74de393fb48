"""Latent codes and what is decoded from them: posterior means of images, codes from a named
sampler, interpolations and traversals. The tensor-level calls behind ``vae_cats.predict``,
``vae_cats.packager`` and the HTTP API; nothing here reads or writes files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vae_cats.images import make_grid, to_float
from vae_cats.model import BaseVAE
from vae_cats.samplers import GaussianMixtureSampler, NormalSampler

SAMPLERS = ("default", "normal", "gmm")
TRAVERSE_DIMS = 8
TRAVERSE_STEPS = 9
TRAVERSE_SPAN = 3.0
DECODE_BATCH = 256
INTERPOLATE_PAIRS = 4
INTERPOLATE_STEPS = 8
DEFAULT_COMPONENTS = 10


class SamplerError(ValueError):
    """A sampler that cannot produce codes here; the message says why and what to do."""


@torch.no_grad()
def encode_means(net: BaseVAE, images: Tensor, batch_size: int = 256) -> Tensor:
    """Posterior means ``mu`` (N, latent_dim) of uint8 images (N, 3, H, W), in batches."""
    return torch.cat(
        [
            net.encode(to_float(images[i : i + batch_size]))[0]
            for i in range(0, len(images), batch_size)
        ]
    )


def latent_codes(
    sampler: str,
    net: BaseVAE,
    checkpoint: dict[str, Any],
    n: int,
    seed: int,
    train_images: Tensor | None = None,
) -> tuple[Tensor, str]:
    """``n`` latent codes (n, latent_dim) drawn with ``seed``, and where they came from.

    Args:
        sampler: ``normal`` (N(0, I)), ``gmm`` (the Gaussian mixture stored in the checkpoint,
            else one fitted on the posterior means of ``train_images``) or ``default`` (gmm
            when the checkpoint carries a mixture or ``train_images`` are given, else normal:
            for this recipe N(0, I) decodes to texture, the mixture to faces).
        net: The model (for its latent size and encoder).
        checkpoint: The checkpoint dict ``net`` came from.
        n: Number of codes.
        seed: Seed of the draw: the same seed gives the same codes.
        train_images: uint8 training images (N, 3, H, W) for a gmm without a stored mixture.

    Raises:
        SamplerError: If ``sampler`` is unknown or a mixture cannot be fitted.
    """
    if sampler not in SAMPLERS:
        raise SamplerError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")
    if sampler == "default":
        has_faces = train_images is not None and len(train_images) > 0
        sampler = "gmm" if "gmm_sampler" in checkpoint or has_faces else "normal"
    if sampler == "normal":
        return NormalSampler(net.latent_dim).sample(n, seed), "N(0, I)"
    if "gmm_sampler" in checkpoint:
        mixture = GaussianMixtureSampler.from_state_dict(checkpoint["gmm_sampler"])
        return mixture.sample(n, seed), "Gaussian mixture stored in the checkpoint"
    if train_images is None or len(train_images) == 0:
        raise SamplerError("gmm: the model stores no mixture and no training images were given")
    mixture = fit_mixture(encode_means(net, train_images), DEFAULT_COMPONENTS)
    origin = f"Gaussian mixture fitted on {len(train_images)} training images"
    return mixture.sample(n, seed), origin


def fit_mixture(mu: Tensor, components: int) -> GaussianMixtureSampler:
    """A Gaussian mixture of ``components`` fitted on the posterior means mu (N, latent_dim)
    of training images (``encode_means``), as in Ghosh et al. 2020 ("From variational to
    deterministic autoencoders", ex-post density estimation).

    Raises:
        SamplerError: If there are fewer means than components.
    """
    try:
        return GaussianMixtureSampler(n_components=components).fit(mu)
    except ValueError as err:
        raise SamplerError(f"gmm: {err}") from err


@torch.no_grad()
def decode_batches(net: BaseVAE, z: Tensor, batch_size: int = DECODE_BATCH) -> Iterator[Tensor]:
    """Decode latent codes z (N, latent_dim) ``batch_size`` at a time, yielding images
    (<= batch_size, 3, H, W) in [0, 1]: memory stays bounded by one batch whatever N is."""
    for start in range(0, len(z), batch_size):
        yield net.decode(z[start : start + batch_size])


@torch.no_grad()
def interpolation_grid(net: BaseVAE, x: Tensor) -> Tensor:
    """Rows of ``INTERPOLATE_STEPS`` decodings between consecutive pairs of float images
    x (B, 3, H, W) in [0, 1]; at most ``INTERPOLATE_PAIRS`` rows. Returns one grid
    (3, H', W') in [0, 1].

    Raises:
        ValueError: If B < 2 (no pair).
    """
    if len(x) < 2:
        raise ValueError(f"interpolation needs at least 2 images, got {len(x)}")
    pairs = min(len(x) // 2, INTERPOLATE_PAIRS)
    rows = [net.interpolate(x[2 * i], x[2 * i + 1], INTERPOLATE_STEPS) for i in range(pairs)]
    return make_grid(torch.cat(rows), nrow=INTERPOLATE_STEPS)


@dataclass(frozen=True)
class LatentPCA:
    """Principal components of a set of latent means (typically the training images' ``mu``).

    Attributes:
        mean: Their average, shape (latent_dim,): the code of a typical face.
        components: Orthonormal directions, shape (k, latent_dim), by decreasing variance; the
            sign of each is fixed (largest-magnitude entry positive) so refits agree.
        std: Standard deviation of the means along each component, shape (k,), >= 0.
    """

    mean: Tensor
    components: Tensor
    std: Tensor

    def state_dict(self) -> dict[str, Tensor]:
        """Plain float32 tensors, storable in a weights-only checkpoint."""
        return {"mean": self.mean, "components": self.components, "std": self.std}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LatentPCA:
        """Rebuild from ``state_dict()``."""
        return cls(state["mean"].float(), state["components"].float(), state["std"].float())


def latent_pca(mu: Tensor) -> LatentPCA:
    """Principal component analysis of latent means mu (N, latent_dim), N >= 2, by the SVD
    of the centred means (``torch.linalg.svd``): ``mu - mean = U S V^T``, components = rows
    of ``V^T``, std = S / sqrt(N - 1) (Jolliffe, Principal Component Analysis, 2002, ch. 1).

    Returns:
        min(N, latent_dim) components.

    Raises:
        ValueError: If N < 2.
    """
    if len(mu) < 2:
        raise ValueError(f"principal components need at least 2 latent means, got {len(mu)}")
    mu = mu.double()
    mean = mu.mean(dim=0)
    _, singular, vh = torch.linalg.svd(mu - mean, full_matrices=False)
    # SVD leaves each direction's sign arbitrary; pin it so the same means give the same picture.
    peak = vh.gather(1, vh.abs().argmax(dim=1, keepdim=True))
    vh = vh * peak.sign()
    std = singular / (len(mu) - 1) ** 0.5
    return LatentPCA(mean.float(), vh.float(), std.float())


def traversal_codes(
    pca: LatentPCA,
    dims: int = TRAVERSE_DIMS,
    steps: int = TRAVERSE_STEPS,
    span: float = TRAVERSE_SPAN,
) -> Tensor:
    """Codes (min(dims, k), steps, latent_dim) that walk from the mean code along each of the
    first ``dims`` principal components, from -span to +span standard deviations of the
    training means along it: row r is ``mean + t * std[r] * components[r]``."""
    count = min(dims, len(pca.components))
    t = torch.linspace(-span, span, steps)
    offsets = t[None, :, None] * (pca.std[:count, None] * pca.components[:count])[:, None, :]
    return pca.mean + offsets


@torch.no_grad()
def traversal_grid(net: BaseVAE, pca: LatentPCA) -> Tensor:
    """One row per principal component of the training means (``traversal_codes``): a
    typical face (the mean code) changed by -3..+3 standard deviations along it, decoded.
    Returns one grid (3, H', W') in [0, 1], ``TRAVERSE_STEPS`` images per row."""
    codes = traversal_codes(pca)
    return make_grid(net.decode(codes.flatten(0, 1)), nrow=TRAVERSE_STEPS)
