import numpy as np
import pytest
import torch

from vae_cats.samplers import (
    LEARNED_SAMPLERS,
    FlowSampler,
    GaussianMixtureSampler,
    NormalSampler,
    PCAMixtureSampler,
    PrincipalSubspace,
    checkpoint_key,
    pack_covariances,
    sampler_from_checkpoint,
    stored_samplers,
    unpack_covariances,
)


def test_normal_sampler_shape_and_seed() -> None:
    sampler = NormalSampler(latent_dim=12)
    assert sampler.sample(5, seed=1).shape == (5, 12)
    assert torch.equal(sampler.sample(5, seed=1), sampler.sample(5, seed=1))
    assert not torch.equal(sampler.sample(5, seed=1), sampler.sample(5, seed=2))


def test_gmm_sampler_follows_the_fitted_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 5.0], [-5.0, -5.0]])
    mu = torch.cat([c + 0.1 * torch.randn(200, 2, generator=gen) for c in centres])
    sampler = GaussianMixtureSampler(n_components=2).fit(mu)
    z = sampler.sample(400, seed=3)
    distance = torch.cdist(z, centres).min(dim=1).values
    assert z.shape == (400, 2) and distance.max() < 1.0
    assert ((z[:, 0] > 0).float().mean() - 0.5).abs() < 0.1


def test_gmm_sampler_round_trips_through_a_state_dict() -> None:
    mu = torch.randn(300, 8, generator=torch.Generator().manual_seed(1))
    sampler = GaussianMixtureSampler(n_components=3).fit(mu)
    state = sampler.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    rebuilt = GaussianMixtureSampler.from_state_dict(state)
    assert torch.equal(sampler.sample(16, seed=4), rebuilt.sample(16, seed=4))


@pytest.mark.parametrize("num_samples", [1, 2, 64])
def test_gmm_sampler_draws_what_scikit_learn_draws(num_samples: int) -> None:
    # One code (most components drawn 0 times) to many: the codes are GaussianMixture.sample's
    # with the same seed, bit for bit, in the sampler's shuffled order.
    mu = torch.randn(300, 6, generator=torch.Generator().manual_seed(2))
    sampler = GaussianMixtureSampler(n_components=4).fit(mu)
    for seed in range(5):
        sampler.mixture.random_state = seed
        expected, _ = sampler.mixture.sample(num_samples)
        order = np.random.default_rng(seed).permutation(num_samples)
        drawn = sampler.sample(num_samples, seed)
        assert torch.equal(drawn, torch.from_numpy(expected[order]).float())


def test_gmm_sampler_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        GaussianMixtureSampler().sample(4)


def test_gmm_sampler_refuses_zero_components() -> None:
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixtureSampler(n_components=0)


def test_gmm_sampler_refuses_fewer_means_than_components() -> None:
    with pytest.raises(
        ValueError, match="3-component mixture needs at least 3 latent means, got 2"
    ):
        GaussianMixtureSampler(n_components=3).fit(torch.randn(2, 4))


def test_mixture_state_stores_each_covariance_once_as_its_lower_triangle() -> None:
    mu = torch.randn(300, 6, generator=torch.Generator().manual_seed(2))
    sampler = GaussianMixtureSampler(n_components=2).fit(mu)
    packed = sampler.state_dict()["covariances"]
    full = unpack_covariances(packed)
    assert packed.shape == (2, 6 * 7 // 2) and full.shape == (2, 6, 6)
    assert torch.equal(full, full.transpose(1, 2))
    assert torch.equal(full, torch.from_numpy(sampler.mixture.covariances_))
    assert torch.equal(pack_covariances(full), packed)


def test_a_mixture_packaged_with_full_covariances_still_loads() -> None:
    mu = torch.randn(300, 5, generator=torch.Generator().manual_seed(3))
    sampler = GaussianMixtureSampler(n_components=2).fit(mu)
    old_state = {
        **sampler.state_dict(),
        "covariances": torch.from_numpy(sampler.mixture.covariances_),
    }
    rebuilt = GaussianMixtureSampler.from_state_dict(old_state)
    assert torch.equal(sampler.sample(8, seed=1), rebuilt.sample(8, seed=1))


def test_a_packed_length_that_is_no_triangle_is_refused() -> None:
    with pytest.raises(ValueError, match="7 packed covariance entries"):
        unpack_covariances(torch.zeros(1, 7))


def _clusters_in_a_plane(count: int = 400, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, dim) codes in two tight clusters inside a random 2-D plane of R^dim, with a
    little isotropic noise (std 0.05) off it; and the two cluster centres, (2, dim)."""
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(dim, 2, generator=gen)).Q.T  # (2, dim), orthonormal
    centres = torch.tensor([[6.0, 0.0], [-6.0, 0.0]]) @ basis
    half = count // 2
    mu = torch.cat([c + 0.3 * torch.randn(half, 2, generator=gen) @ basis for c in centres])
    return mu + 0.05 * torch.randn(count, dim, generator=gen), centres


def test_pca_mixture_sampler_follows_clusters_in_a_subspace() -> None:
    mu, centres = _clusters_in_a_plane()
    sampler = PCAMixtureSampler(n_components=2, pca_dim=2).fit(mu)
    z = sampler.sample(400, seed=1)
    assert z.shape == (400, 32) and z.dtype == torch.float32
    nearest = torch.cdist(z, centres).min(dim=1)
    assert nearest.values.max() < 2.5
    assert ((nearest.indices == 0).float().mean() - 0.5).abs() < 0.1
    # The 30 discarded directions keep their variance as noise: 0.05^2 each, not 0.
    assert sampler.subspace.residual_std == pytest.approx(0.05, rel=0.15)
    assert off_plane_variance(z, sampler.subspace) == pytest.approx(30 * 0.05**2, rel=0.2)


def off_plane_variance(z: torch.Tensor, subspace: PrincipalSubspace) -> float:
    """Mean squared length of the part of codes z outside ``subspace``."""
    centred = z.double() - subspace.mean
    off_plane = centred - centred @ subspace.components.T @ subspace.components
    return float(off_plane.pow(2).sum(dim=1).mean())


def test_pca_mixture_sampler_seeds_and_state_dict_round_trip() -> None:
    mu, _ = _clusters_in_a_plane()
    sampler = PCAMixtureSampler(n_components=3, pca_dim=4).fit(mu)
    assert torch.equal(sampler.sample(8, seed=2), sampler.sample(8, seed=2))
    assert not torch.equal(sampler.sample(8, seed=2), sampler.sample(8, seed=3))
    state = sampler.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["subspace.components"].shape == (4, 32)
    assert state["mixture.means"].shape == (3, 4)
    rebuilt = PCAMixtureSampler.from_state_dict(state)
    assert rebuilt.pca_dim == 4 and rebuilt.subspace is not None
    assert torch.equal(sampler.sample(16, seed=4), rebuilt.sample(16, seed=4))


def test_pca_mixture_sampler_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="PCAMixtureSampler.sample called before fit"):
        PCAMixtureSampler().sample(4)
    with pytest.raises(RuntimeError, match="state_dict called before fit"):
        PCAMixtureSampler().state_dict()


def test_pca_mixture_sampler_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="pca_dim must be >= 1, got 0"):
        PCAMixtureSampler(pca_dim=0)
    with pytest.raises(ValueError, match="n_components"):
        PCAMixtureSampler(n_components=0)
    with pytest.raises(ValueError, match=r"2 latent means, got .* shape \(1, 6\)"):
        PCAMixtureSampler(n_components=1, pca_dim=2).fit(torch.randn(1, 6))
    with pytest.raises(ValueError, match="5-component mixture needs at least 5 latent means"):
        PCAMixtureSampler(n_components=5, pca_dim=2).fit(torch.randn(4, 6))


def test_flow_sampler_follows_clusters_in_a_subspace() -> None:
    """A flow in the 2-D principal subspace puts its samples on both clusters, in about equal
    shares, and the off-plane noise back at the data's level."""
    mu, centres = _clusters_in_a_plane()
    sampler = FlowSampler(pca_dim=2, transforms=3, hidden=32, epochs=150).fit(mu)
    z = sampler.sample(400, seed=1)
    assert z.shape == (400, 32) and z.dtype == torch.float32
    nearest = torch.cdist(z, centres).min(dim=1)
    assert nearest.values.median() < 1.5  # the clusters are 12 apart, 0.3 wide
    assert ((nearest.indices == 0).float().mean() - 0.5).abs() < 0.15
    assert off_plane_variance(z, sampler.subspace) == pytest.approx(30 * 0.05**2, rel=0.2)


def test_flow_sampler_seeds_and_state_dict_round_trip() -> None:
    mu, _ = _clusters_in_a_plane()
    sampler = FlowSampler(pca_dim=4, transforms=2, hidden=16, epochs=5).fit(mu)
    assert torch.equal(sampler.sample(8, seed=2), sampler.sample(8, seed=2))
    assert not torch.equal(sampler.sample(8, seed=2), sampler.sample(8, seed=3))
    state = sampler.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    rebuilt = FlowSampler.from_state_dict(state)
    assert (rebuilt.pca_dim, rebuilt.transforms, rebuilt.hidden) == (4, 2, 16)
    assert torch.equal(sampler.sample(16, seed=4), rebuilt.sample(16, seed=4))
    again = FlowSampler(pca_dim=4, transforms=2, hidden=16, epochs=5).fit(mu)
    assert torch.equal(again.sample(8, seed=2), sampler.sample(8, seed=2))  # seeded fit


def test_flow_sampler_before_fit_and_bad_sizes_raise() -> None:
    with pytest.raises(RuntimeError, match="FlowSampler.sample called before fit"):
        FlowSampler().sample(4)
    with pytest.raises(RuntimeError, match="FlowSampler.state_dict called before fit"):
        FlowSampler().state_dict()
    with pytest.raises(ValueError, match="hidden must be >= 1, got 0"):
        FlowSampler(hidden=0)
    with pytest.raises(ValueError, match="at least 20 latent means, got 19"):
        FlowSampler(pca_dim=2).fit(torch.randn(19, 6))


def test_the_subspace_shrinks_to_the_dimensions_the_means_have() -> None:
    """More principal dimensions than the codes have, or than N - 1 means span, fit all there
    are: a small model or a small data set still gets every learned sampler."""
    wide = PCAMixtureSampler(n_components=2, pca_dim=8).fit(torch.randn(20, 6))
    assert wide.subspace.components.shape == (6, 6) and wide.subspace.residual_std == 0
    few = FlowSampler(pca_dim=64, hidden=8, epochs=2).fit(torch.randn(21, 32))
    assert few.pca_dim == 20 and few.sample(3).shape == (3, 32)
    assert FlowSampler.from_state_dict(few.state_dict()).pca_dim == 20


@pytest.mark.parametrize("name", list(LEARNED_SAMPLERS))
def test_every_learned_sampler_loads_from_a_checkpoint_entry(name: str) -> None:
    """The packager stores ``<name>_sampler``; the API and predict rebuild the same sampler
    from it, which draws the same codes."""
    mu, _ = _clusters_in_a_plane()
    small = {
        "gmm": lambda: GaussianMixtureSampler(2),
        "pca_gmm": lambda: PCAMixtureSampler(2, pca_dim=2),
        "flow": lambda: FlowSampler(pca_dim=2, hidden=8, epochs=2),
    }
    sampler = small[name]().fit(mu)
    checkpoint = {checkpoint_key(name): sampler.state_dict(), "other": 1}
    assert stored_samplers(checkpoint) == [name]
    rebuilt = sampler_from_checkpoint(name, checkpoint)
    assert torch.equal(rebuilt.sample(6, seed=5), sampler.sample(6, seed=5))
