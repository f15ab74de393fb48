"""The micro-batcher with the shipped model's ONNX decoder: concurrent decodes share calls,
each gets exactly its own rows (the same floats as decoded alone), the queue is bounded, a
failure reaches every request of its batch."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import Tensor

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.fileio import ASSETS_DIR
from vae_cats.serving.backends import OnnxBackend
from vae_cats.serving.batching import BusyError, DecodeBatcher

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"


@pytest.fixture(scope="module")
def backend() -> OnnxBackend:
    net = vae_from_checkpoint(read_checkpoint(SHIPPED), SHIPPED)
    return OnnxBackend(net, 64, threads=1)


def codes(count: int, seed: int, latent_dim: int = 512) -> Tensor:
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))


def test_concurrent_decodes_share_calls_and_get_their_own_images(backend: OnnxBackend) -> None:
    sizes: list[int] = []
    batcher = DecodeBatcher(backend.decode, 32, 0.05, 64, sizes.append)
    jobs = [codes(1 + seed % 4, seed) for seed in range(12)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        together = list(pool.map(batcher.decode, jobs))
    batcher.close()
    assert sum(sizes) == sum(len(z) for z in jobs) and max(sizes) > 4, sizes
    assert all(size <= 32 for size in sizes)
    for z, images in zip(jobs, together, strict=True):
        assert images.shape == (len(z), 3, 64, 64)
        assert torch.equal(images, backend.decode(z))  # bit-equal to decoding alone


def test_a_full_queue_refuses_and_a_failure_reaches_every_request(
    backend: OnnxBackend,
) -> None:
    gate = threading.Event()

    def held(z: Tensor) -> Tensor:
        gate.wait(30)
        if len(z) == 2:  # the two waiting requests, decoded together
            raise RuntimeError("decoder failed")
        return backend.decode(z)

    batcher = DecodeBatcher(held, 64, 0.0, 2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batcher.decode, codes(1, 0))  # taken by the batcher, held
        while batcher._queue.qsize():  # noqa: SLF001 - wait until the batcher holds it
            threading.Event().wait(0.01)
        waiting = [pool.submit(batcher.decode, codes(1, seed)) for seed in (1, 2)]
        while batcher._queue.qsize() < 2:  # noqa: SLF001
            threading.Event().wait(0.01)
        with pytest.raises(BusyError, match="busy"):
            batcher.decode(codes(1, 3))
        gate.set()
        assert first.result(30).shape == (1, 3, 64, 64)
        errors = [future.exception(30) for future in waiting]
    assert all(isinstance(error, RuntimeError) for error in errors), errors
    batcher.close()
