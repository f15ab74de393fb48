"""Writing image tensors as PNG files and grids, exactly and atomically.

Plain torch and Pillow (no torchvision), so the slim CPU-only predict image needs neither
torchvision nor a torchvision build matching its torch."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from vae_cats.fileio import atomic_write


def to_uint8(images: Tensor) -> Tensor:
    """Map float images in [0, 1] to uint8 as ``round(value * 255)``, with no per-image
    stretch, so an all-0.5 image becomes 128 and low contrast stays low."""
    return images.detach().cpu().float().clamp(0, 1).mul(255).round().to(torch.uint8)


def to_float(images: Tensor) -> Tensor:
    """uint8 images (any shape) to float32 in [0, 1], as ``value / 255``."""
    return images.float() / 255.0


def make_grid(images: Tensor, nrow: int = 8) -> Tensor:
    """Tile float images (B, 3, H, W) in [0, 1] into one (3, H', W') image, 2-pixel white gaps
    around every cell, ``min(nrow, B)`` cells per row (the layout of torchvision's make_grid)."""
    images = images.detach().cpu()
    count, channels, height, width = images.shape
    cols = min(nrow, count)
    rows = -(-count // cols)
    cell_h, cell_w = height + 2, width + 2
    grid = torch.ones(channels, 2 + rows * cell_h, 2 + cols * cell_w, dtype=images.dtype)
    for i, image in enumerate(images):
        top, left = 2 + (i // cols) * cell_h, 2 + (i % cols) * cell_w
        grid[:, top : top + height, left : left + width] = image
    return grid


def save_png(image: Tensor, path: Path) -> Path:
    """Write one float image (3, H, W) in [0, 1] as an 8-bit RGB PNG (``to_uint8``), atomically."""
    pixels = Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy())
    return atomic_write(path, lambda handle: pixels.save(handle, format="PNG"))


def pairs_grid(x: Tensor, recon: Tensor, nrow: int = 8) -> Tensor:
    """Grid whose rows alternate inputs and their reconstructions, ``nrow`` images per row."""
    nrow = min(nrow, len(x))
    rows = []
    for start in range(0, len(x), nrow):
        rows += [x[start : start + nrow], recon[start : start + nrow]]
    return make_grid(torch.cat(rows), nrow=nrow)
