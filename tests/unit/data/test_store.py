"""Processed ingests on disk, without Lightning: reused while current, loaded by split."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import bundled_members
from vae_cats.data.ingest import processed_subdir
from vae_cats.data.settings import IngestSettings
from vae_cats.data.store import ingested_splits, is_current, load_splits, prepare


def test_prepare_reuses_an_ingest_until_the_source_changes(
    real_folder: Path, tmp_path: Path
) -> None:
    processed = processed_subdir(tmp_path / "processed", real_folder)
    manifest_file = processed / "manifest.json"
    prepare(real_folder, processed, IngestSettings())
    first = manifest_file.stat().st_mtime_ns
    prepare(real_folder, processed, IngestSettings())
    assert manifest_file.stat().st_mtime_ns == first  # unchanged source: reused
    # Other settings: ingested again.
    assert not is_current(processed, real_folder, IngestSettings(seed=1))
    # A new face arrives (as after a `dvc pull`): the next run ingests again and keeps it.
    name, raw = bundled_members(41)[40]
    (real_folder / name).write_bytes(raw)
    assert not is_current(processed, real_folder, IngestSettings())
    manifest = prepare(real_folder, processed, IngestSettings())
    assert manifest_file.stat().st_mtime_ns != first
    assert len(manifest["images"]) == 41


def test_an_ingest_made_by_an_older_version_is_not_reused(
    real_folder: Path, tmp_path: Path
) -> None:
    processed = tmp_path / "processed"
    prepare(real_folder, processed, IngestSettings())
    assert is_current(processed, real_folder, IngestSettings())
    manifest = json.loads((processed / "manifest.json").read_text())
    del manifest["ingest_version"]  # as written before the ingest was split into stages
    (processed / "manifest.json").write_text(json.dumps(manifest))
    assert not is_current(processed, real_folder, IngestSettings())


def test_load_splits_gives_each_split_its_images(real_folder: Path, tmp_path: Path) -> None:
    settings = IngestSettings(val_fraction=0.2, test_fraction=0.2)
    manifest = prepare(real_folder, tmp_path / "processed", settings)
    splits = load_splits(tmp_path / "processed")
    # Hash buckets: 24 / 8 / 8 in expectation; each split holds exactly its manifest records.
    counts = {
        s: sum(r["split"] == s for r in manifest["images"]) for s in ("train", "val", "test")
    }
    assert {k: len(v) for k, v in splits.items()} == counts and sum(counts.values()) == 40
    images = torch.load(tmp_path / "processed" / "images.pt", weights_only=True)
    test_rows = [i for i, r in enumerate(manifest["images"]) if r["split"] == "test"]
    assert torch.equal(splits["test"], images[test_rows])


def test_ingested_splits_of_the_bundled_sample_leave_nothing_behind() -> None:
    splits = ingested_splits("bundled", seed=0)
    assert sum(len(v) for v in splits.values()) == 1022
    assert all(v.dtype == torch.uint8 and v.shape[1:] == (3, 64, 64) for v in splits.values())
