"""Weights & Biases for inference outputs: the mode a process runs in, and logging pictures
that were already written as PNG files (so the dashboard shows exactly the files' pixels)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, cast


def wandb_mode() -> str:
    """W&B mode for this process: ``$WANDB_MODE`` if set, ``online`` when an API key is
    configured, else ``offline`` (runs land under the run folder; upload with ``wandb sync``)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def log_png_files(
    paths: dict[str, Path],
    out: Path,
    config: dict[str, Any],
    captions: dict[str, str] | None = None,
) -> str:
    """Log PNG files to a new W&B run of job type ``predict`` under ``out``, one image per key
    (``predict/<key>``, captioned by ``captions[key]`` when given), read from disk so W&B stores
    the file's pixels unchanged.

    Returns:
        The run folder (``out/wandb/offline-run-*`` offline), complete on disk.
    """
    import wandb

    mode = cast(Literal["online", "offline", "disabled"], wandb_mode())
    run = wandb.init(project="vae_cats", job_type="predict", dir=out, mode=mode, config=config)
    captions = captions or {}
    run.log(
        {
            f"predict/{key}": wandb.Image(str(path), caption=captions.get(key))
            for key, path in paths.items()
        }
    )
    run.finish()
    # finish() can return before the W&B service has written the offline run file: in a
    # long-lived process (a notebook, a test worker) that already ran W&B, the second run's
    # .wandb file held only its 7-byte header right after finish() and its records a moment
    # later, more often on a loaded machine. Tearing the service down waits for every record
    # to be on disk, so the folder returned is complete; the next run starts a new service.
    wandb.teardown()
    return str(Path(run.dir).parent)
