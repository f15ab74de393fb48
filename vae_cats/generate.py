"""Latent codes and what is decoded from them: posterior means of images, codes from a named
sampler, interpolations and traversals. The library calls behind predict and the HTTP API."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vae_cats.images import make_grid, to_float
from vae_cats.model import BaseVAE
from vae_cats.samplers import GaussianMixtureSampler, NormalSampler

SAMPLERS = ("default", "normal", "gmm")
TRAVERSE_DIMS = 8
TRAVERSE_STEPS = 9
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
            when the checkpoint carries a mixture, else normal).
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
        sampler = "gmm" if "gmm_sampler" in checkpoint else "normal"
    if sampler == "normal":
        return NormalSampler(net.latent_dim).sample(n, seed), "N(0, I)"
    if "gmm_sampler" in checkpoint:
        mixture = GaussianMixtureSampler.from_state_dict(checkpoint["gmm_sampler"])
        return mixture.sample(n, seed), "Gaussian mixture stored in the checkpoint"
    if train_images is None or len(train_images) == 0:
        raise SamplerError("gmm: the model stores no mixture and no training images were given")
    mixture = fit_mixture(net, train_images, DEFAULT_COMPONENTS)
    origin = f"Gaussian mixture fitted on {len(train_images)} training images"
    return mixture.sample(n, seed), origin


def fit_mixture(net: BaseVAE, train_images: Tensor, components: int) -> GaussianMixtureSampler:
    """A Gaussian mixture of ``components`` fitted on the posterior means of uint8 training
    images (N, 3, H, W), as in Ghosh et al. 2020 ("From variational to deterministic
    autoencoders", ex-post density estimation).

    Raises:
        SamplerError: If there are fewer images than components.
    """
    try:
        return GaussianMixtureSampler(n_components=components).fit(encode_means(net, train_images))
    except ValueError as err:
        raise SamplerError(f"gmm: {err}") from err


@torch.no_grad()
def interpolation_grid(net: BaseVAE, x: Tensor) -> Tensor:
    """Rows of ``INTERPOLATE_STEPS`` decodings between consecutive pairs of float images
    x (B, 3, H, W) in [0, 1], B >= 2; returns one grid (3, H', W') in [0, 1]."""
    rows = [net.interpolate(x[2 * i], x[2 * i + 1], INTERPOLATE_STEPS) for i in range(len(x) // 2)]
    return make_grid(torch.cat(rows[:INTERPOLATE_PAIRS]), nrow=INTERPOLATE_STEPS)


@torch.no_grad()
def traversal_grid(net: BaseVAE, x: Tensor) -> Tensor:
    """One row per latent dimension (the ``TRAVERSE_DIMS`` with the largest spread of means
    over x): the first image's mean with that dimension swept over [-3, 3]."""
    mu = net.encode(x)[0]
    dims = mu.std(dim=0).argsort(descending=True)[:TRAVERSE_DIMS]
    values = torch.linspace(-3.0, 3.0, TRAVERSE_STEPS)
    codes = mu[0].repeat(len(dims), TRAVERSE_STEPS, 1)
    for row, dim in enumerate(dims):
        codes[row, :, dim] = values
    return make_grid(net.decode(codes.flatten(0, 1)), nrow=TRAVERSE_STEPS)
