"""Hardened ingest: every kind of bad input, made as a real file here, is excluded, reported by
name and reason, and leaves the good files ingested."""

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import PROJECT_DIR, bundled_members, make_tar
from vae_cats.data.ingest import (
    BACKGROUND,
    NoUsableImageError,
    decode_many,
    decode_with_pillow,
    ingest,
    jpeg_size,
)

GOOD = 12


def good_folder(tmp_path: Path, count: int = GOOD) -> tuple[Path, list[tuple[str, bytes]]]:
    folder = tmp_path / "cats"
    folder.mkdir()
    members = bundled_members(count)
    for name, raw in members:
        (folder / name).write_bytes(raw)
    return folder, members


def reasons(manifest: dict) -> dict[str, str]:
    return {r["name"]: r["reason"] for r in manifest["report"]["rejected"]}


def kept_names(manifest: dict) -> set[str]:
    return {r["name"] for r in manifest["images"]}


def png_bytes(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def png_with_declared_size(width: int, height: int) -> bytes:
    """A real 8x8 PNG whose IHDR chunk (CRC fixed) declares width x height."""
    raw = bytearray(png_bytes(Image.new("L", (8, 8), 128)))
    ihdr = raw[12:29]  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def reencoded(raw: bytes, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_every_bad_file_kind_is_excluded_and_reported_and_the_good_ones_kept(
    tmp_path: Path,
) -> None:
    folder, members = good_folder(tmp_path)
    jpeg = members[0][1]
    face = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    corrupt = bytearray(jpeg)
    corrupt[4:40] = bytes(36)  # SOI intact, the marker segments after it destroyed
    bad = {
        "corrupt.jpg": bytes(corrupt),
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "text.jpg": b"this is a text file, not a photo\n",
        "bomb.png": png_with_declared_size(20000, 20000),
        "big.png": png_bytes(Image.new("RGB", (100, 80), (10, 20, 30))),
        "exact_copy.jpg": jpeg,
    }
    for name, raw in bad.items():
        (folder / name).write_bytes(raw)
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(members[1][1])
    (folder / "link.jpg").symlink_to(outside)
    # good but odd formats: kept
    Image.fromarray(face[:, :, 0]).save(folder / "grey.png")
    rgba = Image.fromarray(face).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((64, 64)))
    rgba.save(folder / "rgba.png")

    manifest = ingest(folder, tmp_path / "out", wrong_size="reject", workers=2)

    got = reasons(manifest)
    assert got == {
        "corrupt.jpg": "corrupt image",
        "zero.jpg": "empty file",
        "truncated.jpg": "truncated image",
        "text.jpg": "not an image",
        "bomb.png": "too many pixels",
        "big.png": "wrong size",
        "exact_copy.jpg": "exact duplicate",
        "link.jpg": "link",
    }
    kept = kept_names(manifest)
    assert {name for name, _ in members} <= kept | {"exact_copy.jpg"}
    assert {"grey.png", "rgba.png"} <= kept
    assert not kept & set(got)
    report = json.loads((tmp_path / "out" / "ingest_report.json").read_text())
    assert report == manifest["report"]
    assert report["rejected_per_reason"]["link"] == 1
    assert report["num_ignored_not_images"] == 1
    assert set(manifest["rejected"]) == set(got)


def test_wrong_size_is_resized_when_the_config_says_resize(tmp_path: Path) -> None:
    folder, _ = good_folder(tmp_path, 3)
    Image.new("RGB", (128, 96), (200, 10, 10)).save(folder / "big.png")
    manifest = ingest(folder, tmp_path / "out", wrong_size="resize")
    assert "big.png" in kept_names(manifest)
    images = torch.load(tmp_path / "out" / "images.pt", weights_only=True)
    assert images.shape == (4, 3, 64, 64)
    row = [r["name"] for r in manifest["images"]].index("big.png")
    assert images[row].float().mean(dim=(1, 2)).round().tolist() == [200, 10, 10]


def test_decompression_bomb_is_rejected_before_decoding_with_bounded_memory(
    tmp_path: Path,
) -> None:
    folder, _ = good_folder(tmp_path, 5)
    bomb = png_with_declared_size(20000, 20000)
    assert len(bomb) < 4096
    (folder / "bomb.png").write_bytes(bomb)
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from vae_cats.data.ingest import ingest\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "m = ingest(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after - before, m['rejected']['bomb.png'], len(m['images']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    growth_kib, rest = result.stdout.split(" ", 1)
    assert rest.startswith("too many pixels: ") and "400000000 pixels" in rest
    assert rest.split()[-1] == "5"
    # 20000 x 20000 grey pixels alone would be 400 MB
    assert int(growth_kib) < 100_000


def test_palette_rgba_and_16bit_pngs_convert_without_pillow_warnings() -> None:
    # palette image: index 0 is pure green and transparent, index 1 opaque grey
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 255, 0, 120, 120, 120] + [0, 0, 0] * 254)
    palette.paste(1, (16, 16, 48, 48))
    transparent_palette = png_bytes(palette, transparency=bytes([0] + [255] * 255))
    rgba = Image.new("RGBA", (64, 64), (0, 255, 0, 0))
    rgba.paste((120, 60, 30, 255), (16, 16, 48, 48))
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    sixteen = png_bytes(Image.fromarray(ramp))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_many([transparent_palette, png_bytes(rgba), sixteen])
    assert [str(w.message) for w in caught] == []
    pal, alpha, grey = (x for x in decoded if isinstance(x, torch.Tensor))
    background = torch.tensor(BACKGROUND, dtype=torch.uint8).view(3, 1)
    for image, inner in ((pal, [120, 120, 120]), (alpha, [120, 60, 30])):
        assert torch.equal(image[:, 0, :], background.expand(3, 64))  # no green shows
        assert image[:, 32, 32].tolist() == inner
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert torch.equal(grey[0], torch.from_numpy(expected))
    assert grey[0, 0, 0] == 0 and grey[0, 32, 0] == 128  # scaled, not clipped to white


def test_the_exact_duplicate_hash_is_taken_on_the_converted_pixels(tmp_path: Path) -> None:
    folder, members = good_folder(tmp_path, 4)
    face = Image.open(io.BytesIO(members[0][1])).convert("RGB")
    face.save(folder / "same_pixels.png")
    face.convert("RGBA").save(folder / "same_pixels_rgba.png")
    manifest = ingest(folder, tmp_path / "out")
    assert reasons(manifest) == {
        "same_pixels.png": "exact duplicate",
        "same_pixels_rgba.png": "exact duplicate",
    }
    assert len(manifest["images"]) == 4


def test_archive_members_with_unsafe_paths_and_links_are_never_extracted(
    tmp_path: Path,
) -> None:
    members = bundled_members(6)
    evil = members[0][1]
    tar_path = make_tar(
        tmp_path / "cats.tar",
        [*members[1:], ("../escape.jpg", evil), ("/abs/evil.jpg", evil)],
    )
    with tarfile.open(tar_path, "a") as archive:
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        hard = tarfile.TarInfo("hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside.jpg"
        archive.addfile(hard)
    zip_path = tmp_path / "cats.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, raw in members[1:]:
            archive.writestr(name, raw)
        archive.writestr("../escape.jpg", evil)
        archive.writestr("/abs/evil.jpg", evil)
        symlink = zipfile.ZipInfo("zlink.jpg")
        symlink.external_attr = (0o120777 << 16) | 0
        archive.writestr(symlink, "/etc/passwd")
    before = set(os.listdir(tmp_path)) | set(os.listdir(tmp_path.parent))
    tar_manifest = ingest(tar_path, tmp_path / "out_tar")
    zip_manifest = ingest(zip_path, tmp_path / "out_zip")
    assert reasons(tar_manifest) == {
        "../escape.jpg": "unsafe path",
        "/abs/evil.jpg": "unsafe path",
        "link.jpg": "link",
        "hard.jpg": "link",
    }
    assert reasons(zip_manifest) == {
        "../escape.jpg": "unsafe path",
        "/abs/evil.jpg": "unsafe path",
        "zlink.jpg": "link",
    }
    assert len(tar_manifest["images"]) == len(zip_manifest["images"]) == 5
    after = set(os.listdir(tmp_path)) | set(os.listdir(tmp_path.parent))
    assert after - before == {"out_tar", "out_zip"}


def test_a_symlink_inside_the_input_folder_is_read_and_one_outside_is_not(
    tmp_path: Path,
) -> None:
    folder, members = good_folder(tmp_path, 3)
    (folder / "inside_link.jpg").symlink_to(folder / members[0][0])
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.jpg").write_bytes(bundled_members(5)[4][1])
    (folder / "outside_dir").symlink_to(tmp_path / "secret")
    manifest = ingest(folder, tmp_path / "out")
    assert reasons(manifest) == {"inside_link.jpg": "exact duplicate", "outside_dir": "link"}
    assert len(manifest["images"]) == 3


def test_the_same_photo_reencoded_is_grouped_and_never_straddles_splits(
    tmp_path: Path,
) -> None:
    members = bundled_members(40)
    copies = [(f"reencoded_{i}.jpg", reencoded(raw, 60 + i)) for i, (_, raw) in enumerate(members)]
    for seed in range(3):
        manifest = ingest(
            make_tar(tmp_path / f"{seed}.tar", members + copies),
            tmp_path / f"out{seed}",
            seed=seed,
            val_fraction=0.25,
            test_fraction=0.25,
        )
        got = reasons(manifest)
        assert sorted(got.values()) == ["near duplicate"] * 40
        # one photo of each pair kept, so no photo lies in two splits
        assert len(manifest["images"]) == 40
        for record in manifest["images"]:
            assert len(record["near_duplicates"]) == 1
            (copy,) = record["near_duplicates"]
            assert {record["name"], copy} in [
                {name, f"reencoded_{i}.jpg"} for i, (name, _) in enumerate(members)
            ]


def test_a_source_with_no_usable_image_is_an_error_naming_what_was_seen(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.jpg").write_text("text")
    with pytest.raises(NoUsableImageError, match="no decodable image.*1 empty file"):
        ingest(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_jpeg_size_reads_the_frame_header_only() -> None:
    raw = bundled_members(1)[0][1]
    assert jpeg_size(raw) == (64, 64)
    assert jpeg_size(raw[:20]) is None


def test_pillow_path_reports_truncation() -> None:
    raw = png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(Exception, match="truncated|corrupt"):
        decode_with_pillow(raw[: len(raw) - 30])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vae_cats.data.ingest", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_DIR,
    )


def test_cli_prints_the_summary_table_and_writes_the_report(tmp_path: Path) -> None:
    folder, _ = good_folder(tmp_path, 6)
    (folder / "zero.jpg").write_bytes(b"")
    result = run_cli(str(folder), "--out", str(tmp_path / "out"), "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "| kept" in result.stdout and "|       6 |" in result.stdout
    assert "| rejected: empty file |       1 |" in result.stdout
    report = json.loads((tmp_path / "out" / "cats" / "ingest_report.json").read_text())
    assert report["num_kept"] == 6 and report["rejected_per_reason"] == {"empty file": 1}
    manifest = json.loads((tmp_path / "out" / "cats" / "manifest.json").read_text())
    assert manifest["seed"] == 3


@pytest.mark.parametrize("kind", ["missing", "junk"])
def test_cli_bad_source_is_a_one_line_error_and_exit_2(tmp_path: Path, kind: str) -> None:
    source = tmp_path / kind
    if kind == "junk":
        source.mkdir()
        (source / "x.jpg").write_text("not a photo")
    result = run_cli(str(source), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(source) in lines[0]
    assert "Traceback" not in result.stderr


def test_pillow_path_decodes_like_the_torchvision_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import bundled_members
    from vae_cats.data import ingest

    raws = [raw for _, raw in bundled_members(8)]
    fast = ingest.decode_many(raws)
    monkeypatch.setattr(ingest, "has_torchvision", lambda: False)

    def no_torchvision(raws: list[bytes]) -> list[torch.Tensor | str]:
        raise ModuleNotFoundError("No module named 'torchvision'")

    # As in the slim predict image: the torchvision path must not even be entered.
    monkeypatch.setattr(ingest, "_decode_jpegs", no_torchvision)
    slow = ingest.decode_many(raws)
    for a, b in zip(fast, slow, strict=True):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        assert (a.int() - b.int()).abs().max() <= 3
