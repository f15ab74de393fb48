"""Generate cat faces with a trained VAE.

``python vae_cats/predict_model.py [--model PATH/TO.ckpt] [--n 64] [--seed 0] [--out DIR]``

Writes ``DIR/samples.png`` (grid), ``DIR/samples/sample_NNN.png`` (one per image),
``DIR/reconstructions.png`` (rows alternate real test images and their reconstructions),
optionally ``DIR/interpolation.png`` and ``DIR/traversal.png``, and logs the pictures to W&B
(offline unless an API key is configured). Without ``--model`` the model shipped in the
package is used.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from torch import Tensor

from vae_cats.checkpoint import CheckpointError, read_checkpoint, vae_from_checkpoint
from vae_cats.data.store import ingested_splits
from vae_cats.fileio import ASSETS_DIR
from vae_cats.generate import SamplerError, interpolation_grid, latent_codes, traversal_grid
from vae_cats.images import make_grid, pairs_grid, save_png, to_float
from vae_cats.tracking import log_png_files

log = logging.getLogger(__name__)
SHIPPED_MODEL = ASSETS_DIR / "cats_vae.ckpt"


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="predict_model", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"training checkpoint (.ckpt); default: the shipped model {SHIPPED_MODEL.name}",
    )
    parser.add_argument("--n", type=positive_int, default=64, help="number of images to generate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent noise")
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
        default="bundled",
        help="folder/.tar/.zip whose test split is reconstructed (default: the bundled sample)",
    )
    parser.add_argument("--num-recon", type=positive_int, default=16, help="images to reconstruct")
    parser.add_argument("--interpolate", action="store_true", help="also write interpolation.png")
    parser.add_argument("--traverse", action="store_true", help="also write traversal.png")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    return parser.parse_args(argv)


class InputError(ValueError):
    """A command-line input that cannot work; the message names it."""


def image_splits(source: str | None, seed: int = 42) -> dict[str, Tensor]:
    """``ingested_splits`` with its errors as ``InputError``s naming the source."""
    try:
        return ingested_splits(source, seed)
    except OSError as err:
        raise InputError(f"{source}: {err.strerror or err}") from err
    except ValueError as err:  # NoUsableImageError too; ingest's messages name the source
        raise InputError(str(err)) from err


def _require(count: int, needed: int, what: str, source: str) -> None:
    if count < needed:
        raise InputError(
            f"{source}: {count} {what} after deduplication and the split; "
            f"this needs at least {needed} (give a folder with more distinct faces)"
        )


def main(argv: list[str] | None = None) -> int:
    """``predict_model.py``: returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)
    try:
        return predict(args)
    except (CheckpointError, InputError) as err:
        print(f"predict_model: error: {err}", file=sys.stderr)
        return 2


def predict(args: argparse.Namespace) -> int:
    """Write the pictures ``main`` describes; raises CheckpointError or InputError."""
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    model = args.model or SHIPPED_MODEL
    checkpoint = read_checkpoint(model)
    net = vae_from_checkpoint(checkpoint, model)
    if args.model is None:
        print(f"using the shipped model {model} (pass --model to use your own)")
    splits = image_splits(args.images)
    _require(len(splits["test"]), 2 if args.interpolate else 1, "test images", args.images)
    x = to_float(splits["test"][: args.num_recon])
    try:
        z, origin = latent_codes(args.sampler, net, checkpoint, args.n, args.seed, splits["train"])
    except SamplerError as err:
        raise InputError(f"--sampler {err}: use --sampler normal or more --images") from err
    with torch.no_grad():
        samples = net.decode(z)
    paths = {
        "samples": save_png(make_grid(samples), args.out / "samples.png"),
        "reconstructions": save_png(
            pairs_grid(x, net.reconstruct(x)), args.out / "reconstructions.png"
        ),
    }
    # Single PNGs of an earlier, larger --n in the same folder would pass for this run's.
    for stale in (args.out / "samples").glob("sample_*.png"):
        stale.unlink()
    for i, image in enumerate(samples):
        save_png(image, args.out / "samples" / f"sample_{i:03d}.png")
    if args.interpolate:
        paths["interpolation"] = save_png(
            interpolation_grid(net, x), args.out / "interpolation.png"
        )
    if args.traverse:
        paths["traversal"] = save_png(traversal_grid(net, x), args.out / "traversal.png")
    print(f"{args.n} samples from {origin}: {paths['samples']} and {args.out / 'samples'}/")
    for key in paths.keys() - {"samples"}:
        print(f"{key}: {paths[key]}")
    if not args.no_wandb:
        lineage = checkpoint.get("lineage", {})
        config = {
            "model": str(model),
            "n": args.n,
            "seed": args.seed,
            "sampler": origin,
            "git_commit": lineage.get("git_commit"),
            "data_hash": lineage.get("data_hash"),
        }
        print(f"W&B run: {log_png_files(paths, args.out, config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
