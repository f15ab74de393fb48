"""Packaging as one library call: turn a checkpoint (a training one, or an already packaged
one) into the slim model inference ships, with what predict and the HTTP API read besides the
network. ``package_model.py`` parses its options and calls ``package``.

Owns what a packaged model holds beyond ``checkpoint.slim_checkpoint``'s network and lineage:
the Gaussian-mixture sampler and the principal components of the training faces' posterior
means, fitted on the training split the model trained on (its lineage's data source and seed,
or ``source``); test faces of the model's own split (stored only when the split's data hash is
the lineage's, so they are faces it did not train on); test SSIM/PSNR and the drift reference
statistics. Every input is checked before any work, and the file is written atomically.
(Not ``packaging.py``: ``python vae_cats/train_model.py`` puts ``vae_cats/`` first on
``sys.path``, where that name would hide the ``packaging`` distribution Hydra imports.)
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cats.checkpoint import read_checkpoint, slim_checkpoint, vae_from_checkpoint
from vae_cats.data.sources import resolve_source
from vae_cats.drift import reference_statistics, test_metrics
from vae_cats.faces import InputError, data_config, image_splits, split_seed, split_warning
from vae_cats.fileio import atomic_write_bytes, check_writable
from vae_cats.generate import (
    DEFAULT_COMPONENTS,
    SamplerError,
    encode_means,
    fit_mixture,
    latent_pca,
)
from vae_cats.model import BaseVAE

DEFAULT_TEST_FACES = 32  # 384 KB of uint8 pixels: 2 interpolation rows + a 16-face recon grid
MAX_TEST_FACES = 256


@dataclass
class PackageResult:
    """The file written, what was fitted and stored (``summary``, one line) and warnings about
    what could not be stored."""

    out: Path
    summary: str
    warnings: list[str] = field(default_factory=list)


def check_out(out: Path, force: bool) -> None:
    """Refuse, before any work, an ``out`` that exists (without ``force``), is a folder, or
    lies where nothing can be written.

    Raises:
        InputError: Naming ``--out`` and the reason.
    """
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder, give a file name")
    if out.exists() and not force:
        raise InputError(f"--out {out}: exists; pass --force to replace it")
    try:
        check_writable(out.parent)
    except OSError as err:
        raise InputError(f"--out {out}: cannot write there ({err.strerror or err})") from err


def own_test_faces(
    test: Tensor,
    manifest: dict[str, Any],
    lineage: dict[str, Any],
    source: str | None,
    seed: int,
    count: int,
) -> tuple[dict[str, Any], str | None]:
    """The ``test_faces`` and ``test_faces_source`` entries of the slim model and None, or no
    entries and the warning saying why (the split is not the model's own)."""
    if count == 0:
        return {}, None
    name = resolve_source(source).name
    warning = split_warning(name, manifest, lineage)
    if warning:
        return {}, f"{warning}; storing no test faces"
    about = {"source": name, "split": "test", "seed": seed, "data_hash": manifest["data_hash"]}
    return {"test_faces": test[:count].clone(), "test_faces_source": about}, None


def drift_extras(
    net: BaseVAE, splits: dict[str, Tensor], manifest: dict[str, Any], mixture: dict[str, Tensor]
) -> tuple[dict[str, Any], str | None]:
    """``drift`` (vae_cats.drift.reference_statistics: thresholds set on the validation split)
    and ``metrics`` (test SSIM/PSNR) for the HTTP API, and None; without ``drift`` and with a
    warning when there are too few images."""
    extras: dict[str, Any] = {}
    if len(splits["test"]):
        metrics = test_metrics(net, splits["test"])
        extras["metrics"] = {"split": "test", "data_hash": manifest["data_hash"], **metrics}
    try:
        extras["drift"] = reference_statistics(net, splits["train"], splits["val"], mixture)
    except ValueError as err:
        return extras, f"no drift statistics stored: {err}"
    return extras, None


def fit(mu: Tensor, components: int | None, source: str | None) -> dict[str, Tensor]:
    """State of a mixture fitted on the training means; InputError when there are too few."""
    try:
        return fit_mixture(mu, components or DEFAULT_COMPONENTS).state_dict()
    except SamplerError as err:
        raise InputError(f"{source}: {err}: give more images or fewer --components") from err


def package(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    force: bool = False,
    source: str | os.PathLike[str] | None = None,
    components: int | None = None,
    test_faces: int = DEFAULT_TEST_FACES,
) -> PackageResult:
    """Write the slim model of ``model`` to ``out``.

    Args:
        model: Checkpoint file, training or packaged.
        out: File to write; an existing one is replaced only with ``force``.
        force: Replace ``out`` if it exists.
        source: Training data; None: the one the model's lineage names.
        components: Mixture components, >= 1; None: keep the mixture of an already packaged
            ``model`` (its samples stay the same), else fit ``DEFAULT_COMPONENTS``.
        test_faces: Faces of the model's own test split to store, 0..``MAX_TEST_FACES``.

    Raises:
        CheckpointError, InputError: Naming the bad file or option, before anything is written.
    """
    out = Path(out)
    if components is not None and components < 1:
        raise InputError(f"--components must be >= 1, got {components}")
    if not 0 <= test_faces <= MAX_TEST_FACES:
        raise InputError(f"--test-faces must be between 0 and {MAX_TEST_FACES}, got {test_faces}")
    check_out(out, force)
    checkpoint = read_checkpoint(model)
    net = vae_from_checkpoint(checkpoint, model)
    lineage = checkpoint.get("lineage", {})
    data = None if source is None else str(source)
    data = data or data_config(checkpoint).get("source")
    seed = split_seed(checkpoint)
    splits, manifest = image_splits(data, seed)
    mu = encode_means(net, splits["train"])
    if len(mu) < 2:
        raise InputError(f"{data}: {len(mu)} training images; give a folder with more faces")
    kept = components is None and "gmm_sampler" in checkpoint
    mixture = checkpoint["gmm_sampler"] if kept else fit(mu, components, data)
    test = splits["test"]
    extras, face_warning = own_test_faces(test, manifest, lineage, data, seed, test_faces)
    drift, drift_warning = drift_extras(net, splits, manifest, mixture)
    extras.update(drift)
    slim = slim_checkpoint(
        checkpoint, net, gmm_sampler=mixture, latent_pca=latent_pca(mu).state_dict(), **extras
    )
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as err:
        raise InputError(f"--out {out}: {err.strerror or err}") from err
    stored = len(extras.get("test_faces", ()))
    fitted = "principal components" if kept else "mixture and principal components"
    summary = (
        f"{fitted} fitted on {len(mu)} training faces of {resolve_source(data).name}"
        f"{' (mixture kept from --model)' if kept else ''}; "
        f"{stored} of its {len(splits['test'])} test faces stored"
    )
    warnings = [w for w in (face_warning, drift_warning) if w]
    return PackageResult(out, summary, warnings)
