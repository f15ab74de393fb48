"""Latent samplers: where the codes that the decoder turns into new cats come from.

A sampler returns latent codes only; the model decodes them. ``NormalSampler`` draws from
the VAE prior N(0, I). The learned samplers (``LEARNED_SAMPLERS``) are fitted on the
posterior means of training images and follow the aggregate posterior where the prior leaves
holes, so low-KL models still give clean samples (the "ex-post density estimation" of Ghosh
et al. 2020, "From Variational to Deterministic Autoencoders"):

- ``gmm``, ``GaussianMixtureSampler``: a full-covariance Gaussian mixture in all latent
  dimensions;
- ``pca_gmm``, ``PCAMixtureSampler``: a mixture in the leading principal subspace of the
  means (a quarter of the parameters a component), the rest of their variance put back as
  isotropic noise;
- ``flow``, ``FlowSampler``: a masked autoregressive flow (zuko's MAF) in that subspace.

Every learned sampler has the same interface: ``fit(mu)``, ``sample(n, seed)``,
``state_dict()`` (tensors only, for weights-only checkpoints) and ``from_state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import zuko
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
        # 0.5-1.7 s of a 16-code draw on 2 cores; now about 3 ms). A component drawn 0 times
        # takes no random numbers, so skipping it leaves the stream as it is (a served n=1 draw:
        # 0.34 ms, not 0.48).
        rng = np.random.RandomState(seed)
        counts = rng.multinomial(num_samples, self.mixture.weights_)
        parts = []
        for mean, factor, count in zip(self.mixture.means_, self._factors(), counts, strict=True):
            if count:
                part = np.dot(rng.standard_normal((int(count), len(mean))), factor)
                part += mean
                parts.append(part)
        codes = np.concatenate(parts)
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


@dataclass(frozen=True)
class LatentPCA:
    """Principal components of a set of latent means (typically the training images' ``mu``).

    Attributes:
        mean: Their average, shape (latent_dim,): the code of a typical face.
        components: Orthonormal directions, shape (k, latent_dim), by decreasing variance; the
            sign of each is fixed (largest-magnitude entry positive) so refits agree.
        std: Standard deviation of the means along each component, shape (k,), >= 0.
    """

    mean: Tensor
    components: Tensor
    std: Tensor

    def state_dict(self) -> dict[str, Tensor]:
        """Plain float32 tensors, storable in a weights-only checkpoint."""
        return {"mean": self.mean, "components": self.components, "std": self.std}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LatentPCA:
        """Rebuild from ``state_dict()``."""
        return cls(state["mean"].float(), state["components"].float(), state["std"].float())

    def leading(self, count: int) -> LatentPCA:
        """The first ``count`` components (all when there are fewer)."""
        return LatentPCA(self.mean, self.components[:count], self.std[:count])


def latent_pca(mu: Tensor) -> LatentPCA:
    """Principal component analysis of latent means mu (N, latent_dim), N >= 2, by the SVD
    of the centred means (``torch.linalg.svd``): ``mu - mean = U S V^T``, components = rows
    of ``V^T``, std = S / sqrt(N - 1) (Jolliffe, Principal Component Analysis, 2002, ch. 1).

    Returns:
        min(N, latent_dim) components.

    Raises:
        ValueError: If N < 2.
    """
    if len(mu) < 2:
        raise ValueError(f"principal components need at least 2 latent means, got {len(mu)}")
    mu = mu.double()
    mean = mu.mean(dim=0)
    _, singular, vh = torch.linalg.svd(mu - mean, full_matrices=False)
    # SVD leaves each direction's sign arbitrary; pin it so the same means give the same picture.
    peak = vh.gather(1, vh.abs().argmax(dim=1, keepdim=True))
    vh = vh * peak.sign()
    std = singular / (len(mu) - 1) ** 0.5
    return LatentPCA(mean.float(), vh.float(), std.float())


@dataclass(frozen=True)
class PrincipalSubspace:
    """The leading principal subspace of latent means, whitened, with the variance outside it
    kept as isotropic noise, as probabilistic PCA does (Tipping & Bishop 1999, "Probabilistic
    Principal Component Analysis", eq. 8: sigma^2 = mean of the discarded eigenvalues).

    A code is ``mean + (y * scale) @ components + r``: y (d,) in whitened coordinates, r ~
    N(0, residual_std^2 I) projected onto the orthogonal complement of the subspace.

    Attributes:
        mean: (D,) float64, the means' average.
        components: (d, D) float64 orthonormal rows, by decreasing variance.
        scale: (d,) float64 > 0, the means' standard deviation along each component.
        residual_std: Standard deviation of the noise outside the subspace, >= 0.
    """

    mean: Tensor
    components: Tensor
    scale: Tensor
    residual_std: float

    @classmethod
    def fit(cls, mu: Tensor, dim: int) -> PrincipalSubspace:
        """The leading components of latent means mu (N, D) (``latent_pca``): ``dim`` of
        them, or min(N - 1, D) when that is fewer (the rest of N centred means carry no
        variance).

        Raises:
            ValueError: If dim < 1 or N < 2.
        """
        if dim < 1 or len(mu) < 2:
            raise ValueError(
                f"a principal subspace needs at least 1 dimension and 2 latent means, got "
                f"{dim} dimensions and means of shape {tuple(mu.shape)}"
            )
        dim = min(dim, len(mu) - 1, mu.shape[1])
        pca = latent_pca(mu)
        variances = pca.std.double() ** 2
        # The discarded directions' mean variance, spread over all D - dim of them (N may be
        # smaller than D: the missing eigenvalues are zero).
        left = mu.shape[1] - dim
        residual = math.sqrt(float(variances[dim:].sum()) / left) if left else 0.0
        scale = pca.std[:dim].clamp_min(1e-4)  # float16 keeps it above zero
        # Held at the float16 precision they are stored in (the package's size; the
        # network's weights are float16 too), so a sampler rebuilt from the file draws exactly
        # the codes the fitted one draws. Rows stay orthonormal to about 1e-3.
        mean, components = half_precision(pca.mean), half_precision(pca.components[:dim])
        return cls(mean, components, half_precision(scale), residual)

    def project(self, mu: Tensor) -> Tensor:
        """Whitened coordinates (N, d) float64 of codes mu (N, D)."""
        return ((mu.double() - self.mean) @ self.components.T) / self.scale

    def lift(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """Codes (N, D) float32 of whitened coordinates y (N, d), with residual noise drawn
        from ``generator``."""
        noise = torch.randn(len(y), len(self.mean), generator=generator, dtype=torch.float64)
        # Only the part of the noise outside the subspace: y already holds the rest.
        noise -= (noise @ self.components.T) @ self.components
        codes = self.mean + (y.double() * self.scale) @ self.components
        return (codes + self.residual_std * noise).float()

    def state_dict(self) -> dict[str, Tensor]:
        """``mean``, ``components`` and ``scale`` as float16 tensors (the precision ``fit``
        holds them at) and ``residual_std`` (float64)."""
        return {
            "mean": self.mean.half(),
            "components": self.components.half(),
            "scale": self.scale.half(),
            "residual_std": torch.tensor(self.residual_std, dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> PrincipalSubspace:
        """Rebuild from ``state_dict()``."""
        return cls(
            state["mean"].double(),
            state["components"].double(),
            state["scale"].double(),
            float(state["residual_std"]),
        )


def half_precision(values: Tensor) -> Tensor:
    """``values`` rounded to float16, held as float64."""
    return values.half().double()


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with ``prefix.`` before every key."""
    return {f"{prefix}.{key}": value for key, value in state.items()}


def unprefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``state`` under ``prefix.``, without it."""
    return {
        k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")
    }


class PCAMixtureSampler:
    """Codes from a Gaussian mixture fitted in the leading principal subspace of the means.

    A full-covariance mixture in all ``latent_dim`` dimensions has ``latent_dim^2 / 2``
    parameters a component (131,000 for 512), too many for more than a few components on a
    few thousand training codes. Here the means are projected onto their ``pca_dim`` leading
    principal directions (``PrincipalSubspace``), a ``GaussianMixtureSampler`` with
    ``n_components`` is fitted there, and the variance outside is put back as noise.

    Args:
        n_components: Mixture components, >= 1.
        pca_dim: Dimensions of the principal subspace, >= 1 (fewer when the means have
            fewer, ``PrincipalSubspace.fit``).
        seed: Seed of the EM initialisation.

    Raises:
        ValueError: If n_components < 1 or pca_dim < 1.
    """

    # Defaults: of 64 or 128 dimensions with 10 to 30 components, 128 with 10 gave the lowest
    # two-sample accuracy against reconstructions (0.56 vs 0.58-0.64 on 836 test faces a side).
    def __init__(self, n_components: int = 10, pca_dim: int = 128, seed: int = 0) -> None:
        if pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1, got {pca_dim}")
        self.pca_dim = pca_dim
        self.mixture = GaussianMixtureSampler(n_components, seed=seed)
        self.subspace: PrincipalSubspace | None = None

    def fit(self, mu: Tensor) -> PCAMixtureSampler:
        """Fit to posterior means ``mu``, shape (N, latent_dim).

        Raises:
            ValueError: If N < 2 or N < n_components.
        """
        subspace = PrincipalSubspace.fit(mu, self.pca_dim)
        self.mixture.fit(subspace.project(mu))
        self.subspace = subspace
        return self

    def sample(self, num_samples: int, seed: int = 0) -> Tensor:
        """Return (num_samples, latent_dim) float32 codes, reproducible from ``seed``.

        Raises:
            RuntimeError: If called before ``fit`` or ``from_state_dict``.
            ValueError: If num_samples < 1.
        """
        if self.subspace is None:
            raise RuntimeError("PCAMixtureSampler.sample called before fit")
        y = self.mixture.sample(num_samples, seed=seed)
        return self.subspace.lift(y, torch.Generator().manual_seed(seed))

    def state_dict(self) -> dict[str, Tensor]:
        """Fitted parameters as float64 tensors: the subspace's under ``subspace.<key>``
        (``PrincipalSubspace.state_dict``), the mixture's under ``mixture.<key>``
        (``GaussianMixtureSampler.state_dict``).

        Raises:
            RuntimeError: If called before ``fit``.
        """
        if self.subspace is None:
            raise RuntimeError("PCAMixtureSampler.state_dict called before fit")
        return prefixed("subspace", self.subspace.state_dict()) | prefixed(
            "mixture", self.mixture.state_dict()
        )

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> PCAMixtureSampler:
        """Rebuild a fitted sampler from ``state_dict()`` output."""
        subspace = PrincipalSubspace.from_state_dict(unprefixed("subspace", state))
        mixture = GaussianMixtureSampler.from_state_dict(unprefixed("mixture", state))
        sampler = cls(n_components=len(mixture.mixture.weights_), pca_dim=len(subspace.scale))
        sampler.mixture, sampler.subspace = mixture, subspace
        return sampler


class FlowSampler:
    """Codes from a normalising flow fitted in the leading principal subspace of the means.

    A masked autoregressive flow (Papamakarios et al. 2017, "Masked Autoregressive Flow for
    Density Estimation"; ``zuko.flows.MAF``) maps N(0, I) to the whitened subspace
    coordinates (``PrincipalSubspace``); the variance outside is put back as noise. With
    ``passes=2`` each transform is a coupling layer, so sampling is two network passes per
    transform instead of ``pca_dim``. Fitted by maximum likelihood with Adam on 90 % of the
    means; the epoch with the lowest negative log-likelihood on the other 10 % is kept.

    Args:
        pca_dim: Dimensions of the principal subspace, >= 1 (fewer when the means have
            fewer, ``PrincipalSubspace.fit``).
        transforms: Flow transforms, >= 1.
        hidden: Width of the two hidden layers of each transform's network, >= 1.
        epochs: Most training epochs, >= 1.
        seed: Seed of the initialisation, the split and the batches.

    Raises:
        ValueError: If an argument is out of range.
    """

    VAL_FRACTION = 0.1
    BATCH = 256
    PATIENCE = 20

    # Defaults: a 256-dimensional subspace (81 % of the means' variance in this recipe) gave
    # lower two-sample accuracies than 128 or all 512 (0.52 against 0.58-0.60 on 836 test faces
    # a side); 64 hidden units keep the flow at 0.9 MB of the package's 15 MB.
    def __init__(
        self,
        pca_dim: int = 256,
        transforms: int = 4,
        hidden: int = 64,
        epochs: int = 300,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("pca_dim", pca_dim),
            ("transforms", transforms),
            ("hidden", hidden),
            ("epochs", epochs),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.pca_dim, self.transforms, self.hidden = pca_dim, transforms, hidden
        self.epochs, self.seed = epochs, seed
        self.flow: zuko.flows.MAF | None = None
        self.subspace: PrincipalSubspace | None = None

    def _build(self, features: int) -> zuko.flows.MAF:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)  # the initial weights, without touching global RNG
            return zuko.flows.MAF(
                features,
                transforms=self.transforms,
                passes=2,
                hidden_features=(self.hidden, self.hidden),
            )

    def fit(self, mu: Tensor) -> FlowSampler:
        """Fit to posterior means ``mu``, shape (N, latent_dim), N >= 20.

        Raises:
            ValueError: If N < 20.
        """
        if len(mu) < 20:
            raise ValueError(f"a flow needs at least 20 latent means, got {len(mu)}")
        subspace = PrincipalSubspace.fit(mu, self.pca_dim)
        self.pca_dim = len(subspace.scale)
        self.flow = flow = self._build(self.pca_dim)
        y = subspace.project(mu).float()
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(y), generator=generator)
        held = max(1, int(len(y) * self.VAL_FRACTION))
        train, val = y[order[held:]], y[order[:held]]
        optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3, weight_decay=1e-5)
        best, best_state, since = math.inf, None, 0
        for _ in range(self.epochs):
            flow.train()
            for batch in train[torch.randperm(len(train), generator=generator)].split(self.BATCH):
                loss = -flow().log_prob(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            flow.eval()
            with torch.no_grad():
                val_nll = float(-flow().log_prob(val).mean())
            if val_nll < best:
                best, since = val_nll, 0
                best_state = {k: v.clone() for k, v in flow.state_dict().items()}
            else:
                since += 1
                if since >= self.PATIENCE:  # held-out likelihood stopped improving: overfitting
                    break
        flow.load_state_dict(best_state)
        with torch.no_grad():
            for weight in flow.parameters():  # as stored, so a reloaded flow draws the same
                weight.copy_(weight.half())
        flow.eval()
        self.subspace = subspace
        return self

    @torch.no_grad()
    def sample(self, num_samples: int, seed: int = 0) -> Tensor:
        """Return (num_samples, latent_dim) float32 codes, reproducible from ``seed``.

        Raises:
            RuntimeError: If called before ``fit`` or ``from_state_dict``.
            ValueError: If num_samples < 1.
        """
        if self.subspace is None or self.flow is None:
            raise RuntimeError("FlowSampler.sample called before fit")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        generator = torch.Generator().manual_seed(seed)
        # The flow's base is N(0, I): drawn here, from a seeded generator, then mapped through.
        base = torch.randn(num_samples, self.pca_dim, generator=generator)
        y = self.flow().transform.inv(base)
        return self.subspace.lift(y, generator)

    def state_dict(self) -> dict[str, Tensor]:
        """The subspace under ``subspace.<key>``, the flow's weights under ``flow.<key>`` as
        float16 (the precision ``fit`` leaves them at; without the autoregressive masks, which
        the constructor rebuilds) and its shape (``pca_dim``, ``transforms``, ``hidden``) as
        int64 scalars.

        Raises:
            RuntimeError: If called before ``fit``.
        """
        if self.subspace is None or self.flow is None:
            raise RuntimeError("FlowSampler.state_dict called before fit")
        state = self.flow.state_dict()
        weights = {k: v.half() for k, v in state.items() if not k.endswith(".mask")}
        shape = {
            name: torch.tensor(getattr(self, name)) for name in ("pca_dim", "transforms", "hidden")
        }
        return shape | prefixed("subspace", self.subspace.state_dict()) | prefixed("flow", weights)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> FlowSampler:
        """Rebuild a fitted sampler from ``state_dict()`` output."""
        sampler = cls(
            pca_dim=int(state["pca_dim"]),
            transforms=int(state["transforms"]),
            hidden=int(state["hidden"]),
        )
        sampler.flow = sampler._build(sampler.pca_dim)
        weights = unprefixed("flow", state)
        missing, unexpected = sampler.flow.load_state_dict(weights, strict=False)
        if unexpected or any(not key.endswith(".mask") for key in missing):
            raise ValueError(f"flow state does not fit its shape: {missing + unexpected}")
        sampler.flow.eval()
        sampler.subspace = PrincipalSubspace.from_state_dict(unprefixed("subspace", state))
        return sampler


class LatentSampler(Protocol):
    """What predict, the packager and the API need of a learned sampler."""

    def fit(self, mu: Tensor) -> LatentSampler: ...

    def sample(self, num_samples: int, seed: int = 0) -> Tensor: ...

    def state_dict(self) -> dict[str, Tensor]: ...


LEARNED_SAMPLERS: dict[str, type] = {
    "gmm": GaussianMixtureSampler,
    "pca_gmm": PCAMixtureSampler,
    "flow": FlowSampler,
}


def checkpoint_key(name: str) -> str:
    """The checkpoint entry holding learned sampler ``name``'s state: ``<name>_sampler``."""
    return f"{name}_sampler"


def stored_samplers(checkpoint: dict) -> list[str]:
    """Names of the learned samplers ``checkpoint`` stores, in ``LEARNED_SAMPLERS`` order."""
    return [name for name in LEARNED_SAMPLERS if checkpoint_key(name) in checkpoint]


def sampler_from_checkpoint(name: str, checkpoint: dict) -> LatentSampler:
    """The fitted learned sampler ``name`` stored in ``checkpoint``.

    Raises:
        KeyError: If the checkpoint stores no such sampler.
    """
    kind: Any = LEARNED_SAMPLERS[name]
    return kind.from_state_dict(checkpoint[checkpoint_key(name)])
