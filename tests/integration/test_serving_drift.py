"""Drift detection of the shipped model on held-out real faces (the cats64 test split, never
seen in training or calibration) and on what is not a cat face, through the serving layer
(ModelService: upload decoding, ONNX backend, the stored statistics)."""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from vae_cats.data.decode import decode_image, fit_size
from vae_cats.data.sources import SHARED_CATS64
from vae_cats.data.store import ingested_splits
from vae_cats.fileio import ASSETS_DIR
from vae_cats.serving.service import ModelService
from vae_cats.serving.settings import Settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_CATS64.is_file(), reason="needs ../shared cats64"),
]


@pytest.fixture(scope="module")
def service() -> ModelService:
    return ModelService(Settings(model=ASSETS_DIR / "cats_vae.ckpt", backend="onnx"))


@pytest.fixture(scope="module")
def test_split() -> torch.Tensor:
    """The model's own test split of cats64 (seed 42, as in its lineage): 836 faces."""
    return ingested_splits(str(SHARED_CATS64), 42)["test"]


@pytest.fixture(scope="module")
def held_out(test_split: torch.Tensor) -> torch.Tensor:
    """The first 200 faces of the model's own test split."""
    return test_split[:200]


def flagged(service: ModelService, images: torch.Tensor) -> list[bool]:
    return [bool(service.reconstruct(image).drift["is_outlier"]) for image in images]  # type: ignore[index]


def pictures() -> list[torch.Tensor]:
    """Pictures that are not cats, drawn here: stripes, shapes on a lawn, a checkerboard."""
    drawn = []
    for kind in range(3):
        image = Image.new("RGB", (64, 64), (30, 90, 200))
        draw = ImageDraw.Draw(image)
        if kind == 0:
            for left in range(0, 64, 8):
                draw.rectangle([left, 0, left + 3, 63], fill=(250, 250, 250))
        elif kind == 1:
            draw.ellipse([8, 8, 56, 56], fill=(200, 40, 40))
            draw.rectangle([0, 48, 63, 63], fill=(20, 150, 20))
        else:
            for i in range(0, 64, 8):
                for j in range(0, 64, 8):
                    if (i + j) // 8 % 2:
                        draw.rectangle([i, j, i + 7, j + 7], fill=(0, 0, 0))
        drawn.append(torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous())
    return drawn


def test_held_out_faces_raise_about_the_false_alarm_rate(
    service: ModelService, test_split: torch.Tensor
) -> None:
    """All 836 held-out faces: at most 2% false alarms (the issue's bound; the threshold flags
    1% of the validation faces)."""
    rate = float(np.mean(flagged(service, test_split)))
    print(f"false alarms on {len(test_split)} held-out faces: {rate:.1%}")
    assert len(test_split) == 836
    assert rate <= 0.02, rate


def test_turned_faces_noise_flat_colour_and_pictures_are_flagged(
    service: ModelService, held_out: torch.Tensor
) -> None:
    generator = torch.Generator().manual_seed(0)
    faces = held_out
    sets = {
        "turned 90 degrees": torch.rot90(faces, 1, dims=(2, 3)),
        "upside down": torch.flip(faces, dims=(2,)),
        "noise": torch.randint(0, 256, (20, 3, 64, 64), generator=generator).to(torch.uint8),
        "flat colour": torch.randint(0, 256, (20, 3, 1, 1), generator=generator)
        .to(torch.uint8)
        .expand(20, 3, 64, 64),
        "not a cat": torch.stack(pictures()),
    }
    rates = {name: float(np.mean(flagged(service, images))) for name, images in sets.items()}
    print("detection rates:", {name: f"{rate:.0%}" for name, rate in rates.items()})
    assert rates["noise"] == rates["flat colour"] == rates["not a cat"] == 1.0, rates
    # The latent codes and edge layout tell turned faces from upright ones only partly: about
    # two in three are caught (the shipped model: 66% and 68%; with its previous statistics
    # 56% and 57%).
    assert rates["turned 90 degrees"] >= 0.55 and rates["upside down"] >= 0.55, rates


def test_a_photo_upload_goes_through_ingest_decoding(service: ModelService) -> None:
    """A larger, non-square photo-like upload is centre-cropped and resized as ingest does,
    then scored. (A smooth sunset with a sun is NOT flagged: a known miss.)"""
    sky = Image.linear_gradient("L").resize((300, 200)).convert("RGB")
    ImageDraw.Draw(sky).ellipse([120, 60, 180, 120], fill=(255, 200, 0))
    buffer = io.BytesIO()
    sky.save(buffer, format="JPEG")
    image = service.ingest_upload(buffer.getvalue())
    assert torch.equal(image, decode_image(buffer.getvalue()))
    drift = service.reconstruct(image).drift
    assert drift is not None and drift["verdict"].endswith(".")


def test_batch_test_passes_faces_and_catches_turned_ones(
    service: ModelService, held_out: torch.Tensor
) -> None:
    same = service.batch_drift(held_out[100:200], alpha=0.05)
    turned = service.batch_drift(torch.rot90(held_out[100:200], 1, dims=(2, 3)), alpha=0.05)
    print(f"MMD p-values: held-out faces {same['p_value']:.3f}, turned {turned['p_value']:.3f}")
    assert same["is_drift"] is False and turned["is_drift"] is True


def square_crops(pixels: torch.Tensor, sides: tuple[int, ...]) -> list[torch.Tensor]:
    """uint8 crops (3, 64, 64) of a uint8 photo (3, H, W): for each side, squares on a grid of
    up to 3 rows and 4 columns, resized as ingest resizes."""
    crops = []
    _, height, width = pixels.shape
    for side in sides:
        rows = range(0, height - side + 1, max(1, (height - side) // 2))
        columns = range(0, width - side + 1, max(1, (width - side) // 3))
        for top in rows:
            for left in columns:
                square = pixels[:, top : top + side, left : left + side]
                crops.append(fit_size(square.contiguous(), 64, "resize"))
    return crops


def photo_crops() -> torch.Tensor:
    """104 uint8 crops (3, 64, 64) of scikit-learn's two sample photos (a temple, a flower):
    squares of 427 to 96 pixels on a grid, resized as ingest resizes."""
    crops = []
    for photo in load_sample_images().images:
        pixels = torch.from_numpy(np.array(photo)).permute(2, 0, 1).contiguous()
        crops += square_crops(pixels, (427, 300, 200, 128, 96))
    return torch.stack(crops)


# The second non-cat set: real photos shipped inside scikit-image's and matplotlib's wheels
# (not project dependencies; skimage's chelsea, a cat, and its drawn or synthetic images left
# out). It was never looked at while the detector's scores were chosen on photo_crops.
SECOND_SET = {
    "colour": [
        "skimage/data/astronaut.png",
        "skimage/data/coffee.png",
        "skimage/data/rocket.jpg",
        "skimage/data/motorcycle_left.png",
        "skimage/data/hubble_deep_field.jpg",
        "skimage/data/retina.jpg",
        "skimage/data/ihc.png",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png",
    ],
    "grey": [
        f"skimage/data/{name}.png"
        for name in (
            "camera", "coins", "moon", "brick", "grass", "gravel", "cell", "clock_motion",
            "microaneurysms", "page", "text",
        )
    ],
}  # fmt: skip


def second_set_crops(kind: str) -> torch.Tensor | None:
    """Crops (N, 3, 64, 64) uint8 of the ``SECOND_SET`` photos of ``kind`` (sides 100%, 70%,
    47%, 30% and 22% of each photo's shorter side; grey photos as RGB), or None when the photos
    are not here: read from the folder ``SECOND_SET_DIR`` names (one holding ``skimage/`` and
    ``matplotlib/``, e.g. ``pip install --no-deps --target DIR scikit-image matplotlib``: not
    on ``sys.path``, where a matplotlib without its dependencies breaks torchmetrics' import),
    else from the installed packages (found without importing them)."""
    roots = {}
    for package in ("skimage", "matplotlib"):
        folder = os.environ.get("SECOND_SET_DIR")
        spec = None if folder else importlib.util.find_spec(package)
        if folder:
            roots[package] = Path(folder)
        elif spec is not None and spec.origin is not None:
            roots[package] = Path(spec.origin).parent.parent
        else:
            return None
    crops = []
    for name in SECOND_SET[kind]:
        with Image.open(roots[name.split("/")[0]] / name) as photo:
            pixels = torch.from_numpy(np.array(photo.convert("RGB"))).permute(2, 0, 1)
        short = min(pixels.shape[1:])
        sides = tuple(int(short * share) for share in (1.0, 0.7, 0.47, 0.3, 0.22))
        crops += square_crops(pixels.contiguous(), sides)
    return torch.stack(crops)


def test_real_photos_that_are_not_cats_are_measured(service: ModelService) -> None:
    """The miss rate on real non-cat photos, as docs/serving.md states it: 92% of the 104
    crops flagged with the shipped model (7.7% missed; the issue's target: at most 10%)."""
    crops = photo_crops()
    assert len(crops) == 104
    rate = float(np.mean(flagged(service, crops)))
    print(f"non-cat photo crops flagged: {rate:.1%} of {len(crops)}")
    assert rate >= 0.88, rate


@pytest.mark.parametrize("kind", ["colour", "grey"])
def test_second_set_of_real_photos_is_measured(service: ModelService, kind: str) -> None:
    """The second non-cat set (``SECOND_SET``), as docs/serving.md states it: colour 90%
    flagged of 455 crops, grey 88% of 553, with the shipped model."""
    crops = second_set_crops(kind)
    if crops is None:
        pytest.skip("needs scikit-image's and matplotlib's sample photos (SECOND_SET_DIR)")
    rate = float(np.mean(flagged(service, crops)))
    print(f"second set, {kind} photo crops flagged: {rate:.1%} of {len(crops)}")
    assert rate >= 0.84, rate
