"""Cat-face data served to Lightning from memory; the ingest itself lives in
``vae_cats.data.ingest``, its settings in ``vae_cats.data.settings``, the processed copy on
disk in ``vae_cats.data.store``.

``CatFacesDataModule.prepare_data`` runs ``ingest`` (validate, deduplicate, split) once per
source, source version and settings, into ``processed_dir/<source name>/``: ``images.pt`` (uint8
(N, 3, S, S)), ``manifest.json`` (each image's pixel sha256 and split, every excluded file
and why, the ``data_hash``) and ``ingest_report.json``. The split depends only on the kept
images and the seed, not on file names or their order.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from vae_cats.data.ingest import processed_subdir
from vae_cats.data.settings import IngestSettings
from vae_cats.data.sources import resolve_source
from vae_cats.data.store import load_splits, prepare, read_manifest
from vae_cats.images import to_float

# torchdata 0.11 calls torch's deprecated `set_vital` on every iteration (torch 2.14): a
# warning in every run that nobody here can act on.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)

log = logging.getLogger(__name__)


class ImageTensorDataset(Dataset[Tensor]):
    """Rows of a uint8 tensor (N, 3, S, S); each item is one image, no label."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def light_augmentation(shift: float, scale: float, color_jitter: float) -> nn.Module | None:
    """Kornia augmentation that keeps a face a face: a random shift of up to ``shift`` times
    the side, a random zoom in ``[1 - scale, 1 + scale]`` (borders reflected, no rotation),
    and brightness, contrast and saturation each scaled by a random factor in
    ``[1 - color_jitter, 1 + color_jitter]`` (hue kept: a cat keeps its colours). Draws from
    torch's global generator (saved in checkpoints). Images (B, 3, H, W) in [0, 1] stay in
    [0, 1].

    Returns:
        The augmentation, or None when every strength is 0.

    Raises:
        ValueError: If shift is outside [0, 0.5), scale outside [0, 1) or color_jitter
            outside [0, 1].
    """
    if not 0 <= shift < 0.5:
        raise ValueError(f"shift must lie in [0, 0.5), got {shift}")
    if not 0 <= scale < 1:
        raise ValueError(f"scale must lie in [0, 1), got {scale}")
    if not 0 <= color_jitter <= 1:
        raise ValueError(f"color_jitter must lie in [0, 1], got {color_jitter}")
    steps: list[nn.Module] = []
    if shift or scale:
        steps.append(
            K.RandomAffine(
                degrees=0.0,
                translate=(shift, shift) if shift else None,
                scale=(1 - scale, 1 + scale) if scale else None,
                padding_mode="reflection",
                p=1.0,
            )
        )
    if color_jitter:
        steps.append(K.ColorJitter(color_jitter, color_jitter, color_jitter, 0.0, p=1.0))
    return nn.Sequential(*steps) if steps else None


class CatFacesDataModule(pl.LightningDataModule):
    """Serves the ingested cat faces from memory as float batches (B, 3, S, S) in [0, 1].

    ``prepare_data`` ingests ``source`` into ``processed_dir`` unless a manifest made from
    the same source, unchanged since (``source_stamp``: file sizes and modification times),
    and the same settings is already there. Training batches get a random
    horizontal flip and, when asked, ``light_augmentation``; validation and test batches
    are untouched.

    Args:
        source: Folder, .tar or .zip of images, ``"bundled"`` or None (see ``resolve_source``).
        processed_dir: Parent folder of ``<source name>/`` holding ``images.pt``,
            ``manifest.json`` and ``ingest_report.json``.
        image_size: Side in pixels of the stored square images.
        seed: Seed of the split and of the training shuffle (the loader's own generator,
            whose state Lightning saves in checkpoints).
        val_fraction: Share of distinct photos used for validation.
        test_fraction: Share of distinct photos used for testing.
        batch_size: Images per batch.
        num_workers: DataLoader worker processes; 0 serves from the main process.
        flip_prob: Probability of a horizontal flip of each training image.
        wrong_size: What ingest does with images that are not ``image_size`` square:
            ``"resize"`` (centre-crop and resize, listed as resized) or ``"reject"``
            (exclude and report).
        shift: Largest random shift of a training image, as a fraction of its side
            (``light_augmentation``; 0: none).
        scale: Largest random zoom of a training image, relative (0: none).
        color_jitter: Strength of random brightness, contrast and saturation changes of
            training images (0: none).

    Raises:
        ValueError: If an argument is out of range (batch size, workers, flip probability,
            augmentation strengths, and those of ``IngestSettings``: image size, seed,
            fractions, ``wrong_size``).
    """

    def __init__(
        self,
        source: str | None = None,
        processed_dir: str = "data/processed",
        image_size: int = 64,
        seed: int = 42,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        flip_prob: float = 0.5,
        wrong_size: str = "resize",
        shift: float = 0.0,
        scale: float = 0.0,
        color_jitter: float = 0.0,
    ) -> None:
        super().__init__()
        # Checked here, not when the first batch is drawn: a bad value stops the run before
        # anything is ingested, logged or trained.
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob}")
        self.settings = IngestSettings(
            image_size=image_size,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            wrong_size=wrong_size,
        )
        self.source = resolve_source(source)
        self.processed_dir = processed_subdir(Path(processed_dir), self.source)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.flip = K.RandomHorizontalFlip(p=flip_prob)
        self.augment = light_augmentation(shift, scale, color_jitter)
        # The training shuffle's own generator, saved in every checkpoint (state_dict).
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.splits: dict[str, Tensor] = {}

    def prepare_data(self) -> None:
        prepare(self.source, self.processed_dir, self.settings)

    @property
    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.processed_dir)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = load_splits(self.processed_dir)

    def _loader(self, split: str, shuffle: bool) -> StatefulDataLoader:
        # A stateful loader: Lightning saves its position (and its shuffle generator's state
        # at the start of the epoch) in every checkpoint, so a mid-epoch resume serves exactly
        # the batches the interrupted run had not reached yet.
        loader = StatefulDataLoader(
            ImageTensorDataset(self.splits[split]),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=self.shuffle_generator if shuffle else None,
        )
        # torch draws each epoch's worker base seed from loader.generator right after the
        # sampler's permutation; a restored sampler replays the permutation but not that
        # draw, so with one shared generator every epoch after a resume was shuffled
        # differently. The base seeds get their own generator; the sampler keeps its own.
        loader.generator = torch.Generator().manual_seed(self.settings.seed)
        return loader

    def state_dict(self) -> dict[str, Any]:
        # Where the training shuffle stands. Lightning restores the loader's own state only
        # when it resumes inside an epoch; resumed from an end-of-epoch checkpoint, the next
        # epoch would otherwise be shuffled from the seed again, not as the uninterrupted run.
        return {"shuffle_generator": self.shuffle_generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "shuffle_generator" in state_dict:
            self.shuffle_generator.set_state(state_dict["shuffle_generator"])

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        x = to_float(batch)
        if self.trainer is not None and self.trainer.training:
            x = self.flip(x)
            if self.augment is not None:
                x = self.augment(x)
        return x
