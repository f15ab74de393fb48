"""The data diff on two real versions of a small folder of cat faces, ingested for real, and on
hand-written manifests for the edge cases of its definitions."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.helpers import PROJECT_DIR, bundled_members
from vae_cats.data.diff import DataDiff, diff_paths, diff_versions, main, parse_manifest
from vae_cats.data.ingest import ingest

MEMBERS = bundled_members(58)
NAMES = [name for name, _ in MEMBERS]


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def reencoded(raw: bytes, quality: int) -> bytes:
    """The same photo saved again as a JPEG of another quality: a near duplicate."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(raw)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def old_files() -> dict[str, bytes]:
    """50 faces, an exact copy of the first one, and a text file named .jpg."""
    files = dict(MEMBERS[:50])
    files["copy_a.jpg"] = MEMBERS[0][1]
    files["broken.jpg"] = b"not an image at all"
    return files


def new_files() -> dict[str, bytes]:
    """Old minus 5 faces, plus 8 new faces, one face truncated in place, a second exact copy
    and a re-encoded copy of face 8 (near duplicate)."""
    files = old_files()
    for name in NAMES[45:50]:
        del files[name]
    files.update(MEMBERS[50:58])
    files[NAMES[10]] = MEMBERS[10][1][: len(MEMBERS[10][1]) // 2]
    files["copy_b.jpg"] = MEMBERS[1][1]
    files["reencoded.jpg"] = reencoded(MEMBERS[8][1], quality=70)
    return files


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Processed ingests of the old folder, the new folder and the old folder plus one more
    exact copy (same kept images)."""
    root = tmp_path_factory.mktemp("data_versions")
    copy_only = {**old_files(), "copy_c.jpg": MEMBERS[5][1]}
    out = {}
    for label, files in (("old", old_files()), ("new", new_files()), ("copy", copy_only)):
        ingest(write_folder(root / "raw" / label, files), root / label)
        out[label] = root / label
    return out


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def test_real_versions_every_count(versions: dict[str, Path]) -> None:
    diff = diff_paths(versions["old"], versions["new"])
    old, new = manifest(versions["old"]), manifest(versions["new"])
    # The near duplicate pair: the ingest keeps the image with the smaller pixel sha256.
    near = {name for name, why in new["rejected"].items() if why.startswith("near duplicate")}
    assert len(near) == 1 and near <= {NAMES[8], "reencoded.jpg"}

    assert diff.old_data_hash == old["data_hash"] and diff.new_data_hash == new["data_hash"]
    assert diff.old_data_hash != diff.new_data_hash
    assert diff.counts["files"] == (52, 57)
    assert diff.counts["kept images"] == (50, 52)  # -5 removed, -1 truncated, +8 added
    assert diff.counts["rejected"] == (2, 5)
    assert diff.counts["num_duplicates"] == (1, 2)
    assert diff.counts["num_near_duplicates"] == (0, 1)
    assert diff.added == sorted([*NAMES[50:58], "copy_b.jpg", "reencoded.jpg"])
    assert diff.removed == sorted(NAMES[45:50])
    assert diff.newly_rejected == {
        "exact duplicate": ["copy_b.jpg"],
        "near duplicate": sorted(near),
        "truncated image": [NAMES[10]],
    }
    assert diff.no_longer_rejected == []
    assert diff.settings_changed == {}

    # Splits, checked against the manifests read plainly: each kept file of NEW against the
    # split its file had in OLD (no file was renamed here).
    old_of = effective_splits(old)
    new_kept = {r["name"]: r["split"] for r in new["images"]}
    moved = {n for n in new_kept.keys() & old_of.keys() if old_of[n] != new_kept[n]}
    assert {c["name"] for c in diff.split_changes} == moved
    # Hash buckets: a photo keeps its split across versions. Only one whose split key (the
    # smallest pixel sha256 of its copies) changed could move: face 8, whose new near
    # duplicate may have the smaller hash.
    assert moved <= {NAMES[8]}, "adding, removing or truncating others moves no photo"
    train_to_test = sum(old_of[n] == "train" and new_kept[n] == "test" for n in moved)
    assert diff.split_transitions.get("train -> test", 0) == train_to_test
    assert sum(diff.split_transitions.values()) == len(moved)

    # Copies in NEW whose photo sat in another split in OLD, from the manifests read plainly.
    new_of = effective_splits(new)
    copies = sorted(name for r in new["images"] for name in r["duplicates"] + r["near_duplicates"])
    assert copies == sorted(["copy_a.jpg", "copy_b.jpg", *near])
    straddling = [n for n in copies if n in old_of and old_of[n] != new_of[n]]
    assert [d["name"] for d in diff.straddling_duplicates] == straddling

    rules = {r.name: r.passed for r in diff.rules}
    assert rules == {
        "kept images drop by at most 5%": True,
        "no image moves from train to test": train_to_test
        + sum(
            d["old_split"] == "train" and d["new_split"] == "test"
            for d in diff.straddling_duplicates
        )
        == 0,
        "no new rejection reason": False,  # truncated image and near duplicate are new
    }
    assert "near duplicate, truncated image" in diff.rules[2].detail
    assert not diff.passed


def effective_splits(manifest: dict[str, Any]) -> dict[str, str]:
    """Every kept file and dropped copy -> the split of its kept image."""
    return {
        name: r["split"]
        for r in manifest["images"]
        for name in [r["name"], *r["duplicates"], *r["near_duplicates"]]
    }


def test_real_added_copy_keeps_every_split_and_passes(versions: dict[str, Path]) -> None:
    diff = diff_paths(versions["old"], versions["copy"])
    assert diff.added == ["copy_c.jpg"]
    assert diff.removed == [] and diff.split_changes == [] and diff.straddling_duplicates == []
    assert diff.newly_rejected == {"exact duplicate": ["copy_c.jpg"]}
    assert diff.old_data_hash == diff.new_data_hash  # same pixels, same splits
    assert diff.passed


def test_identical_versions_show_no_change(versions: dict[str, Path]) -> None:
    diff = diff_paths(versions["new"], versions["new"] / "manifest.json")
    assert (diff.added, diff.removed, diff.newly_rejected, diff.split_changes) == ([], [], {}, [])
    assert all(old == new for old, new in diff.counts.values())
    # The same manifest on both sides passes rule 3 even though it has reasons OLD "lacked".
    assert diff.passed


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vae_cats.data.diff", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_DIR,
    )


def test_cli_prints_the_table_and_fails_a_rule_with_exit_1(versions: dict[str, Path]) -> None:
    result = run_cli(versions["old"], versions["new"])
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"old data_hash: {manifest(versions['old'])['data_hash']}" in out
    assert "| kept images | 50 | 52 | +2 (+4.0%) |" in out
    assert "| files added | 10 |" in out and "| files removed | 5 |" in out
    assert "| newly rejected: truncated image | 1 |" in out
    assert "| no new rejection reason | FAIL | near duplicate, truncated image |" in out
    assert f"- newly rejected: truncated image: {NAMES[10]}" in out


def test_each_count_is_reported_once(versions: dict[str, Path]) -> None:
    """Issue 22: num_files beside files and num_kept beside kept images, also in --json."""
    diff = diff_paths(versions["old"], versions["new"])
    assert list(diff.counts)[:3] == ["files", "kept images", "rejected"]
    assert [k for k in diff.counts if k.startswith("num_")] == [
        "num_duplicates",
        "num_near_duplicates",
    ]
    new = manifest(versions["new"])
    assert diff.counts["files"][1] == new["num_files"]
    assert diff.counts["kept images"][1] == new["num_kept"]
    text = run_cli(versions["old"], versions["new"]).stdout
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    count_rows = rows[: rows.index("change")]
    assert count_rows == ["count", *diff.counts]
    data = json.loads(run_cli(versions["old"], versions["new"], "--json").stdout)
    assert list(data["counts"]) == list(diff.counts)


def test_cli_json_holds_every_list_and_exit_0_when_rules_pass(
    versions: dict[str, Path],
) -> None:
    result = run_cli(versions["old"], versions["copy"], "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["added"] == ["copy_c.jpg"]
    assert data["counts"]["kept images"] == [50, 50]
    assert [r["passed"] for r in data["rules"]] == [True, True, True]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file or folder"),
        ("folder", "no manifest.json"),
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"images": 3}', "field 'images' is missing or not a list"),
        ('{"images": [{"name": "a.jpg", "split": "train"}]}', "field 'sha256'"),
        ('{"images": [], "rejected": 7}', "field 'rejected'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, versions: dict[str, Path], content: str | None, message: str
) -> None:
    bad = tmp_path / "bad.json"
    if content == "folder":
        bad = tmp_path
    elif content is not None:
        bad.write_text(content)
    result = run_cli(versions["old"], bad)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def fake_manifest(images: list[tuple[str, str, str, list[str]]], rejected: Any) -> dict[str, Any]:
    return {
        "images": [
            {"name": n, "sha256": h, "split": s, "duplicates": d, "near_duplicates": []}
            for n, h, s, d in images
        ],
        "rejected": rejected,
        "seed": 42,
    }


def diff_of(old: dict[str, Any], new: dict[str, Any]) -> DataDiff:
    return diff_versions(parse_manifest(old), parse_manifest(new))


def test_a_kept_photo_that_becomes_a_copy_in_another_split_straddles() -> None:
    # b.jpg was kept in test; a near duplicate with a smaller hash now keeps it, in train.
    old = fake_manifest([("a.jpg", "h1", "train", []), ("b.jpg", "h2", "test", [])], {})
    new = fake_manifest(
        [("a.jpg", "h1", "train", []), ("b0.jpg", "h0", "train", [])],
        {"b.jpg": "near duplicate: same photo as b0.jpg"},
    )
    new["images"][1]["near_duplicates"] = ["b.jpg"]
    diff = diff_of(old, new)
    assert diff.straddling_duplicates == [
        {"name": "b.jpg", "kept_as": "b0.jpg", "old_split": "test", "new_split": "train"}
    ]
    assert diff.split_changes == []
    assert [r.passed for r in diff.rules] == [True, True, False]


def test_a_renamed_file_is_followed_by_its_split_key() -> None:
    old = fake_manifest([("a.jpg", "h1", "train", []), ("b.jpg", "h2", "val", [])], {})
    new = fake_manifest([("a2.jpg", "h1", "test", []), ("b.jpg", "h2", "val", [])], {})
    new["images"][0]["split_key"] = "h1"
    diff = diff_of(old, new)
    assert diff.added == ["a2.jpg"] and diff.removed == ["a.jpg"]
    assert diff.split_changes == [
        {"split_key": "h1", "name": "a2.jpg", "old_split": "train", "new_split": "test"}
    ]
    assert [r.passed for r in diff.rules] == [True, False, True]


def test_a_kept_file_whose_photo_changed_key_is_followed_by_name() -> None:
    # A copy with a smaller hash joined b.jpg's photo: the split key changed, b.jpg is still
    # kept, in another split.
    old = fake_manifest([("b.jpg", "h5", "test", [])], {})
    new = fake_manifest([("b.jpg", "h5", "train", [])], {"b0.jpg": "near duplicate"})
    new["images"][0].update(split_key="h0", near_duplicates=["b0.jpg"])
    diff = diff_of(old, new)
    assert diff.split_changes == [
        {"split_key": "h0", "name": "b.jpg", "old_split": "test", "new_split": "train"}
    ]
    assert diff.straddling_duplicates == []  # b0.jpg is new: it sat in no split before


def test_train_to_test_move_and_a_big_drop_fail_their_rules() -> None:
    images = [(f"{i}.jpg", f"h{i}", "train", []) for i in range(20)]
    old = fake_manifest(images, {})
    moved = [("0.jpg", "h0", "test", [])] + images[1:18]  # 2 of 20 gone: -10%
    diff = diff_of(old, fake_manifest(moved, {}))
    assert diff.split_transitions == {"train -> test": 1}
    assert [r.passed for r in diff.rules] == [False, False, True]
    assert diff.rules[0].detail == "20 -> 18 (-10.0%)"


def test_rejected_as_a_list_of_records_and_missing_optional_fields() -> None:
    old = {"images": [{"name": "a.jpg", "sha256": "h1", "split": "val"}]}
    new = {
        "images": [{"name": "a.jpg", "sha256": "h1", "split": "val"}],
        "rejected": [{"name": "x.jpg", "reason": "corrupt image", "detail": "bad"}],
        "num_resized": 3,
    }
    diff = diff_of(old, new)
    assert diff.newly_rejected == {"corrupt image": ["x.jpg"]}
    assert diff.counts["num_resized"] == (None, 3)
    assert diff.old_data_hash is None
    assert diff.rules[2].detail == "corrupt image"


def test_a_reason_that_changes_counts_as_newly_rejected_under_its_new_reason() -> None:
    old = fake_manifest([("a.jpg", "h1", "val", [])], {"x.jpg": "corrupt image: bad"})
    new = fake_manifest([("a.jpg", "h1", "val", []), ("x.jpg", "h2", "train", [])], {})
    diff = diff_of(old, new)
    assert diff.no_longer_rejected == ["x.jpg"] and diff.newly_rejected == {}
    back = diff_of(new, old)
    assert back.newly_rejected == {"corrupt image": ["x.jpg"]}


def test_changed_settings_are_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    old = fake_manifest([("a.jpg", "h1", "val", [])], {})
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps({**old, "seed": 7}))
    assert main([str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    assert "setting seed changed: 42 -> 7" in capsys.readouterr().out
