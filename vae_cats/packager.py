"""Packaging as one library call: turn a checkpoint (a training one, or an already packaged
one) into the slim model inference ships, with what predict and the HTTP API read besides the
network. ``package_model.py`` parses its options and calls ``package``.

Owns what a packaged model holds beyond ``checkpoint.slim_checkpoint``'s network and lineage:
the learned latent samplers (``samplers.LEARNED_SAMPLERS``) with the name of the default one,
and the principal components of the training faces' posterior means, fitted on the training
split the model trained on (its lineage's data source and seed, or ``source``); test faces of
the model's own split (stored only when the split's data hash is the lineage's, so they are
faces it did not train on); test SSIM/PSNR and the drift reference statistics. Every input is
checked before any work, and the file is written atomically.
(Not ``packaging.py``: ``python vae_cats/train_model.py`` puts ``vae_cats/`` first on
``sys.path``, where that name would hide the ``packaging`` distribution Hydra imports.)
"""

from __future__ import annotations

import io
import os
import time
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
from vae_cats.generate import SAMPLER_NAMES, SamplerError, encode_means, fit_sampler
from vae_cats.model import BaseVAE
from vae_cats.samplers import LEARNED_SAMPLERS, checkpoint_key, latent_pca

# Principal components stored for traversals and the page's sliders (8 used): 64 of 512 take
# 131 KB, all of them 1 MB of the 15 MB the package may weigh.
STORED_COMPONENTS = 64
DEFAULT_TEST_FACES = 32  # 384 KB of uint8 pixels: 2 interpolation rows + a 16-face recon grid
MAX_TEST_FACES = 256
# The sampler ``default`` stands for in a packaged model: the one whose decoded samples the
# classifier two-sample test told apart least often from reconstructions of test faces
# (benchmarks/bench_model.py; the table is in the model card, vae_cats/assets/MODEL_CARD.md).
DEFAULT_SAMPLER = "gmm"


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
        return {}, f"{warning}{NO_TEST_FACES}"
    about = {"source": name, "split": "test", "seed": seed, "data_hash": manifest["data_hash"]}
    return {"test_faces": test[:count].clone(), "test_faces_source": about}, None


OWN_SPLIT_KEYS = ("test_faces", "test_faces_source", "metrics", "drift")
NO_TEST_FACES = "; storing no test faces"


def own_split_extras(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The entries of an already packaged checkpoint that describe its own split (test faces,
    test metrics, drift statistics calibrated on its validation split); empty for a training
    checkpoint."""
    if "test_faces_source" not in checkpoint:
        return {}
    return {key: checkpoint[key] for key in OWN_SPLIT_KEYS if key in checkpoint}


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


def fit_samplers(
    checkpoint: dict[str, Any], mu: Tensor, components: int | None, source: str | None
) -> tuple[dict[str, Any], list[str]]:
    """The ``<name>_sampler`` entries of every learned sampler, and one line per sampler saying
    what was done: kept from an already packaged ``checkpoint`` (``gmm`` only when
    ``components`` is None) or fitted on the training means mu (N, latent_dim), with the time.

    Raises:
        InputError: If there are too few training means for a sampler.
    """
    entries: dict[str, Any] = {}
    done = []
    for name in LEARNED_SAMPLERS:
        key = checkpoint_key(name)
        refit = name == "gmm" and components is not None
        if key in checkpoint and not refit:
            entries[key] = checkpoint[key]
            done.append(f"{name} kept")
            continue
        start = time.perf_counter()
        try:
            entries[key] = fit_sampler(name, mu, components).state_dict()
        except SamplerError as err:
            hint = " or fewer --components" if name == "gmm" else ""
            raise InputError(f"{source}: {err}: give more images{hint}") from err
        done.append(f"{name} fitted in {time.perf_counter() - start:.1f} s")
    return entries, done


def package(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    force: bool = False,
    source: str | os.PathLike[str] | None = None,
    components: int | None = None,
    test_faces: int = DEFAULT_TEST_FACES,
    default_sampler: str = DEFAULT_SAMPLER,
) -> PackageResult:
    """Write the slim model of ``model`` to ``out``.

    Args:
        model: Checkpoint file, training or packaged.
        out: File to write; an existing one is replaced only with ``force``.
        force: Replace ``out`` if it exists.
        source: Training data; None: the one the model's lineage names.
        components: Components of the ``gmm`` sampler's mixture, >= 1; None: keep the
            mixture of an already packaged ``model`` (its samples stay the same), else fit
            ``generate.DEFAULT_COMPONENTS``. The other learned samplers are kept when
            ``model`` stores them, else fitted.
        test_faces: Faces of the model's own test split to store, 0..``MAX_TEST_FACES``.
        default_sampler: The sampler ``default`` stands for, one of ``LEARNED_SAMPLERS``.

    Raises:
        CheckpointError, InputError: Naming the bad file or option, before anything is written.
    """
    out = Path(out)
    if components is not None and components < 1:
        raise InputError(f"--components must be >= 1, got {components}")
    if not 0 <= test_faces <= MAX_TEST_FACES:
        raise InputError(f"--test-faces must be between 0 and {MAX_TEST_FACES}, got {test_faces}")
    if default_sampler not in LEARNED_SAMPLERS:
        choices = ", ".join(LEARNED_SAMPLERS)
        raise InputError(f"--default-sampler {default_sampler!r}: choose from {choices}")
    check_out(out, force)
    checkpoint = read_checkpoint(model)
    net = vae_from_checkpoint(checkpoint, model)
    lineage = checkpoint.get("lineage", {})
    data = training_source(checkpoint, source)
    seed = split_seed(checkpoint)
    splits, manifest = image_splits(data, seed)
    mu = encode_means(net, splits["train"])
    if len(mu) < 2:
        raise InputError(f"{data}: {len(mu)} training images; give a folder with more faces")
    samplers, done = fit_samplers(checkpoint, mu, components, data)
    test = splits["test"]
    extras, face_warning = own_test_faces(test, manifest, lineage, data, seed, test_faces)
    kept = own_split_extras(checkpoint) if face_warning else {}
    if kept and face_warning:  # face_warning: narrows the type for mypy
        # An already packaged model on a split that is not its own (one made before the split
        # changed): what describes its own split stays, and the test faces, test metrics and
        # drift statistics of this split, which holds faces it trained on, are not stored.
        extras = kept
        split = face_warning.removesuffix(NO_TEST_FACES)
        face_warning = f"{split}; kept from --model: {', '.join(kept)}"
        drift_warning = None
    else:
        drift, drift_warning = drift_extras(net, splits, manifest, samplers["gmm_sampler"])
        extras.update(drift)
    slim = slim_checkpoint(
        checkpoint,
        net,
        **samplers,
        default_sampler=default_sampler,
        latent_pca=latent_pca(mu).leading(STORED_COMPONENTS).state_dict(),
        **extras,
    )
    write_checkpoint(out, slim)
    stored = len(extras.get("test_faces", ()))
    faces = (
        f"its own {stored} test faces kept"
        if kept
        else f"{stored} of its {len(splits['test'])} test faces stored"
    )
    summary = (
        f"samplers on {len(mu)} training faces of {resolve_source(data).name}: "
        f"{', '.join(done)}; default {default_sampler} ({SAMPLER_NAMES[default_sampler]}); "
        f"principal components fitted; {faces}"
    )
    warnings = [w for w in (face_warning, drift_warning) if w]
    return PackageResult(out, summary, warnings)


def training_source(
    checkpoint: dict[str, Any], source: str | os.PathLike[str] | None
) -> str | None:
    """``source`` as given (when not empty), else the data source the checkpoint's config
    names (None: none)."""
    given = None if source is None else str(source)
    return given or data_config(checkpoint).get("source")


def write_checkpoint(out: Path, checkpoint: dict[str, Any]) -> None:
    """``torch.save`` ``checkpoint`` to ``out`` atomically.

    Raises:
        InputError: Naming ``--out`` when it cannot be written.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as err:
        raise InputError(f"--out {out}: {err.strerror or err}") from err


def refresh_drift(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    force: bool = False,
    source: str | os.PathLike[str] | None = None,
) -> PackageResult:
    """Write ``model``, an already packaged model, to ``out`` with only its ``drift`` entry
    recomputed (``vae_cats.drift.reference_statistics`` on its own training and validation
    split, as ``package`` computes it); every other entry (weights, samplers, lineage, test
    faces, test metrics) is written back as read. For a model packaged before the detector
    changed.

    Args:
        model: Packaged checkpoint (with ``gmm_sampler``).
        out: File to write (may be ``model`` itself, with ``force``); written atomically.
        force: Replace ``out`` if it exists.
        source: Training data; None: the one the model's lineage names.

    Raises:
        CheckpointError, InputError: A checkpoint without a mixture, a split that is not the
            model's own (its validation faces could be ones it trained on), too few faces
            for the statistics, or a bad ``out``, before anything is written.
    """
    out = Path(out)
    check_out(out, force)
    checkpoint = read_checkpoint(model)
    net = vae_from_checkpoint(checkpoint, model)
    if "gmm_sampler" not in checkpoint:
        raise InputError(f"--model {model}: stores no gmm_sampler; package it first")
    data = training_source(checkpoint, source)
    splits, manifest = image_splits(data, split_seed(checkpoint))
    warning = split_warning(resolve_source(data).name, manifest, checkpoint.get("lineage", {}))
    if warning:
        raise InputError(f"{warning}; its drift statistics are not refreshed")
    try:
        drift = reference_statistics(
            net, splits["train"], splits["val"], checkpoint["gmm_sampler"]
        )
    except ValueError as err:  # too few faces: one line, as package's warning says it
        raise InputError(f"{data}: {err}; its drift statistics are not refreshed") from None
    write_checkpoint(out, {**checkpoint, "drift": drift})
    summary = (
        f"drift statistics refreshed on {len(splits['train'])} training and "
        f"{len(splits['val'])} validation faces of {resolve_source(data).name}; "
        f"threshold {drift['threshold']:.3f}"
    )
    return PackageResult(out, summary)
