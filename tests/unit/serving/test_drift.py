"""vae_cats.drift on real faces of the bundled sample and the shipped model: the MMD test,
conformal p-values, the per-image scores of DriftDetector and what reference_statistics
stores."""

from __future__ import annotations

import pytest
import torch

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.store import ingested_splits
from vae_cats.drift import (
    DriftDetector,
    colour_score,
    colour_statistics,
    fit_colour_model,
    median_bandwidth,
    mmd_permutation_test,
    pixel_detail,
    psnr,
    reconstruction_scores,
    reference_statistics,
)
from vae_cats.fileio import ASSETS_DIR
from vae_cats.images import to_float

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"


@pytest.fixture(scope="module")
def shipped() -> tuple[torch.nn.Module, dict]:
    checkpoint = read_checkpoint(SHIPPED)
    return vae_from_checkpoint(checkpoint, SHIPPED), checkpoint


@pytest.fixture(scope="module")
def bundled() -> dict[str, torch.Tensor]:
    return ingested_splits("bundled")


def test_mmd_same_distribution_is_not_drift_and_a_shift_is() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(200, 8, generator=generator)
    same = torch.randn(60, 8, generator=generator)
    shifted = torch.randn(60, 8, generator=generator) + 0.8
    bandwidth = median_bandwidth(reference)
    _, p_same = mmd_permutation_test(same, reference, bandwidth, permutations=200)
    mmd2, p_shift = mmd_permutation_test(shifted, reference, bandwidth, permutations=200)
    assert p_same > 0.05
    assert p_shift < 0.01 and mmd2 > 0


def test_mmd_statistic_is_the_direct_unbiased_formula() -> None:
    """The permutations are evaluated as matrix products: the observed statistic still equals
    Gretton et al.'s eq. 3 computed term by term."""
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 5, generator=generator), torch.randn(11, 5, generator=generator) + 0.3
    bandwidth = 2.0

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a.double(), b.double()).pow(2) / (2 * bandwidth**2))

    m, n = len(x), len(y)
    direct = (
        (k(x, x).sum() - m) / (m * (m - 1))
        + (k(y, y).sum() - n) / (n * (n - 1))
        - 2 * k(x, y).mean()
    )
    mmd2, p_value = mmd_permutation_test(x, y, bandwidth, permutations=99)
    assert mmd2 == pytest.approx(float(direct), abs=1e-12)
    assert 0 < p_value <= 1 and p_value * 100 == pytest.approx(round(p_value * 100))


def test_colour_statistics_tell_leaves_and_sky_from_faces(
    bundled: dict[str, torch.Tensor],
) -> None:
    faces = bundled["train"]
    model = fit_colour_model(faces)
    grey = torch.full((1, 3, 64, 64), 0.5)
    assert colour_statistics(grey).shape == (1, 10)
    assert torch.allclose(colour_statistics(grey)[0, :8:2], torch.tensor([0.0, 0.0, 0.0, 0.5]))
    leaves = torch.zeros(1, 3, 64, 64)
    leaves[:, 1] = 0.6
    leaves[:, 0] = 0.2
    sky = torch.zeros(1, 3, 64, 64)
    sky[:, 2] = 0.9
    sky[:, 1] = 0.5
    held_out = colour_score(model, to_float(bundled["test"]))
    assert float(colour_score(model, leaves)) > 10 * float(held_out.quantile(0.99))
    assert float(colour_score(model, sky)) > 10 * float(held_out.quantile(0.99))


def test_mmd_refuses_a_single_row() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd_permutation_test(torch.zeros(1, 4), torch.zeros(5, 4), 1.0)


def test_pixel_detail_and_psnr_values() -> None:
    flat = torch.full((1, 3, 8, 8), 0.5)
    stripes = torch.zeros(1, 3, 8, 8)
    stripes[..., ::2] = 1.0
    assert float(pixel_detail(flat)) == 0.0
    assert float(pixel_detail(stripes)) == pytest.approx(0.5)  # 1 across, 0 down
    assert float(psnr(flat + 0.1, flat)) == pytest.approx(20.0, abs=1e-4)


def test_reference_statistics_flag_about_the_rate_on_validation_faces(
    shipped: tuple[torch.nn.Module, dict], bundled: dict[str, torch.Tensor]
) -> None:
    """Calibrated on 400 bundled faces at 5%: at most 5% of them are flagged, noise and a flat
    colour are, and the stored parts have the documented shapes. (A conformal p-value is at
    least 1 / (n + 1): the calibration set must be large enough for the rate.)"""
    net, checkpoint = shipped
    train, val = bundled["train"][:200], bundled["train"][200:600]
    assert len(val) == 400
    stats = reference_statistics(net, train, val, checkpoint["gmm_sampler"], 0.05)
    for name in ("val_ssim", "val_detail", "val_nll", "val_orientation", "val_colour"):
        assert stats[name].shape == (len(val),)
        assert bool((stats[name].diff() >= 0).all()), f"{name} not sorted ascending"
    assert stats["orientation_probe"]["coef"].shape == (4, net.latent_dim)
    assert stats["reference_mu"].shape[1] == net.latent_dim
    assert stats["colour_model"]["precision"].shape == (10, 10)
    detector = DriftDetector(stats, checkpoint["gmm_sampler"])
    mu, ssim = reconstruction_scores(net, val)
    flagged = detector.scores(val.float() / 255, mu, ssim).is_outlier.float().mean()
    assert flagged <= 0.05
    odd = torch.stack(
        [
            torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(1)),
            torch.full((3, 64, 64), 128),
        ]
    ).to(torch.uint8)
    mu, ssim = reconstruction_scores(net, odd)
    scores = detector.scores(odd.float() / 255, mu, ssim)
    assert scores.is_outlier.tolist() == [True, True], scores.score
    # Noise is unlike a face on several scores at once; the verdict names the lowest p-value.
    assert any(r in scores.verdict(0) for r in ("cannot draw", "busier", "unlikely under"))
    assert "flatter" in scores.verdict(1) or "simpler" in scores.verdict(1)


def test_reference_statistics_need_enough_images(shipped: tuple[torch.nn.Module, dict]) -> None:
    net, checkpoint = shipped
    few = torch.zeros(5, 3, 64, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at least 20"):
        reference_statistics(net, few, few, checkpoint["gmm_sampler"])


def test_detector_is_absent_without_statistics() -> None:
    assert DriftDetector.from_checkpoint({"gmm_sampler": {}}) is None
