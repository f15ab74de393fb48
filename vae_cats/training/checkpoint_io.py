"""Checkpoint files written atomically and read weights-only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.utilities.rank_zero import rank_zero_only

from vae_cats.checkpoint import read_checkpoint
from vae_cats.fileio import atomic_write

log = logging.getLogger(__name__)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written checkpoint behind.

    ``save_checkpoint`` goes through ``vae_cats.fileio.atomic_write`` (temporary file, fsync,
    rename): a process killed mid-write leaves the previous checkpoint as it was.
    ``load_checkpoint`` always unpickles weights-only, whatever the caller asks for, so
    resuming from a file that carries pickled code is refused
    (``vae_cats.checkpoint.CheckpointError``), never executed.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))
        log.info(
            "rank %d wrote %s at global step %s",
            rank_zero_only.rank,  # type: ignore[attr-defined]
            target,
            checkpoint.get("global_step", "?"),
        )

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # weights_only is ignored on purpose: this project's checkpoints hold tensors and
        # plain containers only, so there is no reason to ever unpickle arbitrary objects.
        return read_checkpoint(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)
