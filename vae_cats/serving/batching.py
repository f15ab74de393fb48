"""Micro-batching of decoder calls: concurrent ``/generate``, ``/decode``, ``/interpolate``
and ``/reconstruct`` requests that arrive while the decoder is busy (or within
``batch_wait_ms``) share one backend call.

Request threads put their codes in a bounded queue and wait; one thread takes the first
waiting job, adds whatever else is waiting (up to ``batch_max_images`` images, waiting at
most ``batch_wait_ms`` for more), decodes the concatenation in one call and hands each job its
rows. Each image of a batch is computed by the same kernels as alone (the decoder has no
batch statistics), so answers are byte-identical to unbatched ones (tested).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import torch
from torch import Tensor

log = logging.getLogger(__name__)


class BusyError(RuntimeError):
    """The decode queue is full (HTTP 503): the server is overloaded right now."""


class _Job:
    __slots__ = ("z", "future")

    def __init__(self, z: Tensor) -> None:
        self.z = z
        self.future: Future[Tensor] = Future()


class DecodeBatcher:
    """Shares decoder calls between concurrent requests.

    Args:
        decode: The backend's decoder, codes (B, latent_dim) -> images (B, 3, S, S).
        max_images: The most images in one shared call (a larger request runs alone).
        wait_s: How long the first job of a batch waits for others, in seconds (0: take only
            what is already waiting).
        queue_size: The most jobs waiting; ``decode`` raises ``BusyError`` past it.
        on_batch: Called with the image count of every shared call (metrics).
    """

    def __init__(
        self,
        decode: Callable[[Tensor], Tensor],
        max_images: int,
        wait_s: float,
        queue_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._decode = decode
        self.max_images = max_images
        self.wait_s = wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._on_batch = on_batch
        self._carry: _Job | None = None
        self._thread = threading.Thread(target=self._run, name="decode-batcher", daemon=True)
        self._thread.start()

    def decode(self, z: Tensor) -> Tensor:
        """Images (B, 3, S, S) in [0, 1] of codes z (B, latent_dim), decoded in a shared call.

        Raises:
            BusyError: If ``queue_size`` jobs are already waiting.
        """
        job = _Job(z)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise BusyError(
                f"server busy: {self._queue.maxsize} decode requests are waiting; retry shortly"
            ) from None
        return job.future.result()

    def close(self) -> None:
        """Stop the batching thread once the jobs queued so far are done."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _next_batch(self, first: _Job) -> list[_Job]:
        jobs, count = [first], len(first.z)
        deadline = time.monotonic() + self.wait_s
        while count < self.max_images:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:  # closing: finish this batch, then stop
                self._queue.put(None)
                break
            if count + len(job.z) > self.max_images:
                self._carry = job  # starts the next batch
                break
            jobs.append(job)
            count += len(job.z)
        return jobs

    def _run(self) -> None:
        while True:
            first = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if first is None:
                return
            jobs = self._next_batch(first)
            try:
                images = self._decode(torch.cat([job.z for job in jobs]))
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for job in jobs:
                    job.future.set_exception(err)
                continue
            if self._on_batch is not None:
                self._on_batch(len(images))
            for job, part in zip(jobs, images.split([len(job.z) for job in jobs]), strict=True):
                job.future.set_result(part)
