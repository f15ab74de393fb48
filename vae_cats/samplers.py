"""Latent samplers: where the codes that the decoder turns into new cats come from.

A sampler returns latent codes only; the model decodes them. ``NormalSampler`` draws from
the VAE prior N(0, I). ``GaussianMixtureSampler`` draws from a Gaussian mixture fitted to
the posterior means of training images (the "ex-post density estimation" of Ghosh et al.
2020, "From Variational to Deterministic Autoencoders"), which follows the aggregate
posterior where the prior leaves holes, so low-KL models still give clean samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import Tensor


class NormalSampler:
    """Codes z ~ N(0, I) of size ``latent_dim``."""

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim

    def sample(self, num_samples: int, seed: int = 0) -> Tensor:
        """Return (num_samples, latent_dim) float32 codes, reproducible from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(num_samples, self.latent_dim, generator=generator)


class GaussianMixtureSampler:
    """Codes from a full-covariance Gaussian mixture fitted with scikit-learn.

    Args:
        n_components: Mixture components, >= 1.
        seed: Seed of the EM initialisation.

    Raises:
        ValueError: If n_components < 1.
    """

    def __init__(self, n_components: int = 10, seed: int = 0) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.mixture = GaussianMixture(n_components, covariance_type="full", random_state=seed)
        self.fitted = False
        self._factor_cache: list[np.ndarray] | None = None

    def fit(self, mu: Tensor) -> GaussianMixtureSampler:
        """Fit the mixture to posterior means ``mu``, shape (N, latent_dim).

        Raises:
            ValueError: If N < n_components.
        """
        components = self.mixture.n_components
        if len(mu) < components:
            raise ValueError(
                f"a {components}-component mixture needs at least {components} "
                f"latent means, got {len(mu)}"
            )
        self.mixture.fit(mu.detach().cpu().double().numpy())
        # Mirror the lower triangle: BLAS may leave the fitted covariances asymmetric in the
        # last bit, and state_dict stores one triangle, so the sampler drawn from now and the
        # one rebuilt from its state must hold the same matrices.
        self.mixture.covariances_ = unpack_covariances(
            pack_covariances(torch.from_numpy(self.mixture.covariances_))
        ).numpy()
        self._factor_cache = None
        self.fitted = True
        return self

    def sample(self, num_samples: int, seed: int = 0) -> Tensor:
        """Return (num_samples, latent_dim) float32 codes, reproducible from ``seed``.

        Raises:
            RuntimeError: If called before ``fit`` or ``load_state_dict``.
        """
        if not self.fitted:
            raise RuntimeError("GaussianMixtureSampler.sample called before fit")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        # Bit for bit what GaussianMixture.sample (full covariances) draws with
        # RandomState(seed): component counts, then per component numpy's legacy
        # multivariate_normal, z @ (sqrt(s) * V) + mean with cov = U diag(s) V. Only the SVD
        # factors are computed once instead of on every call (10 SVDs of 256 x 256 took
        # 0.5-1.7 s of a 16-code draw on 2 cores; now about 3 ms).
        rng = np.random.RandomState(seed)
        counts = rng.multinomial(num_samples, self.mixture.weights_)
        parts = []
        for mean, factor, count in zip(self.mixture.means_, self._factors(), counts, strict=True):
            part = np.dot(rng.standard_normal((int(count), len(mean))), factor)
            part += mean
            parts.append(part)
        codes = np.vstack(parts)
        # sklearn returns the codes grouped by component; shuffle so a grid mixes them.
        order = np.random.default_rng(seed).permutation(num_samples)
        return torch.from_numpy(codes[order]).float()

    def _factors(self) -> list[np.ndarray]:
        if self._factor_cache is None:
            factors = []
            for covariance in self.mixture.covariances_:
                _, singular, vh = np.linalg.svd(covariance)
                factors.append(np.sqrt(singular)[:, None] * vh)
            # Assigned whole, so a thread sampling meanwhile never sees a partial list.
            self._factor_cache = factors
        return self._factor_cache

    def state_dict(self) -> dict[str, Tensor]:
        """Fitted parameters as float64 tensors, storable in a weights-only checkpoint:
        ``weights`` (K,), ``means`` (K, D) and ``covariances`` (K, D (D + 1) / 2), each
        covariance's lower triangle (``pack_covariances``)."""
        return {
            "weights": torch.from_numpy(self.mixture.weights_),
            "means": torch.from_numpy(self.mixture.means_),
            "covariances": pack_covariances(torch.from_numpy(self.mixture.covariances_)),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> GaussianMixtureSampler:
        """Rebuild a fitted sampler from ``state_dict()`` output."""
        sampler = cls(n_components=len(state["weights"]))
        sampler.mixture.weights_ = state["weights"].double().numpy()
        sampler.mixture.means_ = state["means"].double().numpy()
        sampler.mixture.covariances_ = unpack_covariances(state["covariances"]).numpy()
        sampler.fitted = True
        return sampler


def pack_covariances(covariances: Tensor) -> Tensor:
    """Lower triangles, row by row, of symmetric (K, D, D) matrices: (K, D (D + 1) / 2).

    Half the bytes of the full matrices, exactly (no rounding, which could break their
    positive-definiteness): a 10-component mixture of 512-dimensional codes is 10.5 MB instead
    of 21 MB in float64.
    """
    rows, cols = torch.tril_indices(covariances.shape[-1], covariances.shape[-1])
    return covariances[:, rows, cols]


def unpack_covariances(stored: Tensor) -> Tensor:
    """Float64 (K, D, D) covariances from a mixture state's ``covariances``: the packed lower
    triangles of ``pack_covariances`` (K, D (D + 1) / 2), or full (K, D, D) matrices as models
    packaged before the packing stored them.

    Raises:
        ValueError: If the packed length is not a triangular number D (D + 1) / 2.
    """
    stored = stored.double()
    if stored.dim() == 3:
        return stored
    size = stored.shape[-1]
    dim = (math.isqrt(8 * size + 1) - 1) // 2
    if dim * (dim + 1) // 2 != size:
        raise ValueError(f"{size} packed covariance entries are no lower triangle D (D + 1) / 2")
    rows, cols = torch.tril_indices(dim, dim)
    full = stored.new_zeros(stored.shape[0], dim, dim)
    full[:, rows, cols] = stored
    full[:, cols, rows] = stored
    return full
