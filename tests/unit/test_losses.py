import pytest
import torch

from vae_cats.losses import (
    check_unit_range,
    free_bits_kl,
    kl_divergence,
    ssim,
    ssim_recon_loss,
)


def test_ssim_recon_loss_of_image_with_itself_is_zero() -> None:
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert ssim_recon_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)


def test_ssim_recon_loss_of_inverted_noise_is_near_top_of_range() -> None:
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loss = ssim_recon_loss(1 - x, x).item()
    assert 0.9 < loss <= 1.0


def test_ssim_recon_loss_of_flat_black_images_is_zero_with_finite_gradients() -> None:
    recon = torch.zeros(2, 3, 64, 64, requires_grad=True)
    loss = ssim_recon_loss(recon, torch.zeros(2, 3, 64, 64))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    assert recon.grad is not None and torch.isfinite(recon.grad).all()


def test_ssim_recon_loss_gradients_are_finite_on_random_images() -> None:
    gen = torch.Generator().manual_seed(1)
    recon = torch.rand(2, 3, 64, 64, generator=gen).requires_grad_()
    ssim_recon_loss(recon, torch.rand(2, 3, 64, 64, generator=gen)).backward()
    assert recon.grad is not None and torch.isfinite(recon.grad).all()


def test_ssim_recon_loss_refuses_0_to_255_images() -> None:
    x = torch.rand(2, 3, 64, 64) * 255
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ssim_recon_loss(x, x)


def test_ssim_recon_loss_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        ssim_recon_loss(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 32))


def test_ssim_metric_is_one_for_identical_images() -> None:
    x = torch.rand(3, 3, 64, 64)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-5)


def test_kl_divergence_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(dim=1)
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-5)


def test_kl_divergence_is_zero_at_the_prior() -> None:
    assert torch.allclose(kl_divergence(torch.zeros(2, 8), torch.zeros(2, 8)), torch.zeros(2))


def test_kl_divergence_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        kl_divergence(torch.zeros(2, 8), torch.zeros(2, 4))


def test_free_bits_kl_without_a_floor_is_the_mean_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    expected = kl_divergence(mu, logvar).mean()
    assert free_bits_kl(mu, logvar, 0.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_free_bits_kl_floors_each_dimension_of_the_batch_mean() -> None:
    mu = torch.zeros(3, 4)
    mu[:, 0] = 2.0  # KL 2 nats in dimension 0, 0 in the others
    assert free_bits_kl(mu, torch.zeros(3, 4), 0.5).item() == pytest.approx(2.0 + 3 * 0.5)
    with pytest.raises(ValueError, match="free_bits"):
        free_bits_kl(mu, torch.zeros(3, 4), -1.0)


def test_check_unit_range_names_the_tensor_and_the_range() -> None:
    check_unit_range("x", torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"images must hold values in \[0, 1\], got range"):
        check_unit_range("images", torch.full((1, 3, 8, 8), 2.0))
