"""The hash-bucket split: a photo's split is a function of its own pixels and the seed, so a
new data version that adds photos moves none of the old ones (checked on real ingests with
the data diff), while a photo that really changes split still fails the diff's rule."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import bundled_members
from vae_cats.data.diff import diff_paths
from vae_cats.data.ingest import ingest, split_assignment, split_bucket

MEMBERS = bundled_members(150)


def write_folder(folder: Path, members: list[tuple[str, bytes]]) -> Path:
    folder.mkdir(parents=True)
    for name, raw in members:
        (folder / name).write_bytes(raw)
    return folder


def test_a_keys_split_depends_on_that_key_and_the_seed_only() -> None:
    keys = [f"{i:064x}" for i in range(2000)]
    alone = [split_assignment([k], 42, 0.1, 0.1)[0] for k in keys]
    together = split_assignment(keys, 42, 0.1, 0.1)
    shuffled = split_assignment(keys[::-1], 42, 0.1, 0.1)[::-1]
    assert alone == together == shuffled
    assert split_assignment(keys, 7, 0.1, 0.1) != together, "the seed chooses the split"
    # The fractions hold in expectation: 200 expected each, binomial sd about 13.
    assert 160 <= together.count("test") <= 240 and 160 <= together.count("val") <= 240
    assert all(0 <= split_bucket(k, 42) < 1 for k in keys[:10])


def test_fractions_of_zero_put_everything_in_train() -> None:
    keys = [f"{i:064x}" for i in range(50)]
    assert set(split_assignment(keys, 42, 0.0, 0.0)) == {"train"}


def test_adding_50_faces_moves_no_photo_and_the_diff_passes(tmp_path: Path) -> None:
    ingest(write_folder(tmp_path / "raw1", MEMBERS[:100]), tmp_path / "v1")
    ingest(write_folder(tmp_path / "raw2", MEMBERS), tmp_path / "v2")
    diff = diff_paths(tmp_path / "v1", tmp_path / "v2")
    assert len(diff.added) == 50 and diff.removed == []
    assert diff.split_changes == [] and diff.split_transitions == {}
    assert diff.passed, [(r.name, r.detail) for r in diff.rules]
    old = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    new = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    new_split = {r["sha256"]: r["split"] for r in new["images"]}
    assert all(new_split[r["sha256"]] == r["split"] for r in old["images"])
    assert new["data_hash"] != old["data_hash"], "the added photos are in the hash"


def test_a_photo_that_really_moves_from_train_to_test_still_fails(tmp_path: Path) -> None:
    ingest(write_folder(tmp_path / "raw", MEMBERS[:100]), tmp_path / "v1")
    moved = tmp_path / "v2"
    moved.mkdir()
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    record = next(r for r in manifest["images"] if r["split"] == "train")
    record["split"] = "test"  # as a changed split rule or a hand edit would
    (moved / "manifest.json").write_text(json.dumps(manifest))
    diff = diff_paths(tmp_path / "v1", moved)
    assert diff.split_transitions == {"train -> test": 1}
    rule = next(r for r in diff.rules if r.name == "no image moves from train to test")
    assert not rule.passed and not diff.passed
