"""Decoding and validation of single files, real images made here: the ingest's decoder and the
one the HTTP API uses for uploads (``decode_image``)."""

from __future__ import annotations

import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import PROJECT_DIR, bundled_members, image_bytes
from vae_cats.data import decode
from vae_cats.data.decode import (
    BACKGROUND,
    BadImageError,
    Decoded,
    decode_image,
    decode_many,
    decode_with_pillow,
    has_torchvision,
    jpeg_size,
)

needs_torchvision = pytest.mark.skipif(not has_torchvision(), reason="libjpeg path only")


def png_with_declared_size(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose IHDR chunk (CRC fixed) declares width x height."""
    raw = bytearray(image_bytes(Image.new("L", (8, 8), 128)))
    ihdr = raw[12:29]  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def jpeg_with_declared_size(width: int, height: int) -> bytes:
    """A real cat JPEG whose frame header (SOF0) declares width x height."""
    raw = bytearray(bundled_members(1)[0][1])
    sof = raw.index(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(raw)


def damaged_jpeg() -> bytes:
    """A real cat JPEG whose entropy-coded data stops half-way, then ends properly: libjpeg
    decodes it (grey below the cut) and warns 'premature end of data segment'."""
    raw = bundled_members(1)[0][1]
    scan = raw.index(b"\xff\xda")
    return raw[: scan + (len(raw) - scan) // 2] + b"\xff\xd9"


def test_jpeg_size_reads_the_frame_header_only() -> None:
    raw = bundled_members(1)[0][1]
    assert jpeg_size(raw) == (64, 64)
    assert jpeg_size(raw[:20]) is None
    assert jpeg_size(jpeg_with_declared_size(30000, 20000)) == (30000, 20000)


def test_pillow_path_reports_truncation() -> None:
    raw = image_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(BadImageError, match="truncated|corrupt"):
        decode_with_pillow(raw[: len(raw) - 30])


def test_palette_rgba_and_16bit_pngs_convert_without_pillow_warnings() -> None:
    # palette image: index 0 is pure green and transparent, index 1 opaque grey
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 255, 0, 120, 120, 120] + [0, 0, 0] * 254)
    palette.paste(1, (16, 16, 48, 48))
    transparent_palette = image_bytes(palette, transparency=bytes([0] + [255] * 255))
    rgba = Image.new("RGBA", (64, 64), (0, 255, 0, 0))
    rgba.paste((120, 60, 30, 255), (16, 16, 48, 48))
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    sixteen = image_bytes(Image.fromarray(ramp))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_many([transparent_palette, image_bytes(rgba), sixteen])
    assert [str(w.message) for w in caught] == []
    pal, alpha, grey = (x.pixels for x in decoded if isinstance(x, Decoded))
    background = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1)
    for image, inner in ((pal, [120, 120, 120]), (alpha, [120, 60, 30])):
        assert torch.equal(image[:, 0, :], background.expand(3, 64))  # no green shows
        assert image[:, 32, 32].tolist() == inner
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert torch.equal(grey[0], torch.from_numpy(expected))
    assert grey[0, 0, 0] == 0 and grey[0, 32, 0] == 128  # scaled, not clipped to white


@pytest.mark.parametrize("torchvision", [True, False])
def test_exif_orientation_is_applied(monkeypatch: pytest.MonkeyPatch, torchvision: bool) -> None:
    if torchvision and not has_torchvision():
        pytest.skip("no torchvision")
    monkeypatch.setattr(decode, "has_torchvision", lambda: torchvision)
    # Stored: left half red, right half blue; orientation 6 shows it turned 90 degrees
    # clockwise, so the red half is on top.
    stored = Image.new("RGB", (64, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = decode_image(image_bytes(stored, "JPEG", quality=95, exif=exif.tobytes()))
    top, bottom = pixels[:, 8].float().mean(1), pixels[:, 56].float().mean(1)
    assert top[0] > 200 and top[2] < 50, top
    assert bottom[2] > 200 and bottom[0] < 50, bottom


def test_wrong_size_is_fitted_and_its_size_reported() -> None:
    wide = Image.new("RGB", (640, 427), (200, 10, 10))
    wide.paste((0, 0, 0), (0, 0, 106, 427))  # cut away by the centre crop
    (resized,) = decode_many([image_bytes(wide)])
    assert isinstance(resized, Decoded) and (resized.width, resized.height) == (640, 427)
    assert resized.pixels.shape == (3, 64, 64)
    assert resized.pixels.float().mean(dim=(1, 2)).round().tolist() == [200, 10, 10]
    (rejected,) = decode_many([image_bytes(wide)], wrong_size="reject")
    assert isinstance(rejected, BadImageError)
    assert str(rejected) == "wrong size: 640x427, expected 64x64"


@needs_torchvision
def test_a_damaged_jpeg_is_corrupt_with_libjpegs_words_and_stderr_stays_clean(
    capfd: pytest.CaptureFixture[str],
) -> None:
    good = [raw for _, raw in bundled_members(6)]
    results = decode_many([*good, damaged_jpeg()], workers=2)
    *fine, damaged = results
    assert all(isinstance(r, Decoded) for r in fine)
    assert isinstance(damaged, BadImageError)
    assert str(damaged) == "corrupt image: Corrupt JPEG data: premature end of data segment"
    assert capfd.readouterr().err == ""


def test_uploads_decode_as_the_ingest_decodes_or_fail_in_one_line() -> None:
    raw = bundled_members(1)[0][1]
    pixels = decode_image(raw)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 64)
    (ingested,) = decode_many([raw])
    assert isinstance(ingested, Decoded) and torch.equal(pixels, ingested.pixels)
    bad = {
        b"": "empty file",
        b"GIF89a but not really": "not an image",
        b"hello": "not an image",
        raw[: len(raw) // 2]: "truncated image",
        png_with_declared_size(20000, 20000): "too many pixels",
        jpeg_with_declared_size(20000, 20000): "too many pixels",
    }
    for data, reason in bad.items():
        with pytest.raises(ValueError) as caught:
            decode_image(data)
        assert isinstance(caught.value, BadImageError) and caught.value.reason == reason
        message = str(caught.value)
        assert message.startswith(reason) and "\n" not in message


def test_the_pixel_cap_is_checked_from_the_header_before_decoding(tmp_path: Path) -> None:
    """A 20000 x 20000 PNG of a few bytes is refused without decoding 400 MB of pixels."""
    bomb = png_with_declared_size(20000, 20000)
    assert len(bomb) < 4096
    (tmp_path / "bomb.png").write_bytes(bomb)
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from vae_cats.data.decode import BadImageError, decode_image\n"
        "raw = Path(sys.argv[1]).read_bytes()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_image(raw)\n"
        "except BadImageError as err:\n"
        "    message = str(err)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after - before, message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "bomb.png")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    growth_kib, message = result.stdout.strip().split(" ", 1)
    assert message.startswith("too many pixels: ") and "400000000 pixels" in message
    assert int(growth_kib) < 100_000  # 20000 x 20000 grey pixels alone would be 400 MB


def test_pillow_path_decodes_like_the_torchvision_path(monkeypatch: pytest.MonkeyPatch) -> None:
    raws = [raw for _, raw in bundled_members(8)]
    fast = decode_many(raws)
    monkeypatch.setattr(decode, "has_torchvision", lambda: False)

    def no_torchvision(raws: list[bytes], workers: int) -> list[torch.Tensor]:
        raise ModuleNotFoundError("No module named 'torchvision'")

    # As in the slim predict image: the torchvision path must not even be entered.
    monkeypatch.setattr(decode, "_decode_jpegs", no_torchvision)
    slow = decode_many(raws)
    for a, b in zip(fast, slow, strict=True):
        assert isinstance(a, Decoded) and isinstance(b, Decoded)
        assert (a.pixels.int() - b.pixels.int()).abs().max() <= 3
