"""Latent codes and what is decoded from them: posterior means of images, codes from a named
sampler, interpolations and traversals. The tensor-level calls behind ``vae_cats.predict``,
``vae_cats.packager`` and the HTTP API; nothing here reads or writes files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from vae_cats.images import make_grid, to_float
from vae_cats.model import BaseVAE
from vae_cats.samplers import (
    LEARNED_SAMPLERS,
    GaussianMixtureSampler,
    LatentPCA,
    LatentSampler,
    NormalSampler,
    checkpoint_key,
    sampler_from_checkpoint,
    stored_samplers,
)

SAMPLERS = ("default", "normal", *LEARNED_SAMPLERS)
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


def default_sampler(checkpoint: dict[str, Any], has_faces: bool = False) -> str:
    """The sampler ``default`` stands for: the one the checkpoint names (``default_sampler``,
    chosen by the two-sample test when it was packaged), else ``gmm`` when it stores a mixture
    or training faces are at hand to fit one, else ``normal`` (for this recipe N(0, I) decodes
    to texture, a learned sampler to faces)."""
    named = checkpoint.get("default_sampler")
    if named in LEARNED_SAMPLERS and checkpoint_key(named) in checkpoint:
        return named
    return "gmm" if "gmm_sampler" in checkpoint or has_faces else "normal"


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
        sampler: ``normal`` (N(0, I)), a learned sampler of ``LEARNED_SAMPLERS`` (the one
            stored in the checkpoint, else one fitted on the posterior means of
            ``train_images``) or ``default`` (``default_sampler``).
        net: The model (for its latent size and encoder).
        checkpoint: The checkpoint dict ``net`` came from.
        n: Number of codes.
        seed: Seed of the draw: the same seed gives the same codes.
        train_images: uint8 training images (N, 3, H, W) for a learned sampler the checkpoint
            does not store.

    Raises:
        SamplerError: If ``sampler`` is unknown or cannot be fitted.
    """
    if sampler not in SAMPLERS:
        raise SamplerError(f"unknown sampler {sampler!r} (choose from {', '.join(SAMPLERS)})")
    has_faces = train_images is not None and len(train_images) > 0
    if sampler == "default":
        sampler = default_sampler(checkpoint, has_faces)
    if sampler == "normal":
        return NormalSampler(net.latent_dim).sample(n, seed), "N(0, I)"
    if sampler in stored_samplers(checkpoint):
        stored = sampler_from_checkpoint(sampler, checkpoint)
        return stored.sample(n, seed), f"{SAMPLER_NAMES[sampler]} stored in the checkpoint"
    if train_images is None or not has_faces:
        raise SamplerError(
            f"{sampler}: the model stores no such sampler and no training images were given"
        )
    fitted = fit_sampler(sampler, encode_means(net, train_images))
    origin = f"{SAMPLER_NAMES[sampler]} fitted on {len(train_images)} training images"
    return fitted.sample(n, seed), origin


SAMPLER_NAMES = {
    "gmm": "Gaussian mixture",
    "pca_gmm": "Gaussian mixture in the principal subspace",
    "flow": "normalising flow",
}


def fit_sampler(name: str, mu: Tensor, components: int | None = None) -> LatentSampler:
    """Learned sampler ``name`` (``LEARNED_SAMPLERS``) fitted on the posterior means mu
    (N, latent_dim) of training images (``encode_means``), with its default settings;
    ``components`` sets the mixture components of ``gmm`` (default ``DEFAULT_COMPONENTS``)
    and is ignored by the others.

    Raises:
        SamplerError: If there are too few means for the sampler.
    """
    try:
        if name == "gmm":
            return GaussianMixtureSampler(components or DEFAULT_COMPONENTS).fit(mu)
        return LEARNED_SAMPLERS[name]().fit(mu)
    except ValueError as err:
        raise SamplerError(f"{name}: {err}") from err


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
