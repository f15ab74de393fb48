"""Generate cat faces with a trained VAE.

``python vae_cats/predict_model.py [--model PATH/TO.ckpt] [--n 64] [--seed 0] [--out DIR]``

Writes ``DIR/samples.png`` (a grid of the first 256 samples), ``DIR/samples/sample_NNN.png``
(every sample), ``DIR/reconstructions.png`` (rows alternate real test faces the model did not
train on and their reconstructions), optionally ``DIR/interpolation.png`` and
``DIR/traversal.png``, and logs the pictures to W&B (offline unless an API key is
configured). Without ``--model`` the model shipped in the package is used. Every option is
checked before any work; outputs of an earlier run in ``DIR`` that this run does not write
are removed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cats.checkpoint import CheckpointError, read_checkpoint, vae_from_checkpoint
from vae_cats.data.ingest import resolve_source
from vae_cats.data.store import ingested
from vae_cats.fileio import ASSETS_DIR, check_writable
from vae_cats.generate import (
    INTERPOLATE_PAIRS,
    LatentPCA,
    SamplerError,
    decode_batches,
    encode_means,
    interpolation_grid,
    latent_codes,
    latent_pca,
    traversal_grid,
)
from vae_cats.images import make_grid, pairs_grid, save_png, to_float
from vae_cats.model import ConvVAE
from vae_cats.tracking import log_png_files

log = logging.getLogger(__name__)
SHIPPED_MODEL = ASSETS_DIR / "cats_vae.ckpt"
MAX_SAMPLES = 10_000  # a run's single PNGs fill about 80 MB; more: another --seed
GRID_SAMPLES = 256  # samples.png stays a viewable 32 x 8 grid (530 x 2114 pixels)
MAX_RECON = 256
OPTIONAL_PICTURES = ("interpolation", "traversal")


class InputError(ValueError):
    """A command-line input that cannot work; the message names it."""


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "whole number"  # argparse names the type in its error
    return parse


positive_int = bounded_int(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="predict_model",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"checkpoint (.ckpt); None: the shipped model {SHIPPED_MODEL.name}",
    )
    parser.add_argument(
        "--n",
        type=bounded_int(1, MAX_SAMPLES),
        default=64,
        help=f"images to generate (all as single PNGs, the first {GRID_SAMPLES} in the grid)",
    )
    parser.add_argument(
        "--seed", type=bounded_int(0, 2**32 - 1), default=0, help="seed of the latent codes"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/predict"), help="output folder")
    parser.add_argument(
        "--sampler",
        choices=["default", "normal", "gmm"],
        default="default",
        help="normal: N(0, I); gmm: Gaussian mixture fitted on training latent means; "
        "default: gmm when the checkpoint carries a fitted mixture, else normal",
    )
    parser.add_argument(
        "--images",
        default=None,
        help="folder/.tar/.zip ('bundled': the bundled sample) whose test split is "
        "reconstructed and whose training split fits what the checkpoint lacks (mixture, "
        "principal components); None: the model's own test faces stored in a packaged "
        "checkpoint, else the bundled sample",
    )
    parser.add_argument(
        "--num-recon", type=bounded_int(1, MAX_RECON), default=16, help="faces to reconstruct"
    )
    parser.add_argument(
        "--interpolate",
        action="store_true",
        help=f"also write interpolation.png (up to {INTERPOLATE_PAIRS} pairs of test faces)",
    )
    parser.add_argument(
        "--traverse",
        action="store_true",
        help="also write traversal.png (the mean code swept along the principal components "
        "of the training latent means)",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    return parser.parse_args(argv)


def describe_error(source: str | None, err: OSError | ValueError) -> str:
    """One line for a data-source error: ingest's own messages name the source already."""
    text = str(err) if not isinstance(err, OSError) or err.strerror is None else err.strerror
    return text if source is not None and str(source) in text else f"{source}: {text}"


def image_splits(source: str | None, seed: int = 42) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``vae_cats.data.store.ingested`` (splits and manifest) with its errors as
    ``InputError``s naming the source once."""
    try:
        return ingested(source, seed)
    except (OSError, ValueError) as err:  # NoUsableImageError too
        raise InputError(describe_error(source, err)) from err


def _require(count: int, needed: int, what: str, source: str) -> None:
    if count < needed:
        raise InputError(
            f"{source}: {count} {what}; this needs at least {needed} "
            "(give --images a folder with more distinct faces)"
        )


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


@dataclass
class Faces:
    """Real faces for predict: test faces to reconstruct and interpolate, where they came
    from, training faces for what the checkpoint lacks (None when not needed), and why the
    test faces may include training faces of the model (None when they do not)."""

    test: Tensor
    origin: str
    train: Tensor | None
    warning: str | None = None


def load_faces(args: argparse.Namespace, checkpoint: dict[str, Any], seed: int) -> Faces:
    """Test faces the model did not train on when it can tell: those stored in a packaged
    checkpoint unless ``--images`` is given, else the test split of ``--images`` (or of the
    bundled sample), with a warning unless the data hash matches the lineage."""
    needs_train = needs_training_faces(args, checkpoint)
    stored: Tensor | None = None if args.images else checkpoint.get("test_faces")
    if stored is not None and not needs_train:
        return Faces(stored, stored_origin(checkpoint), None)
    images = args.images or "bundled"
    splits, manifest = image_splits(images, seed)
    train = splits["train"] if needs_train else None
    if stored is not None:
        return Faces(stored, stored_origin(checkpoint), train)
    name = resolve_source(images).name
    warning = split_warning(name, manifest, checkpoint.get("lineage", {}))
    which = "not the model's own split" if warning else "the model's own test split"
    origin = f"the test split of {name} (seed {seed}; {which})"
    return Faces(splits["test"], origin, train, warning)


def stored_origin(checkpoint: dict[str, Any]) -> str:
    about = checkpoint.get("test_faces_source", {})
    return (
        f"the model's own test split ({about.get('source', '?')}, seed {about.get('seed', '?')}"
        "), stored in the checkpoint"
    )


def needs_training_faces(args: argparse.Namespace, checkpoint: dict[str, Any]) -> bool:
    """Whether this run fits something the checkpoint does not carry."""
    fits_mixture = args.sampler == "gmm" and "gmm_sampler" not in checkpoint
    return fits_mixture or (args.traverse and "latent_pca" not in checkpoint)


def traversal_pca(net: ConvVAE, checkpoint: dict[str, Any], faces: Faces) -> LatentPCA:
    """Principal components of the training means: stored in a packaged model, else fitted
    on the training faces ``load_faces`` loaded."""
    if "latent_pca" in checkpoint:
        return LatentPCA.from_state_dict(checkpoint["latent_pca"])
    count = 0 if faces.train is None else len(faces.train)
    if faces.train is None or count < 2:
        raise InputError(
            f"--traverse: {count} training images to fit principal components on; "
            "this needs at least 2 (give more --images)"
        )
    return latent_pca(encode_means(net, faces.train))


def main(argv: list[str] | None = None) -> int:
    """``predict_model.py``: returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)
    try:
        return predict(args)
    except (CheckpointError, InputError) as err:
        print(f"predict_model: error: {err}", file=sys.stderr)
        return 2


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or cannot be written, before any work."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    try:
        check_writable(out)
    except OSError as err:
        raise InputError(f"--out {out}: cannot write there ({err.strerror or err})") from err


def predict(args: argparse.Namespace) -> int:
    """Write the pictures ``main`` describes; raises CheckpointError or InputError, always
    before anything is written."""
    check_out(args.out)
    model = args.model or SHIPPED_MODEL
    checkpoint = read_checkpoint(model)
    net = vae_from_checkpoint(checkpoint, model)
    if args.model is None:
        print(f"using the shipped model {model} (pass --model to use your own)")
    seed = checkpoint.get("lineage", {}).get("config", {}).get("data", {}).get("seed", 42)
    faces = load_faces(args, checkpoint, seed)
    _require(len(faces.test), 2 if args.interpolate else 1, "test images", faces.origin)
    try:
        z, origin = latent_codes(args.sampler, net, checkpoint, args.n, args.seed, faces.train)
    except SamplerError as err:
        raise InputError(f"--sampler {err}: use --sampler normal or more --images") from err
    pca = traversal_pca(net, checkpoint, faces) if args.traverse else None
    x = to_float(faces.test[: args.num_recon])
    # Every check has passed: from here on, only writing.
    if faces.warning:
        print(f"predict_model: warning: {faces.warning}", file=sys.stderr)
    if len(x) < args.num_recon:
        print(f"--num-recon {args.num_recon}: only {len(x)} test faces available")
    remove_stale(args)
    paths = {"samples": write_samples(net, z, args.out)}
    with torch.no_grad():
        recon = pairs_grid(x, net.reconstruct(x))
    paths["reconstructions"] = save_png(recon, args.out / "reconstructions.png")
    if args.interpolate:
        pairs = to_float(faces.test[: 2 * INTERPOLATE_PAIRS])
        grid = interpolation_grid(net, pairs)
        paths["interpolation"] = save_png(grid, args.out / "interpolation.png")
    if pca is not None:
        paths["traversal"] = save_png(traversal_grid(net, pca), args.out / "traversal.png")
    shown = "" if args.n <= GRID_SAMPLES else f" (the grid shows the first {GRID_SAMPLES})"
    print(f"{args.n} samples from {origin}: {paths['samples']}{shown} and {args.out / 'samples'}/")
    print(f"reconstructions of {len(x)} faces from {faces.origin}: {paths['reconstructions']}")
    for key in OPTIONAL_PICTURES:
        if key in paths:
            print(f"{key}: {paths[key]}")
    if not args.no_wandb:
        lineage = checkpoint.get("lineage", {})
        config = {
            "model": str(model),
            "n": args.n,
            "seed": args.seed,
            "sampler": origin,
            "reconstructions": faces.origin,
            "git_commit": lineage.get("git_commit"),
            "data_hash": lineage.get("data_hash"),
        }
        captions = {
            "reconstructions": f"{len(x)} faces from {faces.origin}, each above its reconstruction"
        }
        print(f"W&B run: {log_png_files(paths, args.out, config, captions)}")
    return 0


def remove_stale(args: argparse.Namespace) -> None:
    """Remove what an earlier run left in ``--out`` that this run does not rewrite: single
    PNGs beyond this ``--n`` and pictures of options not given now would pass for this run's."""
    for stale in (args.out / "samples").glob("sample_*.png"):
        stale.unlink()
    for key in OPTIONAL_PICTURES:
        if not getattr(args, "interpolate" if key == "interpolation" else "traverse"):
            (args.out / f"{key}.png").unlink(missing_ok=True)


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


if __name__ == "__main__":
    sys.exit(main())
