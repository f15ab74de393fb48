"""Drift: is an image (or a batch of images) unlike the faces the model was trained on?

Plain torch and scikit-learn. ``reference_statistics`` runs at packaging time and stores, in
the slim model under ``drift``, what the checks need; ``DriftDetector`` applies them.

Per image, three scores, each turned into a conformal p-value against the validation split
(``p = (1 + #{validation scores at least as extreme}) / (n + 1)``; Bates et al. 2023,
"Testing for outliers with conformal p-values"):

- ``ssim``: SSIM of the reconstruction ``decode(mu)`` against the image, two-sided: too low
  (noise, clutter: the model cannot draw it) or too high (a flat or very simple picture,
  simpler than any face);
- ``nll``: negative log-likelihood of the posterior mean ``mu`` under the training means'
  Gaussian mixture stored in the model (``gmm_sampler``, ``latent_mixture``);
- ``detail``: mean absolute difference between neighbouring pixels (total variation per
  pixel), two-sided: a flat colour or a smooth gradient has far less than a face, noise far
  more (image complexity, as in Serra et al. 2020, "Input complexity and out-of-distribution
  detection with likelihood-based generative models");
- ``orientation``: ``-log P(upright | mu)`` of a logistic regression fitted on the training
  means of faces turned by 0, 90, 180 and 270 degrees (a geometric-transformation classifier,
  Golan & El-Yaniv 2018, "Deep anomaly detection using geometric transformations"): the
  latent codes alone hardly tell a face on its side from an upright one;
- ``colour``: squared Mahalanobis distance of the image's colour statistics
  (``colour_statistics``: opponent-colour means and spreads, saturation, the share of green
  and of blue pixels, brightness) from the training faces' (Ledoit-Wolf covariance): a
  feature the VAE does not model, since an SSIM-trained decoder draws colour loosely and a
  sky, leaves or a flower reconstruct about as well as fur;
- ``gradients``: squared Mahalanobis distance of the image's gradient-orientation histograms
  (``gradient_histograms``, a HOG-like layout of edges over a 4x4 grid of cells; Dalal &
  Triggs 2005) from the training faces' (Ledoit-Wolf): a face has its edges in a face's
  places (eyes, ears, muzzle), a crop of a photo elsewhere;
- ``neighbours``: cosine distance of ``mu`` to its 5th nearest neighbour among the stored
  training means (``reference_mu``; deep nearest neighbours, Sun et al. 2022, "Out-of-
  distribution detection with deep nearest neighbors"): local, where the mixture is global.

The p-values are combined by Fisher's statistic ``-2 sum(ln p)`` (Fisher 1932): several
moderately unusual scores add up, where the smallest p-value alone missed half the photos
whose colour, edges and code were each only somewhat off. The image is an outlier above the
threshold that flags ``false_alarm_rate`` (1%) of the validation faces. The p-values of the
validation faces themselves, when the threshold is set, leave that face out of its own
reference (a new image is not in the reference either): counting itself made every
validation face look more typical than a new face, so the threshold came out low and 2.5% of
the held-out test faces were flagged at a nominal 1%. Thresholds are calibrated on the
validation split, never on the training split. Models packaged before ``gradients`` and
``neighbours`` (no ``combination`` key) are scored as they were calibrated: the smallest
p-value of the scores they store, ``-log10``.

For a batch, ``mmd_permutation_test`` compares its latent means with a stored sample of the
training means: the unbiased squared maximum mean discrepancy with a Gaussian kernel (median
heuristic bandwidth) and a permutation p-value (Gretton et al. 2012, "A kernel two-sample
test", eq. 3 and sec. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import kornia
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from vae_cats.generate import encode_means
from vae_cats.images import to_float
from vae_cats.losses import ssim
from vae_cats.model import BaseVAE
from vae_cats.samplers import unpack_covariances

FALSE_ALARM_RATE = 0.01
SCORE_NAME = (
    "Fisher's -2 sum(ln p) of the conformal p-values of (reconstruction SSIM, pixel detail, "
    "latent NLL, orientation, colour, gradient histograms, nearest training codes)"
)
# Models packaged before Fisher's combination stored a threshold on -log10(min p).
LEGACY_SCORE_NAME = (
    "-log10 of the smallest conformal p-value of (reconstruction SSIM, pixel detail, "
    "latent NLL, orientation, colour)"
)
# A pixel counts as green (blue) when that channel exceeds both others by this much.
COLOUR_MARGIN = 0.06
# Gradient histograms: cells per side and unsigned orientation bins (Dalal & Triggs 2005 use 9
# bins; 8 split 0-180 degrees into 22.5-degree steps).
GRADIENT_CELLS = 4
GRADIENT_BINS = 8
# The k-th nearest stored training mean (of MMD_REFERENCE) whose distance is the score.
NEIGHBOURS = 5
# 1,500 training faces x 4 turns: the probe's fit takes about 20 s on 2 cores.
ORIENTATION_IMAGES = 1500
# Stored training means for the batch test: 300 x latent_dim float16 (150 KB at 256).
MMD_REFERENCE = 300
MMD_PERMUTATIONS = 500
BATCH = 256


def reconstruction_scores(
    net: BaseVAE, images: Tensor, batch_size: int = BATCH
) -> tuple[Tensor, Tensor]:
    """Posterior means ``mu`` (N, latent_dim) and per-image reconstruction SSIM (N,) of uint8
    images (N, 3, H, W), the reconstruction being ``decode(mu)``."""
    mus, ssims = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size])
            mu = net.encode(x)[0]
            mus.append(mu)
            ssims.append(ssim(net.decode(mu), x))
    return torch.cat(mus), torch.cat(ssims)


def pixel_detail(x: Tensor) -> Tensor:
    """Total variation per pixel of float images x (N, 3, H, W) in [0, 1]: the mean absolute
    difference between horizontally and vertically neighbouring values; shape (N,), in
    [0, 1]."""
    across = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return (across + down) / 2


def colour_statistics(x: Tensor) -> Tensor:
    """Ten colour statistics per float image x (N, 3, H, W) in [0, 1], shape (N, 10): mean and
    standard deviation of the opponent channels ``R - G`` and ``(R + G) / 2 - B``, of the
    saturation ``max - min`` over channels and of the brightness (channel mean), and the
    shares of green and of blue pixels (that channel above both others by
    ``COLOUR_MARGIN``)."""
    red, green, blue = x[:, 0], x[:, 1], x[:, 2]
    channels = [
        red - green,
        (red + green) / 2 - blue,
        x.amax(dim=1) - x.amin(dim=1),
        x.mean(dim=1),
    ]
    stats = [torch.stack([c.mean(dim=(1, 2)), c.std(dim=(1, 2))], dim=1) for c in channels]
    greenish = (green > torch.maximum(red, blue) + COLOUR_MARGIN).float().mean(dim=(1, 2))
    blueish = (blue > torch.maximum(red, green) + COLOUR_MARGIN).float().mean(dim=(1, 2))
    return torch.cat([*stats, greenish[:, None], blueish[:, None]], dim=1)


def fit_mahalanobis(features: Tensor) -> dict[str, Tensor]:
    """Mean (D,) and precision (D, D) of feature rows (N, D), N >= 2, the covariance shrunk by
    Ledoit-Wolf (scikit-learn; Ledoit & Wolf 2004), as float32 ``{"mean", "precision"}``."""
    fitted = LedoitWolf().fit(features.double().numpy())
    return {
        "mean": torch.from_numpy(fitted.location_).float(),
        "precision": torch.from_numpy(fitted.precision_).float(),
    }


def mahalanobis(model: dict[str, Tensor], features: Tensor) -> Tensor:
    """Squared Mahalanobis distance (>= 0, float64) of feature rows (N, D) from a
    ``fit_mahalanobis`` model; shape (N,)."""
    centred = features.double() - model["mean"].double()
    return ((centred @ model["precision"].double()) * centred).sum(dim=1)


def fit_colour_model(images: Tensor) -> dict[str, Tensor]:
    """``fit_mahalanobis`` of the ``colour_statistics`` of uint8 faces (N, 3, H, W): mean (10,)
    and precision (10, 10)."""
    return fit_mahalanobis(colour_statistics(to_float(images)))


def colour_score(model: dict[str, Tensor], x: Tensor) -> Tensor:
    """Squared Mahalanobis distance (>= 0) of float images x (N, 3, H, W) in [0, 1] from the
    fitted colour model; shape (N,)."""
    return mahalanobis(model, colour_statistics(x))


def gradient_histograms(
    x: Tensor, cells: int = GRADIENT_CELLS, bins: int = GRADIENT_BINS
) -> Tensor:
    """HOG-like edge layout of float images x (N, 3, H, W) in [0, 1], H and W divisible by
    ``cells``: shape (N, bins * cells * cells), bin-major (bin, cell row, cell column),
    non-negative, each row summing to 1 (0 for a flat image).

    The grey image's Sobel gradient (Kornia's ``spatial_gradient``) votes its magnitude into
    one of ``bins`` unsigned orientations (0 to 180 degrees) in its cell of a ``cells`` x
    ``cells`` grid; the histograms are normalised by the image's total gradient magnitude.
    Dalal & Triggs (2005), "Histograms of oriented gradients for human detection", without
    their overlapping block normalisation or vote interpolation.
    """
    grad = kornia.filters.spatial_gradient(kornia.color.rgb_to_grayscale(x))[:, 0]
    gx, gy = grad[:, 0], grad[:, 1]
    magnitude = (gx.square() + gy.square()).sqrt()
    angle = torch.atan2(gy, gx) % math.pi
    index = (angle / math.pi * bins).long().clamp(max=bins - 1)
    votes = F.one_hot(index, bins).permute(0, 3, 1, 2).float() * magnitude[:, None]
    histograms = F.adaptive_avg_pool2d(votes, cells).flatten(1)
    return histograms / (histograms.sum(dim=1, keepdim=True) + 1e-6)


def fit_gradient_model(images: Tensor) -> dict[str, Tensor]:
    """``fit_mahalanobis`` of the ``gradient_histograms`` of uint8 faces (N, 3, H, W): mean
    (128,) and precision (128, 128) with the default grid."""
    return fit_mahalanobis(gradient_histograms(to_float(images)))


def gradient_score(model: dict[str, Tensor], x: Tensor) -> Tensor:
    """Squared Mahalanobis distance (>= 0) of the gradient histograms of float images x
    (N, 3, H, W) in [0, 1] from the fitted model; shape (N,)."""
    return mahalanobis(model, gradient_histograms(x))


def neighbour_distance(reference_mu: Tensor, mu: Tensor, k: int = NEIGHBOURS) -> Tensor:
    """Cosine distance (in [0, 2]) of each latent code mu (N, latent_dim) to its k-th nearest
    row of reference_mu (M, latent_dim), M >= k; shape (N,). Sun et al. (2022), "Out-of-
    distribution detection with deep nearest neighbors" (normalised features, k-th distance).

    Raises:
        ValueError: If the reference has fewer than k rows.
    """
    if len(reference_mu) < k:
        raise ValueError(f"the {k}th neighbour needs at least {k} reference codes")
    cosine = F.normalize(mu.double(), dim=1) @ F.normalize(reference_mu.double(), dim=1).T
    return 1 - cosine.topk(k, dim=1).values[:, -1]


def psnr(recon: Tensor, x: Tensor) -> Tensor:
    """Per-image PSNR in dB of float images in [0, 1], (B, 3, H, W) -> (B,):
    ``10 log10(1 / MSE)``, the MSE floored at 1e-10 (100 dB for identical images)."""
    mse = (recon - x).pow(2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1 / mse)


def test_metrics(net: BaseVAE, images: Tensor, batch_size: int = BATCH) -> dict[str, float]:
    """Mean reconstruction SSIM and PSNR (dB) of ``decode(mu)`` over uint8 images
    (N, 3, H, W), N >= 1, as ``{"ssim", "psnr", "images"}``: the figures of ``GET /model``."""
    ssims, psnrs = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size])
            recon = net.decode(net.encode(x)[0])
            ssims.append(ssim(recon, x))
            psnrs.append(psnr(recon, x))
    return {
        "ssim": float(torch.cat(ssims).mean()),
        "psnr": float(torch.cat(psnrs).mean()),
        "images": len(images),
    }


def latent_mixture(gmm_state: dict[str, Tensor]) -> torch.distributions.MixtureSameFamily:
    """The Gaussian mixture of a ``GaussianMixtureSampler.state_dict()`` as a torch
    distribution over latent codes (float64; the Cholesky factors are computed here, once)."""
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=gmm_state["weights"].double()),
        torch.distributions.MultivariateNormal(
            gmm_state["means"].double(),
            covariance_matrix=unpack_covariances(gmm_state["covariances"]),
        ),
    )


def fit_orientation_probe(net: BaseVAE, images: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """Logistic regression (scikit-learn, L2, C=1) from ``mu`` to the turn (0, 90, 180, 270
    degrees) of uint8 faces (N, 3, H, W) given upright; returns ``coef`` (4, latent_dim) and
    ``intercept`` (4,) as float32 tensors (class 0: upright)."""
    turned = [encode_means(net, torch.rot90(images, k, dims=(2, 3))) for k in range(4)]
    labels = torch.arange(4).repeat_interleave(len(images))
    probe = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    probe.fit(torch.cat(turned).double().numpy(), labels.numpy())
    return {
        "coef": torch.from_numpy(probe.coef_).float(),
        "intercept": torch.from_numpy(probe.intercept_).float(),
    }


def orientation_score(probe: dict[str, Tensor], mu: Tensor) -> Tensor:
    """``-log P(upright | mu)`` (nats, >= 0) of latent codes mu (N, latent_dim); shape (N,)."""
    logits = mu.float() @ probe["coef"].T + probe["intercept"]
    return -torch.log_softmax(logits.double(), dim=1)[:, 0]


def median_bandwidth(x: Tensor) -> float:
    """Median pairwise Euclidean distance of the rows of x (N, D): the usual Gaussian kernel
    width of the MMD test (Gretton et al. 2012, sec. 8)."""
    distances = torch.pdist(x.double())
    return float(distances.median())


def mmd_permutation_test(
    x: Tensor, y: Tensor, bandwidth: float, permutations: int = MMD_PERMUTATIONS, seed: int = 0
) -> tuple[float, float]:
    """Two-sample test of rows x (m, D) against y (n, D), m, n >= 2.

    ``k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))``; the statistic is the unbiased MMD^2
    (Gretton et al. 2012, eq. 3); its p-value is ``(1 + #{permuted >= observed}) /
    (1 + permutations)`` over random relabellings of the pooled rows.

    Returns:
        (MMD^2, p-value in (0, 1]).

    Raises:
        ValueError: If a sample has fewer than 2 rows or the widths differ.
    """
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"the MMD test needs at least 2 rows per sample, got {len(x)}, {len(y)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples differ in width: {x.shape[1]} vs {y.shape[1]}")
    pooled = torch.cat([x, y]).double()
    kernel = torch.exp(-torch.cdist(pooled, pooled).pow(2) / (2 * bandwidth**2))
    m, n = len(x), len(y)
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.arange(len(pooled))]
    orders += [torch.randperm(len(pooled), generator=generator) for _ in range(permutations)]
    # Row r of `member` marks the rows labelled x by relabelling r. Every relabelling's
    # statistic then comes from two matrix products instead of a re-indexed copy of the
    # (m + n)^2 kernel each: s_xx = a'Ka, s_xy = a'K1 - s_xx, s_yy = 1'K1 - 2 a'K1 + s_xx.
    member = torch.zeros(len(orders), len(pooled), dtype=torch.float64)
    member.scatter_(1, torch.stack(orders)[:, :m], 1.0)
    row_sums = kernel.sum(dim=1)
    diagonal = kernel.diagonal()
    s_xx = ((member @ kernel) * member).sum(dim=1)
    s_x1 = member @ row_sums
    s_xy = s_x1 - s_xx
    s_yy = row_sums.sum() - 2 * s_x1 + s_xx
    trace_x = member @ diagonal
    trace_y = diagonal.sum() - trace_x
    stats = (
        (s_xx - trace_x) / (m * (m - 1)) + (s_yy - trace_y) / (n * (n - 1)) - 2 * s_xy / (m * n)
    )
    p_value = (1 + int((stats[1:] >= stats[0]).sum())) / (1 + permutations)
    return float(stats[0]), p_value


def reference_statistics(
    net: BaseVAE,
    train_images: Tensor,
    val_images: Tensor,
    gmm_state: dict[str, Tensor],
    false_alarm_rate: float = FALSE_ALARM_RATE,
    seed: int = 0,
) -> dict[str, Any]:
    """What ``DriftDetector`` needs, as tensors and numbers for a weights-only checkpoint.

    Args:
        net: The model.
        train_images: uint8 training faces (N, 3, H, W): the orientation probe and the batch
            test's reference sample come from them.
        val_images: uint8 validation faces (M, 3, H, W), M >= 20: the thresholds are set on
            them.
        gmm_state: The model's mixture (``GaussianMixtureSampler.state_dict()``).
        false_alarm_rate: Share of validation faces flagged, in (0, 1).
        seed: Seed of the subsets drawn.

    Raises:
        ValueError: If there are too few images or the rate is out of range.
    """
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must lie in (0, 1), got {false_alarm_rate}")
    if len(val_images) < 20 or len(train_images) < 20:
        raise ValueError(
            f"drift statistics need at least 20 training and 20 validation images, "
            f"got {len(train_images)} and {len(val_images)}"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_images), generator=generator)
    probe = fit_orientation_probe(net, train_images[order[:ORIENTATION_IMAGES]], seed)
    colour = fit_colour_model(train_images)
    gradients = fit_gradient_model(train_images)
    reference_mu = encode_means(net, train_images[order[:MMD_REFERENCE]]).detach()
    stored_mu = reference_mu.half()
    mu, val_ssim = reconstruction_scores(net, val_images)
    x = to_float(val_images)
    stats: dict[str, Any] = {
        "false_alarm_rate": false_alarm_rate,
        "validation_images": len(val_images),
        "combination": "fisher",
        "val_ssim": val_ssim.float().sort().values,
        "val_detail": pixel_detail(x).float().sort().values,
        "val_nll": (-latent_mixture(gmm_state).log_prob(mu.double())).float().sort().values,
        "val_orientation": orientation_score(probe, mu).float().sort().values,
        "orientation_probe": probe,
        "colour_model": colour,
        "val_colour": colour_score(colour, x).float().sort().values,
        "gradient_model": gradients,
        "val_gradients": gradient_score(gradients, x).float().sort().values,
        "val_neighbours": neighbour_distance(stored_mu, mu).float().sort().values,
        "reference_mu": stored_mu,
        "mmd_bandwidth": median_bandwidth(reference_mu),
        "threshold": 0.0,
    }
    detector = DriftDetector(stats, gmm_state)
    val_scores = detector.scores(x, mu, val_ssim, leave_one_out=True).score
    stats["threshold"] = float(torch.quantile(val_scores, 1 - false_alarm_rate))
    return stats


def _p_high(sorted_reference: Tensor, values: Tensor, leave_one_out: bool = False) -> Tensor:
    """Conformal p-value of values being this large: (1 + #{ref >= v}) / (n + 1).

    With ``leave_one_out`` the values are the reference's own members, each left out of its
    reference: #{ref >= v} / n (itself among those counted). Compared in float32, the stored
    precision: a calibration value compared in float64 with its own rounded copy could miss
    itself."""
    n = len(sorted_reference)
    below = torch.searchsorted(sorted_reference.float(), values.float(), side="left")
    if leave_one_out:
        return (n - below) / n
    return (1 + n - below) / (n + 1)


def _p_low(sorted_reference: Tensor, values: Tensor, leave_one_out: bool = False) -> Tensor:
    """Conformal p-value of values being this small: (1 + #{ref <= v}) / (n + 1); with
    ``leave_one_out`` (values from the reference itself) #{ref <= v} / n."""
    n = len(sorted_reference)
    at_most = torch.searchsorted(sorted_reference.float(), values.float(), side="right")
    if leave_one_out:
        return at_most / n
    return (1 + at_most) / (n + 1)


@dataclass(frozen=True)
class DriftScores:
    """Per-image drift results for N images; every tensor has shape (N,)."""

    score: Tensor
    is_outlier: Tensor
    ssim: Tensor
    p_values: dict[str, Tensor]

    def verdict(self, i: int) -> str:
        """One sentence on image i: what makes it unlike the training faces, if anything."""
        if not bool(self.is_outlier[i]):
            return "Looks like the training faces."
        worst = min(self.p_values, key=lambda name: float(self.p_values[name][i]))
        value = float(self.ssim[i])
        reasons = {
            "ssim_low": f"the model cannot draw it (reconstruction SSIM {value:.2f})",
            "ssim_high": f"it is simpler than any face (reconstruction SSIM {value:.2f})",
            "detail_low": "it is flatter than any face (a plain colour or a smooth gradient?)",
            "detail_high": "it is busier than any face (noise or fine texture?)",
            "nll": "its latent code is unlikely under the training faces' mixture",
            "orientation": "it looks turned on its side or upside down",
            "colour": "its colours are unlike any cat's (sky, leaves, flowers?)",
            "gradients": "its edges are not where a face has them",
            "neighbours": "its latent code is far from every stored training face's",
        }
        return f"Unlike the training faces: {reasons[worst]}."


class DriftDetector:
    """Applies the statistics of ``reference_statistics`` to new images.

    Args:
        stats: The model's ``drift`` entry.
        gmm_state: The model's mixture.
    """

    def __init__(self, stats: dict[str, Any], gmm_state: dict[str, Tensor]) -> None:
        self.stats = stats
        self.mixture = latent_mixture(gmm_state)
        self.threshold = float(stats["threshold"])
        self.false_alarm_rate = float(stats["false_alarm_rate"])
        self.fisher = stats.get("combination") == "fisher"
        self.score_name = SCORE_NAME if self.fisher else LEGACY_SCORE_NAME

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> DriftDetector | None:
        """The detector of a packaged model; None when it stores no drift statistics (a
        training checkpoint or a model packaged before them)."""
        if "drift" not in checkpoint or "gmm_sampler" not in checkpoint:
            return None
        return cls(checkpoint["drift"], checkpoint["gmm_sampler"])

    def scores(
        self, x: Tensor, mu: Tensor, recon_ssim: Tensor, leave_one_out: bool = False
    ) -> DriftScores:
        """Drift scores of N float images x (N, 3, H, W) in [0, 1] from their latent means mu
        (N, latent_dim) and their reconstruction SSIM (N,).

        ``leave_one_out`` is for the validation faces the references were built from (when
        ``reference_statistics`` sets the threshold): each is left out of its own reference.
        """
        stats = self.stats
        detail = pixel_detail(x)

        def high(name: str, values: Tensor) -> Tensor:
            return _p_high(stats[name], values, leave_one_out)

        def low(name: str, values: Tensor) -> Tensor:
            return _p_low(stats[name], values, leave_one_out)

        p_values = {
            "ssim_low": low("val_ssim", recon_ssim),
            "ssim_high": high("val_ssim", recon_ssim),
            "detail_low": low("val_detail", detail),
            "detail_high": high("val_detail", detail),
            "nll": high("val_nll", -self.mixture.log_prob(mu.double())),
            "orientation": high(
                "val_orientation", orientation_score(stats["orientation_probe"], mu)
            ),
        }
        if "colour_model" in stats:
            p_values["colour"] = high("val_colour", colour_score(stats["colour_model"], x))
        if "gradient_model" in stats:
            p_values["gradients"] = high(
                "val_gradients", gradient_score(stats["gradient_model"], x)
            )
        if "val_neighbours" in stats:
            p_values["neighbours"] = high(
                "val_neighbours", neighbour_distance(stats["reference_mu"], mu)
            )
        # Two tails form one two-sided test: double each tail's p (Bonferroni).
        for tail in ("ssim_low", "ssim_high", "detail_low", "detail_high"):
            p_values[tail] = (2 * p_values[tail]).clamp(max=1.0)
        stacked = torch.stack(list(p_values.values()))
        if self.fisher:
            # Fisher (1932): -2 sum(ln p). The p-values are dependent, so the statistic is not
            # chi-squared here; its threshold is the validation faces' quantile instead.
            score = -2 * stacked.double().log().sum(dim=0)
        else:
            # In float32, as the threshold was set: the p-values are discrete, and a face at
            # the calibration quantile scored in float64 would land just above it.
            score = -torch.log10(stacked.min(dim=0).values)
        return DriftScores(score, score > self.threshold, recon_ssim, p_values)

    def batch_test(self, mu: Tensor, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
        """MMD permutation test of a batch's latent means mu (N, latent_dim), N >= 2, against
        the stored training sample: ``{"n", "mmd", "p_value", "is_drift", "alpha"}``.

        Raises:
            ValueError: If N < 2.
        """
        reference = self.stats["reference_mu"].float()
        mmd2, p_value = mmd_permutation_test(
            mu.float(), reference, float(self.stats["mmd_bandwidth"]), seed=seed
        )
        return {
            "n": len(mu),
            "mmd": math.sqrt(max(mmd2, 0.0)),
            "p_value": p_value,
            "is_drift": p_value < alpha,
            "alpha": alpha,
        }
