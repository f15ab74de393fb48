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
    fit_gradient_model,
    gradient_histograms,
    gradient_score,
    median_bandwidth,
    mmd_permutation_test,
    neighbour_distance,
    pixel_detail,
    psnr,
    reconstruction_scores,
    reference_statistics,
)
from vae_cats.fileio import ASSETS_DIR
from vae_cats.images import to_float
from vae_cats.model import BaseVAE

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"


@pytest.fixture(scope="module")
def shipped() -> tuple[BaseVAE, dict]:
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


def test_gradient_histograms_place_edges_and_tell_photos_from_faces(
    bundled: dict[str, torch.Tensor],
) -> None:
    """Vertical stripes vote only into the horizontal-gradient bin (0 degrees) of every cell;
    a face is closer to the training faces' edge layout than a face turned on its side."""
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::8] = 1.0
    histograms = gradient_histograms(stripes)
    assert histograms.shape == (1, 4 * 4 * 8)
    assert float(histograms.sum()) == pytest.approx(1.0, abs=1e-4)
    per_bin = histograms.view(8, 16).sum(dim=1)  # bin-major: (bins, cells x cells)
    assert float(per_bin[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(gradient_histograms(torch.full((1, 3, 64, 64), 0.3)).abs().sum()) == 0.0
    model = fit_gradient_model(bundled["train"])
    faces = to_float(bundled["test"])
    upright = gradient_score(model, faces)
    turned = gradient_score(model, torch.rot90(faces, 1, dims=(2, 3)))
    assert float(turned.median()) > 1.5 * float(upright.median())


def test_neighbour_distance_is_the_kth_cosine_distance() -> None:
    reference = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 0.1]])
    mu = torch.tensor([[3.0, 0.0]])
    # cosine similarities 1, 0, -1, 0.9988: the 2nd nearest is [2, 0.1].
    second = 1 - 2.0 / (2.0**2 + 0.1**2) ** 0.5
    assert float(neighbour_distance(reference, mu, k=1)) == pytest.approx(0.0, abs=1e-12)
    assert float(neighbour_distance(reference, mu, k=2)) == pytest.approx(second, abs=1e-7)
    assert float(neighbour_distance(reference, mu, k=4)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 5"):
        neighbour_distance(reference, mu, k=5)


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
    shipped: tuple[BaseVAE, dict], bundled: dict[str, torch.Tensor]
) -> None:
    """Calibrated on 400 bundled faces at 5%: at most 5% of them are flagged, noise and a flat
    colour are, and the stored parts have the documented shapes. (A conformal p-value is at
    least 1 / (n + 1): the calibration set must be large enough for the rate.)"""
    net, checkpoint = shipped
    train, val = bundled["train"][:200], bundled["train"][200:600]
    assert len(val) == 400
    stats = reference_statistics(net, train, val, checkpoint["gmm_sampler"], 0.05)
    names = ("val_ssim", "val_detail", "val_nll", "val_orientation", "val_colour")
    for name in (*names, "val_gradients", "val_neighbours"):
        assert stats[name].shape == (len(val),)
        assert bool((stats[name].diff() >= 0).all()), f"{name} not sorted ascending"
    assert stats["orientation_probe"]["coef"].shape == (4, net.latent_dim)
    assert stats["reference_mu"].shape[1] == net.latent_dim
    assert stats["colour_model"]["precision"].shape == (10, 10)
    assert stats["gradient_model"]["precision"].shape == (128, 128)
    assert stats["combination"] == "fisher"
    detector = DriftDetector(stats, checkpoint["gmm_sampler"])
    mu, ssim = reconstruction_scores(net, val)
    flagged = detector.scores(val.float() / 255, mu, ssim).is_outlier.float().mean()
    assert flagged <= 0.05
    # The threshold is the 95% quantile of the validation faces' leave-one-out scores.
    own = detector.scores(val.float() / 255, mu, ssim, leave_one_out=True)
    assert 0.04 <= float(own.is_outlier.double().mean()) <= 0.05
    assert bool((own.score >= detector.scores(val.float() / 255, mu, ssim).score).all())
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
    reasons = ("cannot draw", "busier", "unlikely under", "edges", "far from")
    assert any(r in scores.verdict(0) for r in reasons), scores.verdict(0)
    assert any(r in scores.verdict(1) for r in ("flatter", "simpler", "edges")), scores.verdict(1)


def test_reference_statistics_need_enough_images(shipped: tuple[BaseVAE, dict]) -> None:
    net, checkpoint = shipped
    few = torch.zeros(5, 3, 64, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at least 20"):
        reference_statistics(net, few, few, checkpoint["gmm_sampler"])


def test_a_model_packaged_before_fisher_is_scored_by_its_smallest_p_value(
    shipped: tuple[BaseVAE, dict], bundled: dict[str, torch.Tensor]
) -> None:
    """Statistics without ``combination`` (packaged before it) keep the score their threshold
    was set on: -log10 of the smallest p-value, and the scores they do not store are skipped."""
    net, checkpoint = shipped
    legacy = {
        k: v
        for k, v in checkpoint["drift"].items()
        if k not in ("combination", "gradient_model", "val_gradients", "val_neighbours")
    }
    detector = DriftDetector(legacy, checkpoint["gmm_sampler"])
    assert "smallest" in detector.score_name
    faces = bundled["test"][:8]
    mu, ssim = reconstruction_scores(net, faces)
    scores = detector.scores(to_float(faces), mu, ssim)
    assert set(scores.p_values) == {
        "ssim_low",
        "ssim_high",
        "detail_low",
        "detail_high",
        "nll",
        "orientation",
        "colour",
    }
    smallest = torch.stack(list(scores.p_values.values())).min(dim=0).values
    assert torch.equal(scores.score, -torch.log10(smallest))


def test_detector_is_absent_without_statistics() -> None:
    assert DriftDetector.from_checkpoint({"gmm_sampler": {}}) is None
