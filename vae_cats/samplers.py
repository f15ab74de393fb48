"""Latent samplers: where the codes that the decoder turns into new cats come from.

A sampler returns latent codes only; the model decodes them. ``NormalSampler`` draws from
the VAE prior N(0, I). ``GaussianMixtureSampler`` draws from a Gaussian mixture fitted to
the posterior means of training images (the "ex-post density estimation" of Ghosh et al.
2020, "From Variational to Deterministic Autoencoders"), which follows the aggregate
posterior where the prior leaves holes, so low-KL models still give clean samples.
``PCAMixtureSampler`` fits such a mixture, with more components, in the leading principal
subspace of those means, and puts the rest of their variance back as isotropic noise.
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


class PCAMixtureSampler:
    """Codes from a Gaussian mixture fitted in the top principal subspace of the means.

    A full-covariance mixture in all ``latent_dim`` dimensions has ``latent_dim^2 / 2``
    parameters a component (131,000 for 512), too many for more than a few components on a
    few thousand training codes. Here the means are projected onto their ``pca_dim`` leading
    principal directions, a ``GaussianMixtureSampler`` with ``n_components`` is fitted there,
    and the variance left outside the subspace is put back as isotropic noise, as probabilistic
    PCA does (Tipping & Bishop 1999, "Probabilistic Principal Component Analysis", eq. 8:
    sigma^2 = mean of the discarded eigenvalues). A code is ``mean + y @ components + r``,
    y drawn from the mixture, r ~ N(0, sigma^2 I) projected onto the orthogonal complement.

    Args:
        n_components: Mixture components, >= 1.
        pca_dim: Dimensions of the principal subspace, >= 1.
        seed: Seed of the EM initialisation.

    Raises:
        ValueError: If n_components < 1 or pca_dim < 1.
    """

    def __init__(self, n_components: int = 30, pca_dim: int = 64, seed: int = 0) -> None:
        if pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1, got {pca_dim}")
        self.pca_dim = pca_dim
        self.mixture = GaussianMixtureSampler(n_components, seed=seed)
        self.mean: Tensor | None = None
        self.components: Tensor | None = None
        self.residual_std = 0.0

    @property
    def fitted(self) -> bool:
        return self.mixture.fitted

    def fit(self, mu: Tensor) -> PCAMixtureSampler:
        """Fit to posterior means ``mu``, shape (N, latent_dim).

        Raises:
            ValueError: If pca_dim > min(N, latent_dim), or N < n_components.
        """
        if self.pca_dim > min(mu.shape):
            raise ValueError(
                f"pca_dim {self.pca_dim} needs at least as many latent means and latent "
                f"dimensions, got means of shape {tuple(mu.shape)}"
            )
        mu = mu.detach().cpu().double()
        mean = mu.mean(dim=0)
        _, singular, vh = torch.linalg.svd(mu - mean, full_matrices=False)
        variances = singular**2 / max(len(mu) - 1, 1)
        components = vh[: self.pca_dim]
        self.mixture.fit((mu - mean) @ components.T)
        # The discarded directions' mean variance, spread over all latent_dim - pca_dim of
        # them (N may be smaller than latent_dim: the missing eigenvalues are zero).
        left = mu.shape[1] - self.pca_dim
        self.residual_std = (
            math.sqrt(float(variances[self.pca_dim :].sum()) / left) if left else 0.0
        )
        self.mean, self.components = mean, components
        return self

    def sample(self, num_samples: int, seed: int = 0) -> Tensor:
        """Return (num_samples, latent_dim) float32 codes, reproducible from ``seed``.

        Raises:
            RuntimeError: If called before ``fit`` or ``from_state_dict``.
            ValueError: If num_samples < 1.
        """
        if self.mean is None or self.components is None:
            raise RuntimeError("PCAMixtureSampler.sample called before fit")
        y = self.mixture.sample(num_samples, seed=seed).double()
        noise = torch.randn(
            num_samples,
            len(self.mean),
            generator=torch.Generator().manual_seed(seed),
            dtype=torch.float64,
        )
        # Only the part of the noise outside the subspace: the mixture already models the rest.
        noise -= (noise @ self.components.T) @ self.components
        return (self.mean + y @ self.components + self.residual_std * noise).float()

    def state_dict(self) -> dict[str, Tensor]:
        """Fitted parameters as float64 tensors, storable in a weights-only checkpoint:
        ``mean`` (D,), ``components`` (pca_dim, D), ``residual_std`` (scalar) and the
        subspace mixture's ``GaussianMixtureSampler.state_dict`` under ``mixture.<key>``.

        Raises:
            RuntimeError: If called before ``fit``.
        """
        if self.mean is None or self.components is None:
            raise RuntimeError("PCAMixtureSampler.state_dict called before fit")
        return {
            "mean": self.mean,
            "components": self.components,
            "residual_std": torch.tensor(self.residual_std, dtype=torch.float64),
            **{f"mixture.{k}": v for k, v in self.mixture.state_dict().items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> PCAMixtureSampler:
        """Rebuild a fitted sampler from ``state_dict()`` output."""
        mixture_state = {
            k.removeprefix("mixture."): v for k, v in state.items() if k.startswith("mixture.")
        }
        sampler = cls(n_components=len(mixture_state["weights"]), pca_dim=len(state["components"]))
        sampler.mixture = GaussianMixtureSampler.from_state_dict(mixture_state)
        sampler.mean = state["mean"].double()
        sampler.components = state["components"].double()
        sampler.residual_std = float(state["residual_std"])
        return sampler
