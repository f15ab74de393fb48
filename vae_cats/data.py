"""Cat-face data: ingest an image folder or archive into a deduplicated, split tensor file,
and serve it to Lightning from memory.

``ingest`` writes two files into ``processed_dir``:

- ``images.pt``: uint8 tensor (N, 3, S, S), one row per distinct image;
- ``manifest.json``: for each row its source name, the sha256 of its decoded pixels,
  its split, and the names of the exact duplicates that were dropped; plus the
  ``data_hash`` that identifies this content and split.

Exact duplicates (same decoded pixels) are removed before splitting, so no image sits in
two splits. The split depends only on the set of distinct images and the seed, not on
file names or their order.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "val", "test")
PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_SAMPLE = PACKAGE_DIR / "assets" / "cats_sample.tar"
SHARED_CATS64 = PACKAGE_DIR.parent.parent / "shared" / "datasets" / "cats64" / "cats64.tar"


def resolve_source(source: str | None) -> Path:
    """Path of a data source: ``None`` gives the full cats64 archive beside the project
    (``../shared``) when present, else the bundled sample; ``"bundled"`` gives the sample of
    1,024 real faces shipped in the package; anything else is taken as a path."""
    if source is None:
        return SHARED_CATS64 if SHARED_CATS64.is_file() else BUNDLED_SAMPLE
    return BUNDLED_SAMPLE if source == "bundled" else Path(source)


def _iter_files(source: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (name, raw bytes) of every image-suffixed regular file in a folder, .tar or .zip."""
    suffix = "".join(source.suffixes[-2:]).lower()
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                yield path.relative_to(source).as_posix(), path.read_bytes()
    elif source.suffix.lower() == ".zip":
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                if not info.is_dir() and info.filename.lower().endswith(IMAGE_SUFFIXES):
                    yield info.filename, archive.read(info)
    elif source.suffix.lower() == ".tar" or suffix in (".tar.gz", ".tgz"):
        with tarfile.open(source) as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield member.name, handle.read()
    else:
        raise ValueError(f"{source}: not a folder, .tar or .zip of images")


def decode_image(raw: bytes, image_size: int) -> Tensor:
    """Decode image bytes to a uint8 RGB tensor (3, image_size, image_size).

    Images of another size are resized with bicubic filtering.

    Raises:
        OSError: If Pillow cannot decode the bytes.
    """
    with Image.open(io.BytesIO(raw)) as image:
        rgb = image.convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BICUBIC)
    return (
        torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        .view(image_size, image_size, 3)
        .permute(2, 0, 1)
        .contiguous()
    )


@dataclass
class IngestReport:
    """What an ingest kept and dropped."""

    num_files: int = 0
    num_kept: int = 0
    duplicates: int = 0
    rejected: dict[str, str] = field(default_factory=dict)


def split_assignment(
    hashes: list[str], seed: int, val_fraction: float, test_fraction: float
) -> list[str]:
    """Seeded split of distinct images, given their pixel hashes in any order.

    The hashes are sorted first, so the result depends only on the set of images and the
    seed. Returns the split name of each hash in the order given.
    """
    ordered = sorted(hashes)
    permutation = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(ordered) * test_fraction)
    n_val = round(len(ordered) * val_fraction)
    split_of: dict[str, str] = {}
    for rank, index in enumerate(permutation.tolist()):
        split_of[ordered[index]] = (
            "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
        )
    return [split_of[h] for h in hashes]


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def ingest(
    source: Path,
    processed_dir: Path,
    image_size: int = 64,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, Any]:
    """Decode, deduplicate and split the images of ``source`` into ``processed_dir``.

    Args:
        source: A folder, .tar or .zip holding image files.
        processed_dir: Output folder for ``images.pt`` and ``manifest.json``.
        image_size: Side in pixels of the stored square images.
        seed: Seed of the split.
        val_fraction: Share of distinct images in the validation split, in [0, 1).
        test_fraction: Share of distinct images in the test split, in [0, 1).

    Returns:
        The manifest, as written to ``manifest.json``.

    Raises:
        FileNotFoundError: If source does not exist.
        ValueError: If source holds no decodable image or the fractions are out of range.
    """
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such data source (try `make data` or `dvc pull`)")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            "val_fraction + test_fraction must lie in [0, 1), "
            f"got {val_fraction} + {test_fraction}"
        )
    report = IngestReport()
    images: dict[str, Tensor] = {}
    names: dict[str, list[str]] = {}
    for name, raw in sorted(_iter_files(source)):
        report.num_files += 1
        try:
            pixels = decode_image(raw, image_size)
        except (OSError, ValueError) as err:
            report.rejected[name] = f"undecodable: {err}"
            continue
        digest = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
        names.setdefault(digest, []).append(name)
        images.setdefault(digest, pixels)
    if not images:
        raise ValueError(
            f"{source}: holds no decodable image ({report.num_files} image files seen)"
        )
    hashes = sorted(images)
    splits = split_assignment(hashes, seed, val_fraction, test_fraction)
    report.num_kept = len(hashes)
    report.duplicates = sum(len(n) - 1 for n in names.values())

    manifest: dict[str, Any] = {
        "source": source.name,
        "image_size": image_size,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "num_files": report.num_files,
        "num_duplicates": report.duplicates,
        "rejected": report.rejected,
        "images": [
            {"name": names[h][0], "sha256": h, "split": s, "duplicates": names[h][1:]}
            for h, s in zip(hashes, splits, strict=True)
        ],
    }
    manifest["data_hash"] = data_hash(manifest)
    processed_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(torch.stack([images[h] for h in hashes]), buffer)
    _atomic_write_bytes(processed_dir / "images.pt", buffer.getvalue())
    _atomic_write_bytes(processed_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    log.info(
        "ingested %s: %d files, %d distinct, %d duplicates, %d rejected",
        source,
        report.num_files,
        report.num_kept,
        report.duplicates,
        len(report.rejected),
    )
    return manifest


def data_hash(manifest: dict[str, Any]) -> str:
    """sha256 over the (pixel hash, split) pairs and image size: changes exactly when the
    stored content or its split changes."""
    lines = [f"{manifest['image_size']}"] + [
        f"{r['sha256']} {r['split']}" for r in manifest["images"]
    ]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class ImageTensorDataset(Dataset[Tensor]):
    """Rows of a uint8 tensor (N, 3, S, S); each item is one image, no label."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


class CatFacesDataModule(pl.LightningDataModule):
    """Serves the ingested cat faces from memory as float batches (B, 3, S, S) in [0, 1].

    ``prepare_data`` ingests ``source`` into ``processed_dir`` unless a manifest made from
    the same source and settings is already there. Training batches get a random
    horizontal flip; validation and test batches are untouched.

    Args:
        source: Folder, .tar or .zip of images, ``"bundled"`` or None (see ``resolve_source``).
        processed_dir: Folder for ``images.pt`` and ``manifest.json``.
        image_size: Side in pixels of the stored square images.
        seed: Seed of the split.
        val_fraction: Share of distinct images used for validation.
        test_fraction: Share of distinct images used for testing.
        batch_size: Images per batch.
        num_workers: DataLoader worker processes; 0 serves from the main process.
        flip_prob: Probability of a horizontal flip of each training image.
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
    ) -> None:
        super().__init__()
        self.source = resolve_source(source)
        self.processed_dir = Path(processed_dir) / self.source.name.split(".")[0]
        self.ingest_args: dict[str, Any] = {
            "image_size": image_size,
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
        }
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.flip = K.RandomHorizontalFlip(p=flip_prob)
        self.splits: dict[str, Tensor] = {}

    @property
    def manifest_path(self) -> Path:
        return self.processed_dir / "manifest.json"

    def _manifest_is_current(self) -> bool:
        if not (self.manifest_path.is_file() and (self.processed_dir / "images.pt").is_file()):
            return False
        manifest = json.loads(self.manifest_path.read_text())
        same_args = all(manifest.get(k) == v for k, v in self.ingest_args.items())
        return same_args and manifest.get("source") == self.source.name

    def prepare_data(self) -> None:
        if not self._manifest_is_current():
            ingest(self.source, self.processed_dir, **self.ingest_args)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images = torch.load(self.processed_dir / "images.pt", weights_only=True)
        split_of = [record["split"] for record in self.manifest["images"]]
        for split in SPLITS:
            index = torch.tensor(
                [i for i, s in enumerate(split_of) if s == split], dtype=torch.long
            )
            self.splits[split] = images[index]

    def _loader(self, split: str, shuffle: bool) -> DataLoader[Tensor]:
        return DataLoader(
            ImageTensorDataset(self.splits[split]),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[Tensor]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Tensor]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Tensor]:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader[Tensor]:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        x = batch.float().div_(255.0)
        if self.trainer is not None and self.trainer.training:
            x = self.flip(x)
        return x
