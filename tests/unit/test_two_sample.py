"""vae_cats.two_sample: the classifier two-sample test on real bundled cat faces."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from vae_cats.checkpoint import SHIPPED_MODEL, read_checkpoint, vae_from_checkpoint
from vae_cats.data.store import ingested_splits
from vae_cats.images import to_float
from vae_cats.two_sample import MIN_PER_SIDE, two_sample_test, wilson_interval

# 128 faces a side: 64 train, 64 held out (128 held-out faces in all, so the null's standard
# deviation is 0.044 and [0.3, 0.7] is 4.5 of them); half the default budget of steps, enough
# to tell real faces from their reconstructions, and so to overfit real against real if the
# held-out split leaked. Uniform noise needs far fewer.
PER_SIDE = 128
STEPS = 200
NOISE_STEPS = 30


@pytest.fixture(scope="module")
def faces() -> Tensor:
    """Every real face of the bundled sample, float (N, 3, 64, 64) in [0, 1]; N is about 1,000."""
    return to_float(torch.cat(list(ingested_splits("bundled").values())))


def test_real_faces_against_other_real_faces_are_chance(faces: Tensor) -> None:
    result = two_sample_test(faces[:PER_SIDE], faces[PER_SIDE : 2 * PER_SIDE], steps=STEPS)
    assert result.total == PER_SIDE and 0.3 <= result.accuracy <= 0.7
    assert result.low < 0.5 < result.high


def test_real_faces_against_uniform_noise_are_told_apart(faces: Tensor) -> None:
    noise = torch.rand(PER_SIDE, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    result = two_sample_test(faces[:PER_SIDE], noise, steps=NOISE_STEPS)
    assert result.accuracy >= 0.95 and result.low > 0.9
    assert result.correct == round(result.accuracy * result.total)


def test_same_seed_same_result_and_global_rng_untouched(faces: Tensor) -> None:
    a, b = faces[:32], faces[32:64]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = two_sample_test(a, b, seed=5, steps=4)
    assert torch.equal(torch.rand(3), expected_next)
    assert two_sample_test(a, b, seed=5, steps=4) == first


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "message"),
    [
        ((16, 3, 64, 64), (12, 3, 64, 64), "equal numbers of faces.*16 and 12"),
        (
            (MIN_PER_SIDE - 1, 3, 64, 64),
            (MIN_PER_SIDE - 1, 3, 64, 64),
            f"at least {MIN_PER_SIDE} faces a side",
        ),
        ((16, 3, 32, 32), (16, 3, 32, 32), r"a: expected images of shape \(N, 3, 64, 64\)"),
        ((16, 3, 64, 64), (16, 64, 64), r"b: expected images of shape"),
    ],
)
def test_bad_sets_raise_value_error_naming_the_problem(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        two_sample_test(torch.rand(a_shape), torch.rand(b_shape))


def test_integer_images_are_refused() -> None:
    images = torch.zeros(16, 3, 64, 64, dtype=torch.uint8)
    with pytest.raises(ValueError, match="float images in \\[0, 1\\], got dtype torch.uint8"):
        two_sample_test(images, images)


def test_wilson_interval_known_values() -> None:
    # 0 of 10: the upper bound is z^2 / (n + z^2) (Brown, Cai & DasGupta 2001).
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(1.96**2 / (10 + 1.96**2), abs=1e-4)
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    with pytest.raises(ValueError, match="11/10"):
        wilson_interval(11, 10)


def test_real_faces_against_their_reconstructions_are_told_apart(faces: Tensor) -> None:
    """The shipped decoder's blur is what a sampler cannot fix; the test must see it (the
    stride-2 classifier before this one scored 0.50 to 0.83 on the model's test split)."""
    net = vae_from_checkpoint(read_checkpoint(SHIPPED_MODEL), SHIPPED_MODEL)
    real = faces[:PER_SIDE]
    result = two_sample_test(real, net.reconstruct(real), steps=STEPS)
    assert result.accuracy >= 0.85, result
