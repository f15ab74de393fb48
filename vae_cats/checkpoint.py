"""Reading, loading and slimming vae_cats checkpoints, safely (weights-only unpickling); the
path of the model shipped in the package. Owns what a checkpoint file may hold and how a
``ConvVAE`` is rebuilt from it; every other module reads checkpoints through here."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vae_cats.fileio import ASSETS_DIR
from vae_cats.model import ConvVAE

# The packaged model shipped with vae_cats: what predict uses without --model.
SHIPPED_MODEL = ASSETS_DIR / "cats_vae.ckpt"


class CheckpointError(ValueError):
    """A file that cannot be used as a vae_cats checkpoint; the message names the file."""


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint dict with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so a file carrying pickled code is refused, never executed.

    Args:
        path: The checkpoint file (a ``str`` or any path-like).

    Raises:
        CheckpointError: If the file is missing, truncated, not a PyTorch file, or carries
            objects that weights-only loading refuses.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        # torch.save writes zip archives: anything else is truncated or another kind of file,
        # and saying so beats PyTorch's unpickling advice.
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (not a zip archive: truncated or another format)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling refused"
        raise CheckpointError(
            f"{path}: refused: it carries pickled objects that weights-only loading "
            f"does not allow ({reason})"
        ) from None
    except Exception as err:  # noqa: BLE001 - arbitrary bytes make the unpickler raise anything
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint "
            f"(truncated or another format: {type(err).__name__})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path}: not a vae_cats checkpoint (holds a {type(checkpoint).__name__})"
        )
    return checkpoint


def load_vae(path: str | os.PathLike[str]) -> tuple[ConvVAE, dict[str, Any]]:
    """Rebuild the trained ``ConvVAE`` of a training checkpoint, in eval mode on the CPU.

    Returns:
        The model and the checkpoint's lineage (config, git commit, data hash; empty if absent).

    Raises:
        CheckpointError: As ``read_checkpoint``, or if the file is not a vae_cats checkpoint.
    """
    checkpoint = read_checkpoint(path)
    return vae_from_checkpoint(checkpoint, path), checkpoint.get("lineage", {})


def vae_from_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> ConvVAE:
    """The ``ConvVAE`` stored in an already read checkpoint dict, in eval mode, its weights
    channels-last.

    Channels-last because oneDNN's CPU convolutions are fastest in that layout, the one
    training runs in too (``lit_module.channels_last``): decoding 64 codes in float32 took
    148 ms against 357 ms contiguous on a 2-core AVX2 CPU; outputs agree within 2e-6.

    Raises:
        CheckpointError: If the dict is not a vae_cats checkpoint; the message names ``path``.
    """
    if "net_config" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a vae_cats checkpoint (no net_config/state_dict)")
    net = ConvVAE(**checkpoint["net_config"])
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not match its net_config") from None
    return net.to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]


SLIM_KEYS = ("net_config", "state_dict", "lineage")


def slim_checkpoint(checkpoint: dict[str, Any], net: ConvVAE, **extras: Any) -> dict[str, Any]:
    """The inference-only form of a checkpoint (a training one or an already slim one):
    architecture, network weights as float16, lineage, and ``extras`` as further top-level keys.

    Args:
        checkpoint: The dict from ``read_checkpoint``.
        net: The network rebuilt from it (``vae_from_checkpoint``).
        **extras: What inference reads besides the network; plain tensors and containers only,
            so the file stays loadable weights-only. Those ``packager.package`` stores:
            ``<name>_sampler`` per learned sampler (its ``state_dict``, see
            ``samplers.LEARNED_SAMPLERS``), ``default_sampler`` (the name ``default`` stands
            for), ``latent_pca`` (``LatentPCA.state_dict`` of the training means),
            ``test_faces`` (uint8 (K, 3, H, W) faces of the model's own test split) and
            ``test_faces_source`` (a dict naming their source, split, seed and data hash).

    Raises:
        ValueError: If an extra would replace one of ``SLIM_KEYS``.
    """
    clash = set(extras) & set(SLIM_KEYS)
    if clash:
        raise ValueError(f"slim_checkpoint: extras may not replace {sorted(clash)}")
    # float16 weights halve the file (the package ships it); loading casts back to float32,
    # and the network trained under bf16 autocast, which is coarser than float16. A slim
    # input's weights are float16 already, so re-packaging keeps them bit-identical. Extras
    # keep their dtypes: the mixture stays float64, as scikit-learn fitted it, since rounding
    # would break the covariances' positive-definiteness that sampling checks (it is stored as
    # the covariances' lower triangles instead, samplers.pack_covariances).
    return {
        "net_config": checkpoint["net_config"],
        "state_dict": {k: v.half() for k, v in net.state_dict().items()},
        "lineage": checkpoint.get("lineage", {}),
        **extras,
    }


def check_resumable(
    checkpoint: dict[str, Any], path: str | os.PathLike[str], model_state: dict[str, Any]
) -> None:
    """Refuse, before training, a checkpoint that ``Trainer.fit(ckpt_path=...)`` cannot go on
    from: a packaged model (network weights only) or one trained with other model settings.

    Args:
        checkpoint: The dict from ``read_checkpoint``.
        path: Its file, for the message.
        model_state: ``state_dict()`` of the configured LightningModule.

    Raises:
        CheckpointError: Naming the file and, for a mismatch, the first differing weight.
    """
    if "optimizer_states" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path}: not a training checkpoint (a packaged model holds network weights only): "
            "resume from a run's checkpoints/last.ckpt or best.ckpt"
        )
    saved = checkpoint["state_dict"]
    for key, value in model_state.items():
        if key not in saved or tuple(saved[key].shape) != tuple(value.shape):
            found = tuple(saved[key].shape) if key in saved else "nothing"
            raise CheckpointError(
                f"{path}: holds {found} for {key}, the configured model needs "
                f"{tuple(value.shape)}: resume with the model settings it was trained with"
            )
