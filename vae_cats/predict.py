"""Predict as one library call: load a model, pick its faces, sample, reconstruct, interpolate,
traverse and write a result folder. ``predict_model.py`` parses its options into
``PredictOptions`` and calls ``predict``; a notebook calls the same functions (``load_model``,
``sample_images``, ``save_grid``: the example in the ``vae_cats`` package docstring).

Owns what predict does and in which order: every input is checked before anything is written,
and outputs of an earlier run in the folder that this run does not write are removed. It
prints nothing: ``predict`` returns the lines to show and the warnings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cats.checkpoint import SHIPPED_MODEL, read_checkpoint, vae_from_checkpoint
from vae_cats.faces import (
    FaceSource,
    InputError,
    face_source,
    image_splits,
    own_split_hint,
    split_seed,
    split_warning,
    stored_origin,
)
from vae_cats.fileio import check_writable
from vae_cats.generate import (
    INTERPOLATE_PAIRS,
    SAMPLERS,
    SamplerError,
    decode_batches,
    default_sampler,
    encode_means,
    interpolation_grid,
    latent_codes,
    traversal_grid,
)
from vae_cats.images import make_grid, pairs_grid, save_png, to_float
from vae_cats.model import ConvVAE
from vae_cats.samplers import LEARNED_SAMPLERS, LatentPCA, latent_pca, stored_samplers
from vae_cats.tracking import log_png_files

__all__ = [
    "SHIPPED_MODEL",
    "InputError",
    "LoadedModel",
    "PredictOptions",
    "PredictResult",
    "load_model",
    "predict",
    "sample_images",
    "save_grid",
]

MAX_SAMPLES = 10_000  # a run's single PNGs fill about 80 MB; more: another --seed
MAX_SEED = 2**32 - 1  # scikit-learn's mixture takes seeds below 2**32
GRID_SAMPLES = 256  # samples.png stays a viewable 32 x 8 grid (530 x 2114 pixels)
MAX_RECON = 256
OPTIONAL_PICTURES = ("interpolation", "traversal")


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode on the CPU, the checkpoint dict it came from (stored mixture,
    principal components, test faces, lineage) and its file."""

    net: ConvVAE
    checkpoint: dict[str, Any]
    path: Path


def load_model(path: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Load a checkpoint (training or packaged; None: the shipped model ``SHIPPED_MODEL``).

    Raises:
        CheckpointError: If the file is missing, unreadable or not a vae_cats checkpoint.
    """
    path = Path(SHIPPED_MODEL if path is None else path)
    checkpoint = read_checkpoint(path)
    return LoadedModel(vae_from_checkpoint(checkpoint, path), checkpoint, path)


@dataclass(frozen=True)
class Faces:
    """Real faces for predict: uint8 test faces (N, 3, H, W) to reconstruct and interpolate and
    where they came from; training faces for what the checkpoint lacks (None when not needed)
    and their source; why the test faces may include training faces (None when they do not)."""

    test: Tensor
    origin: str
    train: Tensor | None = None
    train_source: FaceSource | None = None
    warning: str | None = None


def needs_training_faces(checkpoint: dict[str, Any], sampler: str, traverse: bool) -> bool:
    """Whether predict fits something the checkpoint does not carry: a learned sampler
    (``default`` is one unless the checkpoint stores one) or principal components
    (``traverse``)."""
    if sampler == "default":
        sampler = default_sampler(checkpoint, has_faces=True)
    fits_sampler = sampler in LEARNED_SAMPLERS and sampler not in stored_samplers(checkpoint)
    return fits_sampler or (traverse and "latent_pca" not in checkpoint)


def load_faces(
    checkpoint: dict[str, Any], images: str | os.PathLike[str] | None, needs_train: bool
) -> Faces:
    """Test faces the model did not train on when it can tell: those stored in a packaged
    checkpoint unless ``images`` is given, else the test split of the source ``face_source``
    picks, with a warning (and the source to pass instead) unless its data hash is the
    lineage's. Training faces come from the same source.

    Raises:
        InputError: If the source is missing or unusable.
    """
    stored: Tensor | None = None if images is not None else checkpoint.get("test_faces")
    if stored is not None and not needs_train:
        return Faces(stored, stored_origin(checkpoint))
    source = face_source(checkpoint, images, prefer_lineage=needs_train)
    seed = split_seed(checkpoint)
    splits, manifest = image_splits(source.source, seed)
    train = splits["train"] if needs_train else None
    if stored is not None:
        return Faces(stored, stored_origin(checkpoint), train, source)
    warning = split_warning(source.name, manifest, checkpoint.get("lineage", {}))
    if warning:
        warning += own_split_hint(checkpoint, source.path)
    which = "not the model's own split" if warning else "the model's own test split"
    origin = f"the test split of {source.name} (seed {seed}; {which})"
    return Faces(splits["test"], origin, train, source, warning)


def sample_codes(
    model: LoadedModel, n: int, seed: int, sampler: str, faces: Faces | None = None
) -> tuple[Tensor, str]:
    """``n`` latent codes (n, latent_dim) of ``sampler`` drawn with ``seed`` and where they
    came from (``generate.latent_codes``; a learned sampler the checkpoint does not store is
    fitted on ``faces.train``).

    Raises:
        InputError: If the sampler is unknown or cannot be fitted.
    """
    if sampler not in SAMPLERS:
        raise InputError(f"--sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    train = None if faces is None else faces.train
    learned = (
        default_sampler(model.checkpoint, train is not None) if sampler == "default" else sampler
    )
    try:
        z, origin = latent_codes(learned, model.net, model.checkpoint, n, seed, train)
    except SamplerError as err:
        name = (
            f"--sampler {sampler}" if sampler != "default" else f"the default sampler ({learned})"
        )
        reason = str(err).removeprefix(f"{learned}: ")
        raise InputError(f"{name}: {reason}: use --sampler normal or more --images") from err
    fitted = learned != "normal" and learned not in stored_samplers(model.checkpoint)
    if fitted and faces is not None and faces.train_source is not None:
        origin += f" of {faces.train_source.name} ({faces.train_source.why})"
    if sampler == "default":
        origin += " (the default sampler; --sampler normal draws from N(0, I))"
    return z, origin


@torch.no_grad()
def sample_images(
    model: LoadedModel,
    n: int,
    seed: int = 0,
    sampler: str = "default",
    images: str | os.PathLike[str] | None = None,
) -> Tensor:
    """``n`` new faces (n, 3, H, W) in [0, 1] decoded from codes of ``sampler`` drawn with
    ``seed``: the pixels predict writes for the same model, sampler and seed. A model without a
    stored mixture fits one on the training faces of ``images`` (else its lineage's data).

    Raises:
        InputError: If the sampler is unknown or a mixture cannot be fitted.
    """
    needs_train = needs_training_faces(model.checkpoint, sampler, traverse=False)
    faces = load_faces(model.checkpoint, images, needs_train) if needs_train else None
    z, _ = sample_codes(model, n, seed, sampler, faces)
    return torch.cat(list(decode_batches(model.net, z)))


def save_grid(images: Tensor, path: str | os.PathLike[str], nrow: int = 8) -> Path:
    """Write float images (B, 3, H, W) in [0, 1] as one PNG grid, ``nrow`` per row."""
    return save_png(make_grid(images, nrow=nrow), Path(path))


def traversal_pca(model: LoadedModel, faces: Faces) -> LatentPCA:
    """Principal components of the training means: stored in a packaged model, else fitted
    on the training faces ``load_faces`` loaded.

    Raises:
        InputError: If there are fewer than 2 training faces.
    """
    if "latent_pca" in model.checkpoint:
        return LatentPCA.from_state_dict(model.checkpoint["latent_pca"])
    count = 0 if faces.train is None else len(faces.train)
    if faces.train is None or count < 2:
        raise InputError(
            f"--traverse: {count} training images to fit principal components on; "
            "this needs at least 2 (give more --images)"
        )
    return latent_pca(encode_means(model.net, faces.train))


def write_samples(net: ConvVAE, z: Tensor, out: Path) -> Path:
    """Decode z (N, latent_dim) in batches, writing each image as ``out/samples/sample_NNN.png``
    as it comes (memory bounded by one batch) and the first ``GRID_SAMPLES`` as one grid,
    ``out/samples.png``, which is returned."""
    width = max(3, len(str(len(z) - 1)))
    shown: list[Tensor] = []
    index = 0
    for batch in decode_batches(net, z):
        for image in batch:
            save_png(image, out / "samples" / f"sample_{index:0{width}d}.png")
            index += 1
        shown.append(batch[: GRID_SAMPLES - sum(len(s) for s in shown)])
    return save_png(make_grid(torch.cat(shown)), out / "samples.png")


@dataclass(frozen=True)
class PredictOptions:
    """What ``predict`` writes; the fields are predict_model's options.

    Attributes:
        model: Checkpoint file; None: the shipped model.
        n: Samples to write, 1..``MAX_SAMPLES`` (all as single PNGs, the first
            ``GRID_SAMPLES`` in ``samples.png``).
        seed: Seed of the latent codes, 0..2**32-1.
        out: Result folder.
        sampler: ``default`` (the Gaussian mixture: stored, else fitted on training faces),
            ``gmm`` (the same) or ``normal`` (N(0, I)).
        images: Source of the test faces and of the training faces for what the checkpoint
            lacks; None: stored test faces, else the lineage's data or the bundled sample.
        num_recon: Faces to reconstruct, 1..``MAX_RECON``.
        interpolate: Also write ``interpolation.png``.
        traverse: Also write ``traversal.png``.
        log_wandb: Log the pictures to a W&B run (offline without an API key).
    """

    model: str | os.PathLike[str] | None = None
    n: int = 64
    seed: int = 0
    out: str | os.PathLike[str] = "outputs/predict"
    sampler: str = "default"
    images: str | os.PathLike[str] | None = None
    num_recon: int = 16
    interpolate: bool = False
    traverse: bool = False
    log_wandb: bool = False

    def check(self) -> None:
        """Raises: InputError naming the first number out of its range (the sampler is
        checked where codes are drawn, ``sample_codes``)."""
        for name, value, high in (
            ("n", self.n, MAX_SAMPLES),
            ("seed", self.seed, MAX_SEED),
            ("num_recon", self.num_recon, MAX_RECON),
        ):
            low = 0 if name == "seed" else 1
            if not low <= value <= high:
                raise InputError(f"--{name.replace('_', '-')} must be between {low} and {high}")


@dataclass
class PredictResult:
    """What ``predict`` wrote (``paths`` by picture name), the lines that say so and from what
    (``report``), and warnings about its inputs."""

    paths: dict[str, Path] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file or cannot be written, before any work."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    try:
        check_writable(out)
    except OSError as err:
        raise InputError(f"--out {out}: cannot write there ({err.strerror or err})") from err


def remove_stale(out: Path, options: PredictOptions) -> None:
    """Remove what an earlier run left in ``out`` that this run does not rewrite: single PNGs
    beyond this ``n`` and pictures of options not given now would pass for this run's."""
    for stale in (out / "samples").glob("sample_*.png"):
        stale.unlink()
    for key, wanted in zip(
        OPTIONAL_PICTURES, (options.interpolate, options.traverse), strict=True
    ):
        if not wanted:
            (out / f"{key}.png").unlink(missing_ok=True)


def predict(options: PredictOptions) -> PredictResult:
    """Write samples, reconstructions and the optional pictures to ``options.out``.

    Raises:
        CheckpointError, InputError: Naming the bad file or option, always before anything
            is written.
    """
    options.check()
    out = Path(options.out)
    check_out(out)
    model = load_model(options.model)
    result = PredictResult()
    if options.model is None:
        result.report.append(
            f"using the shipped model {model.path} (pass --model to use your own)"
        )
    needs_train = needs_training_faces(model.checkpoint, options.sampler, options.traverse)
    faces = load_faces(model.checkpoint, options.images, needs_train)
    if len(faces.test) < (2 if options.interpolate else 1):
        raise InputError(
            f"{faces.origin}: {len(faces.test)} test images; this needs at least "
            f"{2 if options.interpolate else 1} (give --images a folder with more distinct faces)"
        )
    z, sampled_from = sample_codes(model, options.n, options.seed, options.sampler, faces)
    pca = traversal_pca(model, faces) if options.traverse else None
    x = to_float(faces.test[: options.num_recon])
    # Every check has passed: from here on, only writing.
    if faces.warning:
        result.warnings.append(faces.warning)
    if len(x) < options.num_recon:
        result.report.append(
            f"--num-recon {options.num_recon}: only {len(x)} test faces available"
        )
    remove_stale(out, options)
    paths = result.paths
    paths["samples"] = write_samples(model.net, z, out)
    with torch.no_grad():
        recon = pairs_grid(x, model.net.reconstruct(x))
    paths["reconstructions"] = save_png(recon, out / "reconstructions.png")
    if options.interpolate:
        pairs = to_float(faces.test[: 2 * INTERPOLATE_PAIRS])
        paths["interpolation"] = save_png(
            interpolation_grid(model.net, pairs), out / "interpolation.png"
        )
    if pca is not None:
        paths["traversal"] = save_png(traversal_grid(model.net, pca), out / "traversal.png")
    shown = "" if options.n <= GRID_SAMPLES else f" (the grid shows the first {GRID_SAMPLES})"
    result.report += [
        f"{options.n} samples from {sampled_from}: {paths['samples']}{shown} and "
        f"{out / 'samples'}/",
        f"reconstructions of {len(x)} faces from {faces.origin}: {paths['reconstructions']}",
        *(f"{key}: {paths[key]}" for key in OPTIONAL_PICTURES if key in paths),
    ]
    if options.log_wandb:
        lineage = model.checkpoint.get("lineage", {})
        config = {
            "model": str(model.path),
            "n": options.n,
            "seed": options.seed,
            "sampler": sampled_from,
            "reconstructions": faces.origin,
            "git_commit": lineage.get("git_commit"),
            "data_hash": lineage.get("data_hash"),
        }
        caption = f"{len(x)} faces from {faces.origin}, each above its reconstruction"
        run = log_png_files(paths, out, config, {"reconstructions": caption})
        result.report.append(f"W&B run: {run}")
    return result
