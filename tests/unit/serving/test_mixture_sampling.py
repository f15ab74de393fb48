"""The mixture sampler behind /generate draws, bit for bit, what scikit-learn's
GaussianMixture.sample draws with the same seed (its SVD factors are only cached), so the API
and predict give the images of older releases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_cats.checkpoint import read_checkpoint
from vae_cats.fileio import ASSETS_DIR
from vae_cats.samplers import GaussianMixtureSampler


@pytest.mark.parametrize("n", [1, 5, 16, 256])
def test_cached_sampling_equals_scikit_learn(n: int) -> None:
    state = read_checkpoint(ASSETS_DIR / "cats_vae.ckpt")["gmm_sampler"]
    sampler = GaussianMixtureSampler.from_state_dict(state)
    for seed in (0, 7, 2**32 - 1):
        sampler.mixture.random_state = seed
        expected, _ = sampler.mixture.sample(n)
        expected = expected[np.random.default_rng(seed).permutation(n)]
        assert torch.equal(sampler.sample(n, seed), torch.from_numpy(expected).float())


def test_refit_drops_the_cached_factors() -> None:
    generator = torch.Generator().manual_seed(0)
    sampler = GaussianMixtureSampler(n_components=2).fit(torch.randn(50, 3, generator=generator))
    before = sampler.sample(4, 1)
    sampler.fit(torch.randn(50, 3, generator=generator) * 10)
    after = sampler.sample(4, 1)
    assert after.abs().mean() > 3 * before.abs().mean()
