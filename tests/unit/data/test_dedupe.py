"""Exact and near duplicates of real cat faces, and which copy of a photo is kept."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image, ImageFilter

from tests.helpers import bundled_members, image_bytes
from vae_cats.data.decode import Decoded, decode_many
from vae_cats.data.dedupe import (
    DecodedFile,
    exact_groups,
    group_near_duplicates,
    group_photos,
    is_grey,
    why_kept,
)


def decoded(files: list[tuple[str, bytes]]) -> list[DecodedFile]:
    results = decode_many([raw for _, raw in files])
    out = []
    for (name, raw), result in zip(files, results, strict=True):
        assert isinstance(result, Decoded), name
        out.append(DecodedFile(name, result.pixels, result.width, result.height, len(raw)))
    return out


def face(index: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(bundled_members(index + 1)[index][1])).convert("RGB")


def test_exact_groups_are_taken_on_the_converted_pixels() -> None:
    image = face()
    files = decoded(
        [
            ("b.png", image_bytes(image)),
            ("a.bmp", image_bytes(image, "BMP")),
            ("c.png", image_bytes(image.convert("RGBA"))),
            ("other.png", image_bytes(face(1))),
        ]
    )
    groups = exact_groups(files)
    assert sorted(g.names for g in groups) == [["a.bmp", "b.png", "c.png"], ["other.png"]]
    assert [g.sha256 for g in groups] == sorted(g.sha256 for g in groups)


def test_reencoded_copies_are_grouped_and_different_cats_are_not() -> None:
    members = bundled_members(30)
    copies = [
        image_bytes(Image.open(io.BytesIO(raw)), "JPEG", quality=60 + i)
        for i, (_, raw) in enumerate(members)
    ]
    files = decoded([*members, *((f"copy_{i}.jpg", raw) for i, raw in enumerate(copies))])
    roots = group_near_duplicates(torch.stack([f.pixels for f in files]), max_bits=6)
    assert roots == list(range(30)) * 2
    assert group_near_duplicates(torch.stack([f.pixels for f in files]), max_bits=-1) == list(
        range(60)
    )


@pytest.mark.parametrize(
    ("worse", "why"),
    [
        ("grey", "colour over greyscale"),
        ("upscaled", "native 64x64 over resized"),
        ("low_quality", "larger file"),
    ],
)
def test_each_photo_keeps_its_best_copy_by_the_documented_rule(worse: str, why: str) -> None:
    image = face(3)
    best = ("best.jpg", image_bytes(image, "JPEG", quality=95))
    copies = {
        # An uncompressed grey copy is the largest file, yet colour wins.
        "grey": ("grey.bmp", image_bytes(image.convert("L").convert("RGB"), "BMP")),
        # A 256 px bicubic upscale (a larger file), yet the native size wins.
        "upscaled": ("upscaled.png", image_bytes(image.resize((256, 256), Image.BICUBIC))),
        "low_quality": ("low_quality.jpg", image_bytes(image, "JPEG", quality=60)),
    }
    files = decoded([copies[worse], best])
    assert len(best[1]) < len(copies[worse][1]) or worse == "low_quality"
    (photo,) = group_photos(exact_groups(files), image_size=64, max_bits=6)
    assert photo.kept.names == ["best.jpg"]
    assert [c.names for c in photo.others] == [[copies[worse][0]]]
    assert why_kept(photo.kept, photo.others[0], 64).startswith(why)
    # The split key is the smallest pixel hash of the photo, whichever copy is kept.
    assert photo.split_key == min(photo.kept.sha256, photo.others[0].sha256)


def test_the_original_jpeg_is_kept_over_a_larger_png_reconstruction() -> None:
    """Issue 22: a 64x64 PNG of a model's slightly blurred output (more bytes, lossless) was
    kept over the sharp original JPEG among JPEGs, as the larger file."""
    members = bundled_members(6)
    original_name, original = members[3]
    blurred = Image.open(io.BytesIO(original)).convert("RGB").filter(ImageFilter.GaussianBlur(0.6))
    reconstruction = ("recon_0003.png", image_bytes(blurred))
    assert len(reconstruction[1]) > len(original)
    photos = group_photos(exact_groups(decoded([*members, reconstruction])), 64, max_bits=6)
    (photo,) = [p for p in photos if p.others]
    assert photo.kept.names == [original_name]
    assert [c.names for c in photo.others] == [["recon_0003.png"]]
    assert why_kept(photo.kept, photo.others[0], 64) == "the source's own format, .jpg over .png"


def test_the_copy_with_more_pixels_is_kept_over_a_larger_file() -> None:
    image = face(4)
    small = ("small.jpg", image_bytes(image.resize((96, 96), Image.BICUBIC), "JPEG", quality=95))
    large = ("large.jpg", image_bytes(image.resize((128, 128), Image.BICUBIC), "JPEG", quality=40))
    assert len(small[1]) > len(large[1])
    (photo,) = group_photos(exact_groups(decoded([small, large])), image_size=64, max_bits=6)
    assert photo.kept.names == ["large.jpg"]
    assert why_kept(photo.kept, photo.others[0], 64) == "more pixels, 16384 over 9216"


def test_greyscale_is_told_from_colour() -> None:
    image = face(2)
    grey_jpeg = image_bytes(image.convert("L").convert("RGB"), "JPEG", quality=90)
    colour, grey, grey_as_colour_jpeg = decoded(
        [
            ("c.png", image_bytes(image)),
            ("g.png", image_bytes(image.convert("L"))),
            ("j", grey_jpeg),
        ]
    )
    assert not is_grey(colour.pixels)
    assert is_grey(grey.pixels) and is_grey(grey_as_colour_jpeg.pixels)
