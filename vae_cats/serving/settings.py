"""Settings of the HTTP API, one frozen dataclass filled from the command line and handed to
each uvicorn worker through the environment (``to_environment`` / ``from_environment``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from vae_cats.checkpoint import SHIPPED_MODEL

BACKENDS = ("onnx", "torch")
# The variable the serving CLI fills for its workers (uvicorn starts them from an import
# string, so they cannot be handed a Python object).
SETTINGS_VARIABLE = "VAE_CATS_SERVE_SETTINGS"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, as a container's cpuset sets it;
    ``os.cpu_count`` counts the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(workers: int = 1) -> int:
    """Model threads per worker so that workers x threads <= the available cores."""
    return max(1, available_cores() // max(1, workers))


@dataclass(frozen=True)
class Settings:
    """What the app serves and its limits.

    Attributes:
        model: A packaged or training checkpoint.
        backend: ``onnx`` (ONNX Runtime, exported from the checkpoint at start-up) or
            ``torch`` (eager PyTorch).
        threads: Intra-op threads of the backend (torch and ONNX Runtime alike), per worker.
        max_upload_bytes: The largest image accepted, as a file part or a decoded base64
            field; a request body over ``max_body_bytes`` is refused before it is read.
        max_pixels: The largest width x height of an upload, read from its header before
            decoding (the model needs 64 x 64).
        chunk_images: The most images one backend call takes; larger requests (``/drift``
            of 512 faces, ``/generate`` of 256) run in chunks of this size, so the runtime's
            activation memory stays that of one chunk.
        batching: Micro-batching: concurrent decodes share one backend call
            (``serving/batching.py``).
        batch_wait_ms: How long the first decode of a batch waits for others to join it;
            0: only those already waiting join (they queue while the decoder is busy).
        batch_max_images: The most images decoded in one shared call.
        batch_queue: The most decode requests waiting; past it a request is refused (503).
        load_in_background: Load the model in a thread after start-up (``/readyz`` says 503
            until then) instead of before the worker takes connections.
    """

    model: Path = SHIPPED_MODEL
    backend: str = "onnx"
    threads: int = default_threads()
    max_upload_bytes: int = 2 * 1024 * 1024
    max_pixels: int = 2048 * 2048
    chunk_images: int = 64
    batching: bool = True
    batch_wait_ms: float = 0.0
    batch_max_images: int = 64
    batch_queue: int = 256
    load_in_background: bool = True

    @property
    def max_body_bytes(self) -> int:
        """The largest request body: a base64 image of ``max_upload_bytes`` (4/3 as long)
        plus 64 KiB of form fields and multipart framing."""
        return -(-self.max_upload_bytes * 4 // 3) + 64 * 1024

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("threads", "chunk_images", "batch_max_images", "batch_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ValueError(f"batch_wait_ms must lie in [0, 1000], got {self.batch_wait_ms}")

    def to_environment(self) -> str:
        """These settings as the JSON text ``from_environment`` reads."""
        return json.dumps({**asdict(self), "model": str(self.model)})

    @classmethod
    def from_environment(cls) -> Settings:
        """The settings the serving CLI put in ``$VAE_CATS_SERVE_SETTINGS``.

        Raises:
            RuntimeError: If the variable is not set (the factory is meant for the CLI).
        """
        text = os.environ.get(SETTINGS_VARIABLE)
        if not text:
            raise RuntimeError(
                f"${SETTINGS_VARIABLE} is not set: start the API with python -m vae_cats.serving"
            )
        values = json.loads(text)
        known = {field.name for field in fields(cls)}
        return cls(
            **{**{k: v for k, v in values.items() if k in known}, "model": Path(values["model"])}
        )
