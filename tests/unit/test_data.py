import random
import zipfile
from pathlib import Path

import pytest
import torch

from tests.helpers import bundled_members, make_tar
from vae_cats.data.datamodule import CatFacesDataModule
from vae_cats.data.ingest import BUNDLED_SAMPLE, ingest, split_assignment


def test_ingest_removes_exact_duplicates_before_the_split(
    real_folder: Path, tmp_path: Path
) -> None:
    manifest = ingest(real_folder, tmp_path / "out", seed=0, val_fraction=0.2, test_fraction=0.2)
    assert manifest["num_files"] == 47
    assert manifest["num_duplicates"] == 7
    assert len(manifest["images"]) == 40
    images = torch.load(tmp_path / "out" / "images.pt", weights_only=True)
    assert images.shape == (40, 3, 64, 64) and images.dtype == torch.uint8
    hashes = [r["sha256"] for r in manifest["images"]]
    assert len(set(hashes)) == 40
    splits = {
        s: {r["sha256"] for r in manifest["images"] if r["split"] == s}
        for s in ("train", "val", "test")
    }
    assert not (
        splits["train"] & splits["val"]
        or splits["train"] & splits["test"]
        or splits["val"] & splits["test"]
    )
    assert (len(splits["val"]), len(splits["test"])) == (8, 8)
    copies = [name for r in manifest["images"] for name in r["duplicates"]]
    assert sorted(copies) == sorted(
        [f"copy_{i}.jpg" for i in range(5)] + ["copy_again_0.jpg", "copy_again_1.jpg"]
    )


def test_same_seed_same_split_whatever_the_file_order(tmp_path: Path) -> None:
    members = bundled_members(30)
    shuffled = members[:]
    random.Random(3).shuffle(shuffled)
    renamed = [(f"renamed_{i}.jpg", raw) for i, (_, raw) in enumerate(shuffled)]
    a = ingest(make_tar(tmp_path / "a.tar", members), tmp_path / "a", seed=5)
    b = ingest(make_tar(tmp_path / "b.tar", renamed), tmp_path / "b", seed=5)
    c = ingest(make_tar(tmp_path / "c.tar", members), tmp_path / "c", seed=6)
    assert a["data_hash"] == b["data_hash"]
    assert a["data_hash"] != c["data_hash"]


def test_ingest_reads_zip_archives(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "cats.zip", "w") as archive:
        for name, raw in bundled_members(12):
            archive.writestr(f"inner/{name}", raw)
    manifest = ingest(tmp_path / "cats.zip", tmp_path / "out")
    assert len(manifest["images"]) == 12


def test_ingest_reports_undecodable_files_and_keeps_the_rest(
    real_folder: Path, tmp_path: Path
) -> None:
    (real_folder / "broken.jpg").write_bytes(b"not an image at all")
    manifest = ingest(real_folder, tmp_path / "out")
    assert "broken.jpg" in manifest["rejected"]
    assert len(manifest["images"]) == 40


def test_ingest_of_nothing_usable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="no decodable image"):
        ingest(tmp_path / "empty", tmp_path / "out")


def test_ingest_of_a_missing_source_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ingest(tmp_path / "nowhere", tmp_path / "out")


def test_split_assignment_fractions() -> None:
    hashes = [f"{i:064x}" for i in range(1000)]
    splits = split_assignment(hashes, seed=1, val_fraction=0.1, test_fraction=0.1)
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (800, 100, 100)


def test_bundled_sample_is_1024_distinct_files_of_1022_distinct_photos(tmp_path: Path) -> None:
    manifest = ingest(BUNDLED_SAMPLE, tmp_path / "out")
    assert manifest["num_files"] == 1024 and manifest["num_duplicates"] == 0
    # two pairs are the same photo cropped a little differently: one of each pair is kept
    assert manifest["num_near_duplicates"] == 2 and len(manifest["images"]) == 1022
    assert BUNDLED_SAMPLE.stat().st_size < 6_000_000


def test_datamodule_serves_float_batches_and_flips_only_in_training(
    real_folder: Path, tmp_path: Path
) -> None:
    dm = CatFacesDataModule(
        source=str(real_folder), processed_dir=str(tmp_path), batch_size=8, flip_prob=1.0
    )
    dm.prepare_data()
    dm.setup("fit")
    assert sum(len(t) for t in dm.splits.values()) == 40
    batch = next(iter(dm.val_dataloader()))
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 64, 64)
    x = dm.on_after_batch_transfer(batch, 0)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, batch.float() / 255)
    manifest = dm.manifest
    assert manifest["source"] == "cats"


def test_prepare_data_reuses_an_ingest_until_the_source_changes(
    real_folder: Path, tmp_path: Path
) -> None:
    processed = tmp_path / "processed"

    def prepare() -> CatFacesDataModule:
        dm = CatFacesDataModule(source=str(real_folder), processed_dir=str(processed))
        dm.prepare_data()
        return dm

    first = prepare().processed_dir.joinpath("manifest.json").stat().st_mtime_ns
    assert (
        prepare().processed_dir.joinpath("manifest.json").stat().st_mtime_ns == first
    )  # unchanged source: reused
    # A new face arrives (as after a `dvc pull`): the next run ingests again and keeps it.
    name, raw = bundled_members(41)[40]
    (real_folder / name).write_bytes(raw)
    dm = prepare()
    assert dm.processed_dir.joinpath("manifest.json").stat().st_mtime_ns != first
    assert len(dm.manifest["images"]) == 41
