"""What the API does with the model, free of HTTP: generate, decode, reconstruct, interpolate
and score drift, on either backend. Images leave as PNG bytes."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from torch import Tensor

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.decode import decode_image
from vae_cats.drift import SCORE_NAME, DriftDetector, psnr
from vae_cats.generate import latent_codes
from vae_cats.images import make_grid, to_float, to_uint8
from vae_cats.losses import ssim
from vae_cats.samplers import GaussianMixtureSampler
from vae_cats.serving.backends import make_backend
from vae_cats.serving.settings import Settings

DIRECTIONS = 8


class UploadTooLargeError(ValueError):
    """An image over the upload limit (HTTP 413)."""


def png_bytes(image: Tensor) -> bytes:
    """One float image (3, H, W) in [0, 1] as 8-bit RGB PNG bytes (``to_uint8``); the same
    pixels always give the same bytes. zlib level 1: a 16-face grid encodes in 10 ms, not 40
    (level 6), for 4% more bytes."""
    buffer = io.BytesIO()
    pixels = Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())
    pixels.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def b64_png(image: Tensor) -> str:
    """``png_bytes`` as base64 text."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def grid_png(images: Tensor, nrow: int = 8) -> bytes:
    """Images (B, 3, H, W) in [0, 1] tiled by ``make_grid`` as PNG bytes."""
    return png_bytes(make_grid(images, nrow=nrow))


@dataclass(frozen=True)
class Reconstruction:
    """One upload: the ingested original and its reconstruction, float (3, S, S) in [0, 1],
    their SSIM and PSNR, the latent mean and the drift verdict (None when unavailable)."""

    original: Tensor
    recon: Tensor
    ssim: float
    psnr: float
    mu: Tensor
    drift: dict[str, Any] | None


class ModelService:
    """A checkpoint (packaged or training) behind one backend.

    Raises:
        CheckpointError: If the checkpoint cannot be used.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # With ONNX Runtime running the network, torch only scores single images (SSIM,
        # drift): one thread. Two spinning OpenMP threads made a 64x64 SSIM take 150 ms, not
        # 7 ms, on 2 busy cores.
        torch.set_num_threads(settings.threads if settings.backend == "torch" else 1)
        # The mixture sampler's SVDs run in OpenBLAS; its spinning threads beside torch's
        # slowed a 16-code draw from 0.5 s to 5-30 s on 2 busy cores: one BLAS thread.
        threadpool_limits(limits=1, user_api="blas")
        self.checkpoint = read_checkpoint(settings.model)
        self.net = vae_from_checkpoint(self.checkpoint, settings.model)
        self.image_size = int(self.net.config["image_size"])
        self.backend = make_backend(settings.backend, self.net, self.image_size, settings.threads)
        self.drift = DriftDetector.from_checkpoint(self.checkpoint)
        # Built once: the sampler keeps its covariance factors between calls.
        self.mixture = (
            GaussianMixtureSampler.from_state_dict(self.checkpoint["gmm_sampler"])
            if "gmm_sampler" in self.checkpoint
            else None
        )
        if self.mixture is not None:
            self.mixture.sample(1)  # computes the factors before the first request
        self.lineage: dict[str, Any] = self.checkpoint.get("lineage", {})

    @property
    def latent_dim(self) -> int:
        return int(self.net.latent_dim)

    @property
    def samplers(self) -> list[str]:
        """Samplers this model offers: ``normal`` always, ``gmm`` when it stores a mixture."""
        return ["normal", "gmm"] if "gmm_sampler" in self.checkpoint else ["normal"]

    @property
    def default_sampler(self) -> str:
        return self.samplers[-1]

    def card(self) -> dict[str, Any]:
        """The model card fields of ``GET /model``."""
        pca = self.checkpoint.get("latent_pca")
        directions = None
        if pca is not None:
            directions = {
                "mean": pca["mean"].float().tolist(),
                "std": pca["std"][:DIRECTIONS].float().tolist(),
                "components": pca["components"][:DIRECTIONS].float().tolist(),
            }
        drift = None
        if self.drift is not None:
            drift = {
                "score": SCORE_NAME,
                "threshold": self.drift.threshold,
                "false_alarm_rate": self.drift.false_alarm_rate,
            }
        return {
            "name": self.settings.model.name,
            "backend": self.backend.name,
            "latent_dim": self.latent_dim,
            "image_size": self.image_size,
            "samplers": self.samplers,
            "default_sampler": self.default_sampler,
            "git_commit": self.lineage.get("git_commit"),
            "data_hash": self.lineage.get("data_hash"),
            "config": self.lineage.get("config", {}),
            "metrics": self.checkpoint.get("metrics", {}),
            "drift": drift,
            "latent_directions": directions,
        }

    def codes(self, n: int, seed: int, sampler: str) -> Tensor:
        """``n`` latent codes (n, latent_dim) of ``sampler`` drawn with ``seed``, exactly as
        predict draws them (``generate.latent_codes``; the stored mixture's sampler is kept
        between calls).

        Raises:
            SamplerError: If the sampler is unknown or the model has no mixture.
        """
        if sampler == "gmm" and self.mixture is not None:
            return self.mixture.sample(n, seed)
        return latent_codes(sampler, self.net, self.checkpoint, n, seed)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, 3, S, S) in [0, 1] of codes z (B, latent_dim)."""
        return self.backend.decode(z)

    def ingest_upload(self, raw: bytes) -> Tensor:
        """An uploaded file's bytes as the ingest decodes them: uint8 (3, S, S).

        Raises:
            UploadTooLargeError: Over ``max_upload_bytes``.
            BadImageError: A ValueError naming what is wrong with the file.
        """
        limit = self.settings.max_upload_bytes
        if len(raw) > limit:
            raise UploadTooLargeError(f"image of {len(raw)} bytes is over the {limit}-byte limit")
        return decode_image(raw, self.image_size, "resize", self.settings.max_pixels)

    def encode(self, images: Tensor) -> Tensor:
        """Latent means (B, latent_dim) of uint8 images (B, 3, S, S)."""
        return self.backend.encode(to_float(images))[0]

    def reconstruct(self, image: Tensor) -> Reconstruction:
        """Reconstruction ``decode(mu)`` of one uint8 image (3, S, S), scored."""
        x = to_float(image).unsqueeze(0)
        mu = self.backend.encode(x)[0]
        recon = self.backend.decode(mu).clamp(0, 1)
        similarity = ssim(recon, x)
        drift = None
        if self.drift is not None:
            scores = self.drift.scores(x, mu, similarity)
            drift = {
                "is_outlier": bool(scores.is_outlier[0]),
                "score": float(scores.score[0]),
                "threshold": self.drift.threshold,
                "verdict": scores.verdict(0),
            }
        return Reconstruction(
            x[0], recon[0], float(similarity[0]), float(psnr(recon, x)[0]), mu[0], drift
        )

    def interpolate(self, a: Tensor, b: Tensor, steps: int) -> Tensor:
        """Decodings (steps, 3, S, S) of ``steps`` codes evenly spaced from a to b (latent_dim,)
        both ends included."""
        weights = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
        return self.decode((1 - weights) * a + weights * b)

    def batch_drift(self, images: Tensor, alpha: float) -> dict[str, Any]:
        """MMD test of uint8 images (N, 3, S, S), N >= 2, against the training sample.

        Raises:
            RuntimeError: If the model stores no drift statistics.
        """
        if self.drift is None:
            raise RuntimeError("this model stores no drift statistics")
        return self.drift.batch_test(self.encode(images), alpha)
