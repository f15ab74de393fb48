"""Turn a training checkpoint into a slim model for inference.

``python -m vae_cats.package_model --model RUN/checkpoints/best.ckpt --out my_model.ckpt``

Keeps only what inference needs (architecture, network weights, lineage), fits the
Gaussian-mixture sampler on the posterior means of the training split the model was trained
on, and writes the result atomically. An existing ``--out`` is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

from vae_cats.checkpoint import (
    CheckpointError,
    read_checkpoint,
    slim_checkpoint,
    vae_from_checkpoint,
)
from vae_cats.fileio import atomic_write_bytes
from vae_cats.generate import DEFAULT_COMPONENTS, SamplerError, fit_mixture
from vae_cats.predict_model import InputError, image_splits, positive_int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="package_model",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="training checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the slim model")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--source", default=None, help="training data (default: the one in the run's config)"
    )
    parser.add_argument(
        "--components",
        type=positive_int,
        default=DEFAULT_COMPONENTS,
        help="Gaussian mixture components",
    )
    return parser.parse_args(argv)


def package(args: argparse.Namespace) -> str:
    """Write the slim model; returns the data source its mixture was fitted on.

    Raises:
        CheckpointError, InputError: Naming the bad file or option.
    """
    if args.out.exists() and not args.force:
        raise InputError(f"--out {args.out}: exists; pass --force to replace it")
    if args.out.is_dir():
        raise InputError(f"--out {args.out}: is a folder, give a file name")
    checkpoint = read_checkpoint(args.model)
    data_config = checkpoint.get("lineage", {}).get("config", {}).get("data", {})
    source = args.source or data_config.get("source")
    net = vae_from_checkpoint(checkpoint, args.model)
    train_images = image_splits(source, data_config.get("seed", 42))["train"]
    try:
        mixture = fit_mixture(net, train_images, args.components)
    except SamplerError as err:
        raise InputError(f"{source}: {err}: give more images or fewer --components") from err
    buffer = io.BytesIO()
    torch.save(slim_checkpoint(checkpoint, net, mixture.state_dict()), buffer)
    try:
        atomic_write_bytes(args.out, buffer.getvalue())
    except OSError as err:
        raise InputError(f"--out {args.out}: {err.strerror or err}") from err
    return source or "the default data"


def main(argv: list[str] | None = None) -> int:
    """``package_model``: returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)
    try:
        source = package(args)
    except (CheckpointError, InputError) as err:
        print(f"package_model: error: {err}", file=sys.stderr)
        return 2
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out.resolve()} ({size_mb:.1f} MB), mixture fitted on {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
