"""The Lightning DataModule: ingest settings checked when it is made, float batches, flips only
in training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from vae_cats.data.datamodule import CatFacesDataModule
from vae_cats.data.settings import IngestSettings


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
    n_val = len(dm.splits["val"])  # the hash-bucket split: about 10% of 40, not exactly 4
    assert 0 < n_val and batch.dtype == torch.uint8 and batch.shape == (min(8, n_val), 3, 64, 64)
    x = dm.on_after_batch_transfer(batch, 0)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, batch.float() / 255)
    assert dm.manifest["source"] == "cats"


def test_the_datamodule_records_its_ingest_settings_in_the_manifest(
    real_folder: Path, tmp_path: Path
) -> None:
    dm = CatFacesDataModule(
        source=str(real_folder), processed_dir=str(tmp_path), seed=3, val_fraction=0.2
    )
    assert dm.settings == IngestSettings(seed=3, val_fraction=0.2)
    dm.prepare_data()
    manifest = dm.manifest
    assert {k: manifest[k] for k in IngestSettings.__dataclass_fields__} == (dm.settings.as_dict())


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"image_size": 4}, "image_size must be at least 8"),
        ({"image_size": "64"}, "image_size must be of type int"),
        ({"seed": 1.5}, "seed must be of type int"),
        ({"val_fraction": 1.0}, "val_fraction must lie in [0, 1)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction"),
        ({"wrong_size": "crop"}, "wrong_size must be one of"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_a_bad_setting_is_refused_when_the_datamodule_is_made(
    tmp_path: Path, kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        CatFacesDataModule(source="bundled", processed_dir=str(tmp_path), **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
