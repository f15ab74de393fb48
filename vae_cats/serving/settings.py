"""Settings of the HTTP API, one frozen dataclass filled from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vae_cats.fileio import ASSETS_DIR

BACKENDS = ("onnx", "torch")
SHIPPED_MODEL = ASSETS_DIR / "cats_vae.ckpt"


def default_threads(workers: int = 1) -> int:
    """Model threads per worker so that workers x threads <= the CPU cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@dataclass(frozen=True)
class Settings:
    """What the app serves and its limits.

    Attributes:
        model: A packaged or training checkpoint.
        backend: ``onnx`` (ONNX Runtime, exported from the checkpoint at start-up) or
            ``torch`` (eager PyTorch).
        threads: Intra-op threads of the backend (torch and ONNX Runtime alike).
        max_upload_bytes: The largest image accepted, as a file part or a decoded base64
            field; a request body over ``max_body_bytes`` is refused before it is read.
        max_pixels: The largest width x height of an upload, read from its header before
            decoding (the model needs 64 x 64).
    """

    model: Path = SHIPPED_MODEL
    backend: str = "onnx"
    threads: int = default_threads()
    max_upload_bytes: int = 2 * 1024 * 1024
    max_pixels: int = 2048 * 2048

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: a base64 image of ``max_upload_bytes`` (4/3 as long)
        plus 64 KiB of form fields and multipart framing."""
        return -(-self.max_upload_bytes * 4 // 3) + 64 * 1024

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
