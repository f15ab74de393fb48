"""Generate cat faces with a trained VAE.

``python vae_cats/predict_model.py --model PATH/TO.ckpt [--n 64] [--seed 0] [--out DIR]``

Writes ``DIR/samples.png`` (grid), ``DIR/samples/sample_NNN.png`` (one per image) and
``DIR/reconstructions.png`` (rows alternate real test images and their reconstructions),
and logs samples and reconstructions to W&B (offline unless an API key is configured).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor

from vae_cats.checkpoint import CheckpointError, load_vae
from vae_cats.data import CatFacesDataModule
from vae_cats.images import make_grid, pairs_grid, save_png
from vae_cats.model import BaseVAE
from vae_cats.utils import wandb_mode

log = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="predict_model", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="training checkpoint (.ckpt)")
    parser.add_argument("--n", type=_positive_int, default=64, help="number of images to generate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the N(0, I) noise")
    parser.add_argument("--out", type=Path, default=Path("outputs/predict"), help="output folder")
    parser.add_argument(
        "--images",
        default="bundled",
        help="folder/.tar/.zip whose test split is reconstructed (default: the bundled sample)",
    )
    parser.add_argument(
        "--num-recon", type=_positive_int, default=16, help="images to reconstruct"
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    return parser.parse_args(argv)


def generate(net: BaseVAE, n: int, seed: int) -> Tensor:
    """Decode n codes of N(0, I) noise drawn with ``seed``: (n, 3, H, W) in [0, 1]."""
    return net.sample(n, generator=torch.Generator().manual_seed(seed))


def test_images(source: str, count: int) -> Tensor:
    """Up to ``count`` images of the test split of ``source``, float (B, 3, H, W) in [0, 1]."""
    with tempfile.TemporaryDirectory() as tmp:
        datamodule = CatFacesDataModule(source=source, processed_dir=tmp)
        datamodule.prepare_data()
        datamodule.setup("test")
    return datamodule.splits["test"][:count].float() / 255.0


def write_outputs(samples: Tensor, x: Tensor, recon: Tensor, out: Path) -> dict[str, Path]:
    """Write the sample grid, the single samples and the reconstruction grid under ``out``."""
    paths = {
        "samples": save_png(make_grid(samples), out / "samples.png"),
        "reconstructions": save_png(pairs_grid(x, recon), out / "reconstructions.png"),
    }
    for i, image in enumerate(samples):
        save_png(image, out / "samples" / f"sample_{i:03d}.png")
    return paths


def log_to_wandb(paths: dict[str, Path], out: Path, config: dict[str, Any]) -> str:
    """Log the written grids to a W&B run of job type ``predict``; returns the run folder."""
    import wandb

    run = wandb.init(
        project="vae_cats",
        job_type="predict",
        dir=out,
        mode=cast(Literal["online", "offline", "disabled"], wandb_mode()),
        config=config,
    )
    run.log({f"predict/{key}": wandb.Image(str(path)) for key, path in paths.items()})
    run.finish()
    return str(Path(run.dir).parent)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        net, lineage = load_vae(args.model)
    except CheckpointError as err:
        print(f"predict_model: error: {err}", file=sys.stderr)
        return 2
    samples = generate(net, args.n, args.seed)
    x = test_images(args.images, args.num_recon)
    recon = net.reconstruct(x)
    paths = write_outputs(samples, x, recon, args.out)
    print(f"{args.n} samples: {paths['samples']} and {args.out / 'samples'}/")
    print(f"reconstructions: {paths['reconstructions']}")
    if not args.no_wandb:
        config = {
            "model": str(args.model),
            "n": args.n,
            "seed": args.seed,
            "git_commit": lineage.get("git_commit"),
            "data_hash": lineage.get("data_hash"),
        }
        print(f"W&B run: {log_to_wandb(paths, args.out, config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
