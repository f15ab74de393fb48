"""Checkpoint files written atomically and read weights-only."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import CheckpointIO
from lightning_fabric.utilities.rank_zero import rank_zero_only

from vae_cats.checkpoint import read_checkpoint

log = logging.getLogger(__name__)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written checkpoint behind.

    ``save_checkpoint`` writes to a temporary file in the target's folder, flushes it to
    disk (``fsync``) and renames it over the target with ``os.replace``, which POSIX makes
    atomic: a process killed mid-write leaves the previous checkpoint as it was (plus at
    most a stray ``.<name>.*.tmp`` file). ``load_checkpoint`` always unpickles
    weights-only, whatever the caller asks for, so resuming from a file that carries
    pickled code is refused (``vae_cats.checkpoint.CheckpointError``), never executed.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
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


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the directory entry is flushed.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
