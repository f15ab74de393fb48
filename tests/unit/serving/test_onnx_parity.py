"""ONNX Runtime against eager PyTorch on real faces: graphs exported at batch 8 run at
batch 1, 3 and 64 within 1e-4 on [0, 1] pixels and 1 step after uint8 rounding."""

from __future__ import annotations

import pytest
import torch

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.store import ingested_splits
from vae_cats.fileio import ASSETS_DIR
from vae_cats.images import to_float, to_uint8
from vae_cats.serving.backends import EXPORT_BATCH, OnnxBackend, TorchBackend

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"


@pytest.fixture(scope="module")
def backends() -> tuple[TorchBackend, OnnxBackend]:
    net = vae_from_checkpoint(read_checkpoint(SHIPPED), SHIPPED)
    return TorchBackend(net, threads=1), OnnxBackend(net, 64, threads=1)


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return to_float(ingested_splits("bundled")["test"][:64])


def test_export_batch_differs_from_the_tested_ones() -> None:
    assert EXPORT_BATCH == 8


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_onnx_matches_eager_on_real_faces(
    backends: tuple[TorchBackend, OnnxBackend], faces: torch.Tensor, batch: int
) -> None:
    eager, onnx = backends
    x = faces[:batch]
    assert len(x) == batch
    mu, logvar = eager.encode(x)
    mu_onnx, logvar_onnx = onnx.encode(x)
    recon, recon_onnx = eager.decode(mu), onnx.decode(mu)
    errors = {
        "mu": (mu - mu_onnx).abs().max().item(),
        "logvar": (logvar - logvar_onnx).abs().max().item(),
        "pixels": (recon - recon_onnx).abs().max().item(),
    }
    steps = (to_uint8(recon).int() - to_uint8(recon_onnx).int()).abs().max().item()
    assert recon_onnx.shape == (batch, 3, 64, 64)
    assert errors["pixels"] <= 1e-4, f"max abs error on [0, 1] pixels: {errors}"
    assert steps <= 1, f"max uint8 step difference {steps} (errors {errors})"
    print(f"batch {batch}: max abs errors {errors}, uint8 steps {steps}")
