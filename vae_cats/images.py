"""Writing image tensors as PNG files and grids, exactly and atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import Tensor


def to_uint8(images: Tensor) -> Tensor:
    """Map float images in [0, 1] to uint8 as ``round(value * 255)``, with no per-image
    stretch, so an all-0.5 image becomes 128 and low contrast stays low."""
    return images.detach().cpu().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def make_grid(images: Tensor, nrow: int = 8) -> Tensor:
    """Tile float images (B, 3, H, W) in [0, 1] into one (3, H', W') image, 2-pixel white gaps."""
    return torchvision.utils.make_grid(images.detach().cpu(), nrow=nrow, padding=2, pad_value=1.0)


def save_png(image: Tensor, path: Path) -> Path:
    """Write one float image (3, H, W) in [0, 1] as a PNG, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torchvision.io.write_png(to_uint8(image), str(tmp))
    os.replace(tmp, path)
    return path


def pairs_grid(x: Tensor, recon: Tensor, nrow: int = 8) -> Tensor:
    """Grid whose rows alternate inputs and their reconstructions, ``nrow`` images per row."""
    nrow = min(nrow, len(x))
    rows = []
    for start in range(0, len(x), nrow):
        rows += [x[start : start + nrow], recon[start : start + nrow]]
    return make_grid(torch.cat(rows), nrow=nrow)
