"""Processed ingests on disk, without Lightning: ingest a source when its stored copy is stale,
and load the stored splits as uint8 tensors.

A processed ingest is a folder holding ``images.pt`` (uint8 (N, 3, S, S)), ``manifest.json``
(each image's pixel sha256 and split, every excluded file and why, the ``data_hash``) and
``ingest_report.json``; the manifest is written last, so a manifest means a complete folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cats.data.ingest import INGEST_VERSION, SPLITS, ingest, processed_subdir
from vae_cats.data.settings import IngestSettings
from vae_cats.data.sources import resolve_source, source_stamp


def read_manifest(processed: Path) -> dict[str, Any]:
    """The ``manifest.json`` of a processed ingest folder.

    Raises:
        FileNotFoundError: If the folder holds no manifest.
    """
    return json.loads((processed / "manifest.json").read_text())


def is_current(processed: Path, source: Path, settings: IngestSettings) -> bool:
    """Whether ``processed`` holds a complete ingest of ``source`` as it is now (same file
    sizes and modification times) made by this ingest version with the same settings."""
    if not ((processed / "manifest.json").is_file() and (processed / "images.pt").is_file()):
        return False
    manifest = read_manifest(processed)
    return (
        all(manifest.get(k) == v for k, v in settings.as_dict().items())
        and manifest.get("ingest_version") == INGEST_VERSION
        and manifest.get("source") == source.name
        and manifest.get("source_stamp") == source_stamp(source)
    )


def prepare(source: Path, processed: Path, settings: IngestSettings) -> dict[str, Any]:
    """Ingest ``source`` into ``processed`` unless a current ingest is already there.

    Returns:
        The manifest.

    Raises:
        As ``vae_cats.data.ingest.ingest``.
    """
    if not is_current(processed, source, settings):
        ingest(source, processed, settings)
    return read_manifest(processed)


def load_splits(processed: Path) -> dict[str, Tensor]:
    """The images of a processed ingest by split: ``{"train"|"val"|"test": uint8 (N, 3, S, S)}``
    (an empty split has N = 0)."""
    images = torch.load(processed / "images.pt", weights_only=True)
    split_of = [record["split"] for record in read_manifest(processed)["images"]]
    splits = {}
    for split in SPLITS:
        index = torch.tensor([i for i, s in enumerate(split_of) if s == split], dtype=torch.long)
        splits[split] = images[index]
    return splits


def ingested_splits(source: str | None, seed: int = 42) -> dict[str, Tensor]:
    """Train/val/test images of ``source`` (see ``resolve_source``) split with ``seed``, ingested
    into a temporary folder that is removed afterwards.

    Raises:
        FileNotFoundError, ValueError: As ``ingest`` (the message names the source).
    """
    return ingested(source, seed)[0]


def ingested(source: str | None, seed: int = 42) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``ingested_splits`` and the ingest's manifest, whose ``data_hash`` tells whether this is
    the split a model's lineage names (so its test faces are ones it did not train on).

    Raises:
        FileNotFoundError, ValueError: As ``ingest`` (the message names the source).
    """
    path = resolve_source(source)
    with tempfile.TemporaryDirectory() as tmp:
        processed = processed_subdir(Path(tmp), path)
        manifest = prepare(path, processed, IngestSettings(seed=seed))
        return load_splits(processed), manifest
