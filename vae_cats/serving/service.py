"""What the API does with the model, free of HTTP: generate, decode, reconstruct, interpolate
and score drift, on either backend. Images leave as PNG bytes."""

from __future__ import annotations

import base64
import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from torch import Tensor

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.decode import check_pixels, decode_image
from vae_cats.data.dedupe import pixel_sha256
from vae_cats.drift import DriftDetector, psnr
from vae_cats.fileio import PROJECT_DIR
from vae_cats.generate import default_sampler, latent_codes
from vae_cats.images import make_grid, to_float, to_uint8
from vae_cats.losses import ssim
from vae_cats.samplers import sampler_from_checkpoint, stored_samplers
from vae_cats.serving.backends import make_backend
from vae_cats.serving.batching import DecodeBatcher
from vae_cats.serving.settings import Settings

DIRECTIONS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UploadTooLargeError(ValueError):
    """An image over the upload limit (HTTP 413)."""


class TooFewImagesError(ValueError):
    """A drift batch with fewer than two distinct images (HTTP 422)."""


def png_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk without decoding, or None for another format.

    Pillow refuses images over its own decompression-bomb limit (178,956,970 pixels) inside
    ``Image.open``, with its own message; reading the header here first makes the API's
    ``max_pixels`` the one cap a PNG meets, whatever its size (the ingest decoder reads JPEG
    headers the same way)."""
    if len(raw) < 24 or not raw.startswith(PNG_SIGNATURE) or raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return int(width), int(height)


def shown_path(path: Path) -> str:
    """``path`` as a predict command would name it: relative to the project when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(PROJECT_DIR))
    except ValueError:
        return str(resolved)


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

    def __init__(self, settings: Settings, on_batch: Callable[[int], None] | None = None) -> None:
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
        # Built once: the mixtures keep their covariance factors between calls.
        self.learned = {
            name: sampler_from_checkpoint(name, self.checkpoint)
            for name in stored_samplers(self.checkpoint)
        }
        for sampler in self.learned.values():
            sampler.sample(1)  # computes the factors before the first request
        self.lineage: dict[str, Any] = self.checkpoint.get("lineage", {})
        self.batcher = (
            DecodeBatcher(
                self._decode_chunks,
                settings.batch_max_images,
                settings.batch_wait_ms / 1000,
                settings.batch_queue,
                on_batch,
            )
            if settings.batching
            else None
        )

    def close(self) -> None:
        """Stop the micro-batching thread (if any)."""
        if self.batcher is not None:
            self.batcher.close()

    @property
    def latent_dim(self) -> int:
        return int(self.net.latent_dim)

    @property
    def samplers(self) -> list[str]:
        """Samplers this model offers: ``normal`` always, and the learned ones it stores."""
        return ["normal", *self.learned]

    @property
    def default_sampler(self) -> str:
        return default_sampler(self.checkpoint)

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
                "score": self.drift.score_name,
                "threshold": self.drift.threshold,
                "false_alarm_rate": self.drift.false_alarm_rate,
            }
        return {
            "name": self.settings.model.name,
            "path": shown_path(self.settings.model),
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
        predict draws them (``generate.latent_codes``; the stored samplers are built once).

        Raises:
            SamplerError: If the sampler is unknown or the model does not store it.
        """
        if sampler in self.learned:
            return self.learned[sampler].sample(n, seed)
        return latent_codes(sampler, self.net, self.checkpoint, n, seed)[0]

    def _decode_chunks(self, z: Tensor) -> Tensor:
        chunk = self.settings.chunk_images
        return torch.cat([self.backend.decode(part) for part in z.split(chunk)])

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, 3, S, S) in [0, 1] of codes z (B, latent_dim): through the micro-batcher
        when batching is on, in chunks of at most ``chunk_images`` codes.

        Raises:
            BusyError: If batching is on and its queue is full.
        """
        if self.batcher is not None:
            return self.batcher.decode(z)
        return self._decode_chunks(z)

    def ingest_upload(self, raw: bytes, size: int | None = None) -> Tensor:
        """An uploaded file's bytes as the ingest decodes them: uint8 (3, S, S).

        Args:
            raw: The file's bytes; at most ``max_upload_bytes + 1`` are read of a larger one.
            size: The upload's full size in bytes when known (a multipart part), for the
                message; else a ``raw`` one byte over the limit is reported as "more than".

        Raises:
            UploadTooLargeError: Over ``max_upload_bytes``.
            BadImageError: A ValueError naming what is wrong with the file (``too many
                pixels`` from a JPEG's or PNG's header before anything is decoded).
        """
        limit = self.settings.max_upload_bytes
        if len(raw) > limit:
            what = (
                f"{size} bytes"
                if size is not None and size > limit
                else f"more than {limit} bytes"
            )
            raise UploadTooLargeError(f"image of {what} is over the {limit}-byte limit")
        declared = png_size(raw)
        if declared is not None:
            check_pixels(*declared, self.settings.max_pixels)
        return decode_image(raw, self.image_size, "resize", self.settings.max_pixels)

    def encode(self, images: Tensor) -> Tensor:
        """Latent means (B, latent_dim) of uint8 images (B, 3, S, S), encoded in chunks of at
        most ``chunk_images`` (peak memory that of one chunk, whatever B)."""
        chunk = self.settings.chunk_images
        return torch.cat([self.backend.encode(to_float(part))[0] for part in images.split(chunk)])

    def reconstruct(self, image: Tensor) -> Reconstruction:
        """Reconstruction ``decode(mu)`` of one uint8 image (3, S, S), scored."""
        x = to_float(image).unsqueeze(0)
        mu = self.backend.encode(x)[0]
        recon = self.decode(mu).clamp(0, 1)
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
        """MMD test of uint8 images (N, 3, S, S) against the training sample, after removing
        repeated images (identical pixels once ingested): a batch of one face sent twice is
        not a sample of two faces, and the test would call the repeats drift. The answer
        carries ``duplicates_removed``; ``n`` counts the distinct images tested.

        Raises:
            RuntimeError: If the model stores no drift statistics.
            TooFewImagesError: If fewer than 2 distinct images remain.
        """
        if self.drift is None:
            raise RuntimeError("this model stores no drift statistics")
        seen: set[str] = set()
        keep = []
        for i, image in enumerate(images):
            digest = pixel_sha256(image)
            if digest not in seen:
                seen.add(digest)
                keep.append(i)
        if len(keep) < 2:
            raise TooFewImagesError(
                f"{len(keep)} distinct image among {len(images)} (repeated images are removed "
                "before the test): give at least 2 different images"
            )
        result = self.drift.batch_test(self.encode(images[keep]), alpha)
        return {**result, "duplicates_removed": len(images) - len(keep)}
