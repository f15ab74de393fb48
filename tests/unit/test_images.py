from pathlib import Path

import torch
from torchvision.io import read_image

from vae_cats.images import make_grid, pairs_grid, save_png, to_uint8


def test_half_grey_saves_as_127_or_128(tmp_path: Path) -> None:
    saved = read_image(str(save_png(torch.full((3, 16, 16), 0.5), tmp_path / "grey.png")))
    assert set(saved.unique().tolist()) <= {127, 128}


def test_low_contrast_is_not_stretched(tmp_path: Path) -> None:
    image = 0.4 + 0.2 * torch.rand(3, 32, 32)
    saved = read_image(str(save_png(image, tmp_path / "low.png")))
    assert saved.min() >= round(0.4 * 255) and saved.max() <= round(0.6 * 255)


def test_grid_cells_equal_the_single_pngs(tmp_path: Path) -> None:
    images = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    grid = read_image(str(save_png(make_grid(images, nrow=3), tmp_path / "grid.png")))
    for i, image in enumerate(images):
        single = read_image(str(save_png(image, tmp_path / f"{i}.png")))
        row, col = divmod(i, 3)
        top, left = 2 + row * 66, 2 + col * 66
        assert torch.equal(grid[:, top : top + 64, left : left + 64], single)


def test_pairs_grid_alternates_inputs_and_reconstructions() -> None:
    x, recon = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    grid = to_uint8(pairs_grid(x, recon, nrow=4))
    assert grid.shape == (3, 2 + 2 * 10, 2 + 4 * 10)
    assert grid[:, 2:10, 2:10].max() == 0 and grid[:, 12:20, 2:10].min() == 255
