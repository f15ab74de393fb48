"""Light training augmentation: off by default, faces stay in range and in place, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vae_cats.data.datamodule import CatFacesDataModule, light_augmentation
from vae_cats.data.store import load_splits
from vae_cats.images import to_float


@pytest.fixture
def faces(real_folder: Path, tmp_path: Path) -> torch.Tensor:
    dm = CatFacesDataModule(source=str(real_folder), processed_dir=str(tmp_path))
    dm.prepare_data()
    return to_float(load_splits(dm.processed_dir)["train"][:16])


def test_no_augmentation_by_default() -> None:
    assert light_augmentation(0.0, 0.0, 0.0) is None
    assert CatFacesDataModule(source="bundled").augment is None


def test_augmented_faces_stay_in_range_close_to_the_original_and_are_seeded(
    faces: torch.Tensor,
) -> None:
    augment = light_augmentation(shift=0.05, scale=0.1, color_jitter=0.1)
    assert augment is not None
    torch.manual_seed(0)
    a = augment(faces)
    torch.manual_seed(0)
    b = augment(faces)
    assert torch.equal(a, b)  # from torch's global generator, which checkpoints carry
    assert a.shape == faces.shape and a.min() >= 0 and a.max() <= 1
    change = (a - faces).abs().mean(dim=(1, 2, 3))
    assert (change > 0.005).all()  # every face moved or changed colour ...
    # ... and stayed closest to itself among the faces: still the same face.
    distances = torch.cdist(a.flatten(1), faces.flatten(1))
    assert torch.equal(distances.argmin(dim=1), torch.arange(len(faces)))


def test_augmentation_runs_in_training_only(real_folder: Path, tmp_path: Path) -> None:
    dm = CatFacesDataModule(
        source=str(real_folder),
        processed_dir=str(tmp_path),
        batch_size=8,
        flip_prob=0.0,
        color_jitter=0.3,
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    dm.trainer = pl.Trainer(logger=False, enable_progress_bar=False)
    dm.trainer.training = True
    trained = dm.on_after_batch_transfer(batch, 0)
    dm.trainer.validating = True
    assert not torch.equal(trained, to_float(batch))
    assert torch.equal(dm.on_after_batch_transfer(batch, 0), to_float(batch))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"shift": 0.5}, "shift"), ({"scale": -0.1}, "scale"), ({"color_jitter": 1.5}, "color")],
)
def test_impossible_strengths_are_refused_naming_them(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        light_augmentation(**{"shift": 0.0, "scale": 0.0, "color_jitter": 0.0, **kwargs})
