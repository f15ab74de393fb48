"""Reading sources: every entry of a folder, tar or zip is read or rejected with a reason by the
one shared check; nothing is extracted or followed."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.helpers import bundled_members, hostile_tar, make_tar
from vae_cats.data.sources import (
    BUNDLED_SAMPLE,
    FILE,
    LINKED,
    Entry,
    SourceFiles,
    check_entry,
    looks_like_image,
    read_source,
    resolve_source,
)


def reasons(read: SourceFiles) -> dict[str, str]:
    return {r.name: r.reason for r in read.rejections}


def names(read: SourceFiles) -> set[str]:
    return {name for name, _ in read.files}


def test_archive_members_with_unsafe_paths_and_links_are_rejected_not_read(
    tmp_path: Path,
) -> None:
    members = bundled_members(3)
    evil = members[0][1]
    tar_path = hostile_tar(tmp_path / "cats.tar", members)
    with tarfile.open(tar_path, "a") as archive:
        hard = tarfile.TarInfo("hard.jpg")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside.jpg"
        archive.addfile(hard)
        fifo = tarfile.TarInfo("pipe.jpg")
        fifo.type = tarfile.FIFOTYPE
        archive.addfile(fifo)
    zip_path = tmp_path / "cats.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for name, raw in members[1:]:
            archive.writestr(name, raw)
        archive.writestr("../escape.jpg", evil)
        archive.writestr("C:/abs/evil.jpg", evil)
        symlink = zipfile.ZipInfo("zlink.jpg")
        symlink.external_attr = 0o120777 << 16
        archive.writestr(symlink, "/etc/passwd")
    tar_read, zip_read = read_source(tar_path), read_source(zip_path)
    assert reasons(tar_read) == {
        "../escape.jpg": "unsafe path",
        "/abs/evil.jpg": "unsafe path",
        "link.jpg": "link",
        "hard.jpg": "link",
        "pipe.jpg": "not a regular file",
    }
    assert reasons(zip_read) == {
        "../escape.jpg": "unsafe path",
        "C:/abs/evil.jpg": "unsafe path",
        "zlink.jpg": "link",
    }
    expected = {name: raw for name, raw in members[1:]}
    assert dict(tar_read.files) == expected == dict(zip_read.files)
    assert tar_read.num_files == 7 and zip_read.num_files == 5


def test_a_symlink_inside_the_folder_is_read_and_one_leaving_it_is_not(tmp_path: Path) -> None:
    folder = tmp_path / "cats"
    folder.mkdir()
    (name, raw), (_, secret) = bundled_members(2)
    (folder / name).write_bytes(raw)
    (folder / "inside_link.jpg").symlink_to(folder / name)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.jpg").write_bytes(secret)
    (folder / "outside_dir").symlink_to(tmp_path / "secret")
    (folder / "outside.jpg").symlink_to(tmp_path / "secret" / "x.jpg")
    read = read_source(folder)
    assert dict(read.files) == {name: raw, "inside_link.jpg": raw}
    assert reasons(read) == {"outside_dir": "link", "outside.jpg": "link"}


def test_a_file_without_image_suffix_is_read_by_content_and_other_files_are_listed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "cats"
    (folder / "sub").mkdir(parents=True)
    (name, raw), (_, other) = bundled_members(2)
    (folder / name).write_bytes(raw)
    (folder / "sub" / "cat_without_suffix").write_bytes(other)
    (folder / "notes.txt").write_text("not a photo")
    os.mkfifo(folder / "pipe.jpg")  # reading it would block forever
    read = read_source(folder)
    assert dict(read.files) == {name: raw, "sub/cat_without_suffix": other}
    assert reasons(read) == {"notes.txt": "unsupported file", "pipe.jpg": "not a regular file"}
    assert read.num_files == 4


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    members = bundled_members(2)
    small = min(len(raw) for _, raw in members)
    for source in (make_tar(tmp_path / "cats.tar", members), tmp_path / "cats.zip"):
        if source.suffix == ".zip":
            with zipfile.ZipFile(source, "w") as archive:
                for name, raw in members:
                    archive.writestr(name, raw)
        read = read_source(source, max_file_bytes=small)
        big = max(members, key=lambda m: len(m[1]))[0]
        assert reasons(read) == {big: "file too large"}
        assert read.rejections[0].detail == f"{len(dict(members)[big])} bytes > {small}"


def test_an_encrypted_zip_member_is_unreadable_and_the_others_are_read(tmp_path: Path) -> None:
    (name, raw), (other, other_raw) = bundled_members(2)
    path = tmp_path / "cats.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, raw)
        archive.writestr(other, other_raw)
    data = bytearray(path.read_bytes())
    # Mark the first member encrypted (general purpose flag bit 0) in both of its headers.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + offset] |= 1
    path.write_bytes(bytes(data))
    read = read_source(path)
    assert dict(read.files) == {other: other_raw}
    (rejection,) = read.rejections
    assert (rejection.name, rejection.reason) == (name, "unreadable")
    assert "encrypted" in rejection.detail


def test_the_one_check_gives_the_same_verdict_for_every_kind_of_source() -> None:
    def entry(name: str, kind: str = FILE, size: int = 10) -> Entry:
        return Entry(name, kind, size, lambda limit: b"", "to /etc/passwd")

    assert check_entry(entry("a/b.jpg"), 100) is None
    verdicts = {
        name: (r.reason if (r := check_entry(e, 100)) else None)
        for name, e in {
            "dotdot": entry("a/../../b.jpg"),
            "absolute": entry("/b.jpg"),
            "windows": entry("a\\..\\b.jpg"),
            "link": entry("b.jpg", LINKED),
            "big": entry("b.jpg", size=101),
        }.items()
    }
    assert verdicts == {
        "dotdot": "unsafe path",
        "absolute": "unsafe path",
        "windows": "unsafe path",
        "link": "link",
        "big": "file too large",
    }


def test_image_signatures_are_recognised_and_text_is_not() -> None:
    assert looks_like_image(bundled_members(1)[0][1][:16])
    assert looks_like_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    assert not looks_like_image(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert not looks_like_image(b"just some text")


def test_a_source_that_is_no_folder_or_archive_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("text")
    with pytest.raises(ValueError, match="not a folder, .tar or .zip"):
        read_source(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError, match="nowhere.*dvc pull"):
        read_source(tmp_path / "nowhere")


def test_resolve_source_names_the_bundled_sample_and_paths() -> None:
    assert resolve_source("bundled") == BUNDLED_SAMPLE
    assert resolve_source("some/folder") == Path("some/folder")
    assert resolve_source(None).exists()
