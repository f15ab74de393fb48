"""vae_cats.generate: principal components, traversal, batched decoding, interpolation."""

from __future__ import annotations

import pytest
import torch

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.generate import (
    TRAVERSE_DIMS,
    TRAVERSE_STEPS,
    decode_batches,
    interpolation_grid,
    traversal_codes,
    traversal_grid,
)
from vae_cats.model import ConvVAE
from vae_cats.predict_model import SHIPPED_MODEL
from vae_cats.samplers import LatentPCA, latent_pca


def test_latent_pca_recovers_known_directions_and_spreads() -> None:
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 6, generator=gen))[0].T  # orthonormal rows
    spreads = torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    mu = 2.0 + (torch.randn(20_000, 6, generator=gen) * spreads) @ basis
    pca = latent_pca(mu)
    assert pca.components.shape == (6, 6) and pca.mean.shape == pca.std.shape == (6,)
    assert torch.allclose(pca.mean, torch.full((6,), 2.0), atol=0.1)
    assert torch.allclose(pca.std, spreads, rtol=0.03)
    overlap = (pca.components * basis).sum(dim=1).abs()  # |cos| with the true directions
    assert overlap.min() > 0.99
    assert torch.allclose(pca.components @ pca.components.T, torch.eye(6), atol=1e-5)


def test_latent_pca_agrees_with_torch_pca_lowrank_and_is_sign_stable() -> None:
    mu = torch.randn(500, 10, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 11)
    pca = latent_pca(mu)
    _, singular, v = torch.pca_lowrank(mu, q=10, center=True, niter=10)
    assert torch.allclose(pca.std, singular / (len(mu) - 1) ** 0.5, rtol=1e-4)
    assert torch.allclose((pca.components * v.T).sum(dim=1).abs(), torch.ones(10), atol=1e-4)
    again = latent_pca(mu.flip(0))  # same set of means, another order: the same picture
    assert torch.allclose(again.components, pca.components, atol=1e-5)
    rebuilt = LatentPCA.from_state_dict(pca.state_dict())
    assert torch.equal(rebuilt.components, pca.components)


def test_latent_pca_needs_two_means() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        latent_pca(torch.zeros(1, 4))


def test_traversal_codes_walk_each_component_from_the_mean() -> None:
    pca = latent_pca(torch.randn(300, 5, generator=torch.Generator().manual_seed(2)))
    codes = traversal_codes(pca, dims=3, steps=7, span=3.0)
    assert codes.shape == (3, 7, 5)
    assert torch.allclose(codes[:, 3], pca.mean.expand(3, 5), atol=1e-6)  # middle: the mean
    for row in range(3):
        step = (codes[row, -1] - codes[row, 0]) / 2  # +3 std minus -3 std, halved
        assert torch.allclose(step, 3.0 * pca.std[row] * pca.components[row], atol=1e-5)


def test_traversal_of_the_shipped_model_changes_every_row() -> None:
    """Each row sweeps a principal component of the training means from the mean face; the
    old per-dimension sweep of one face's code changed only its first row visibly."""
    checkpoint = read_checkpoint(SHIPPED_MODEL)
    net = vae_from_checkpoint(checkpoint, SHIPPED_MODEL)
    grid = traversal_grid(net, LatentPCA.from_state_dict(checkpoint["latent_pca"]))
    assert grid.shape == (3, 2 + TRAVERSE_DIMS * 66, 2 + TRAVERSE_STEPS * 66)
    cells = grid[:, 2:, 2:].unflatten(1, (TRAVERSE_DIMS, 66)).unflatten(3, (TRAVERSE_STEPS, 66))
    first, last = cells[:, :, :64, 0, :64], cells[:, :, :64, -1, :64]  # (3, rows, 64, 64)
    change = (first - last).abs().mean(dim=(0, 2, 3))
    # Every row: > 5% of the value range on average (the old per-dimension sweep: 2%; the
    # shipped model's quietest rows, where only eyes and markings change, 8-10%).
    assert change.min() > 0.05, change


def test_decode_batches_bound_the_batch_and_match_one_decode() -> None:
    torch.manual_seed(0)
    net = ConvVAE(latent_dim=8, hidden_channels=[8, 16], image_size=16).eval()
    z = torch.randn(23, 8)
    batches = list(decode_batches(net, z, batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 3]
    with torch.no_grad():
        assert torch.allclose(torch.cat(batches), net.decode(z), atol=1e-6)


def test_interpolation_grid_needs_a_pair_and_uses_whole_pairs() -> None:
    torch.manual_seed(0)
    net = ConvVAE(latent_dim=8, hidden_channels=[8, 16], image_size=16).eval()
    x = torch.rand(3, 3, 16, 16)
    assert interpolation_grid(net, x).shape == (3, 2 + 18, 2 + 8 * 18)  # one pair: one row
    with pytest.raises(ValueError, match="at least 2 images"):
        interpolation_grid(net, x[:1])
