"""Real faces for a trained model: the splits of a data source, whether a split is the model's
own (the data hash its lineage names), and which source to read when none is given.

Owns the one rule predict and packaging share: a test split is the model's own only when the
data hash of its ingest is the one in the model's lineage (same images, same seed, same
split); otherwise its "test" faces may include faces the model trained on. Errors reach the
caller as ``InputError``s that name the source once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from vae_cats.data.sources import resolve_source
from vae_cats.data.store import ingested

BUNDLED = "bundled"
DEFAULT_SPLIT_SEED = 42  # the data config's seed when a lineage names none


class InputError(ValueError):
    """An input (option, file, data source) that cannot work; the message names it."""


def describe_error(source: str | os.PathLike[str] | None, err: OSError | ValueError) -> str:
    """One line for a data-source error: ingest's own messages name the source already."""
    text = str(err) if not isinstance(err, OSError) or err.strerror is None else err.strerror
    return text if source is not None and str(source) in text else f"{source}: {text}"


def image_splits(
    source: str | os.PathLike[str] | None, seed: int = DEFAULT_SPLIT_SEED
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """uint8 train/val/test faces (N, 3, H, W) of ``source`` (``resolve_source``: a folder,
    archive, ``"bundled"`` or None) split with ``seed``, and the ingest's manifest.

    Raises:
        InputError: If the source is missing or holds too few usable images (named once).
    """
    try:
        return ingested(None if source is None else str(source), seed)
    except (OSError, ValueError) as err:  # NoUsableImageError too
        raise InputError(describe_error(source, err)) from err


def data_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The data config the model trained with (its lineage), empty when unknown."""
    config: dict[str, Any] = checkpoint.get("lineage", {}).get("config", {}).get("data", {})
    return config


def split_seed(checkpoint: dict[str, Any]) -> int:
    """The seed of the model's own split: its lineage's data seed, else the default 42."""
    return int(data_config(checkpoint).get("seed", DEFAULT_SPLIT_SEED))


def lineage_source(checkpoint: dict[str, Any]) -> Path | None:
    """The data source the model's lineage names, resolved here (``resolve_source``; a lineage
    that names None resolves as training did, to ``data/raw/`` or cats64), or None when the
    lineage names no data config or the source does not exist on this machine."""
    config = data_config(checkpoint)
    if not config:
        return None
    path = resolve_source(config.get("source"))
    return path if path.exists() else None


def split_warning(source: str, manifest: dict[str, Any], lineage: dict[str, Any]) -> str | None:
    """Why the test split of ``source`` may hold faces the model trained on, or None when it
    is the split named by the model's lineage (same data hash: same images, same split)."""
    trained_on = lineage.get("data_hash")
    if trained_on == manifest["data_hash"]:
        return None
    if trained_on is None:
        return (
            f"{source}: the model's lineage names no data hash, so these test faces may "
            "include faces it trained on"
        )
    return (
        f"{source}: its split (data hash {manifest['data_hash'][:12]}) is not the one the "
        f"model trained on (data hash {trained_on[:12]}): some of these test faces may be "
        "faces it trained on"
    )


def own_split_hint(checkpoint: dict[str, Any], used: Path) -> str:
    """What to pass for the model's own split: ``"; pass --images PATH ..."`` naming the source
    its lineage names when that exists here and is not ``used``, else nothing."""
    named = lineage_source(checkpoint)
    if named is None or named.resolve() == used.resolve():
        return ""
    return f"; for the model's own test split pass --images {named} (the data its lineage names)"


@dataclass(frozen=True)
class FaceSource:
    """Where a model's real faces are read from: ``source`` as ingest takes it and ``why``
    this one, in words (``--images``, the lineage's data, the bundled sample)."""

    source: str
    why: str

    @property
    def path(self) -> Path:
        """The file or folder (``resolve_source``)."""
        return resolve_source(self.source)

    @property
    def name(self) -> str:
        """The file or folder name, e.g. ``cats_sample.tar``."""
        return self.path.name


def face_source(
    checkpoint: dict[str, Any], images: str | os.PathLike[str] | None, prefer_lineage: bool
) -> FaceSource:
    """The source to read: ``images`` when given; else, with ``prefer_lineage`` (something is
    fitted on training faces, whose density should be the model's own data), the source the
    lineage names when it exists here; else the bundled sample."""
    if images is not None:
        return FaceSource(str(images), "--images")
    named = lineage_source(checkpoint) if prefer_lineage else None
    if named is not None:
        return FaceSource(str(named), "the data its lineage names")
    return FaceSource(BUNDLED, "the bundled sample")


def stored_origin(checkpoint: dict[str, Any]) -> str:
    """Where the test faces a packaged checkpoint stores came from, in words."""
    about = checkpoint.get("test_faces_source", {})
    return (
        f"the model's own test split ({about.get('source', '?')}, seed {about.get('seed', '?')}"
        "), stored in the checkpoint"
    )
