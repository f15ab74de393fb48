"""Generate cat faces with a trained VAE.

``python vae_cats/predict_model.py [--model PATH/TO.ckpt] [--n 64] [--seed 0] [--out DIR]``

Writes ``DIR/samples.png`` (a grid of the first 256 samples), ``DIR/samples/sample_NNN.png``
(every sample), ``DIR/reconstructions.png`` (rows alternate real test faces the model did not
train on and their reconstructions), optionally ``DIR/interpolation.png`` and
``DIR/traversal.png``, and logs the pictures to W&B (offline unless an API key is
configured). Without ``--model`` the model shipped in the package is used. Every option is
checked before any work; outputs of an earlier run in ``DIR`` that this run does not write
are removed. The work is ``vae_cats.predict.predict``: this module parses, calls, prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_cats.cli import DefaultsHelpFormatter, bounded_int, run_command
from vae_cats.generate import INTERPOLATE_PAIRS, SAMPLERS
from vae_cats.predict import (
    GRID_SAMPLES,
    MAX_RECON,
    MAX_SAMPLES,
    MAX_SEED,
    SHIPPED_MODEL,
    PredictOptions,
    predict,
)

__all__ = ["SHIPPED_MODEL", "main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="predict_model",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--model", type=Path, help=f"checkpoint (.ckpt); None: the shipped {SHIPPED_MODEL.name}")
    add(
        "--n",
        type=bounded_int(1, MAX_SAMPLES),
        default=64,
        help=f"images to generate (all as single PNGs, the first {GRID_SAMPLES} in the grid)",
    )
    add(
        "--seed",
        type=bounded_int(0, MAX_SEED),
        default=0,
        help="seed of the latent codes, a whole number from 0 to 2**32-1 (4294967295)",
    )
    add("--out", type=Path, default=Path("outputs/predict"), help="output folder")
    add(
        "--sampler",
        choices=SAMPLERS,
        default="default",
        help="gmm: a Gaussian mixture of the training latent means; pca_gmm: a mixture in their "
        "principal subspace; flow: a normalising flow there (each stored in a packaged model, "
        "else fitted on the training faces of --images or of the data the model's lineage "
        "names); normal: N(0, I), which for this recipe decodes to texture; default: the one "
        "the packaged model names, else gmm",
    )
    add(
        "--images",
        help="folder/.tar/.zip ('bundled': the bundled sample) whose test split is "
        "reconstructed and whose training split fits what the checkpoint lacks (mixture, "
        "principal components); None: the model's own test faces stored in a packaged "
        "checkpoint, else the data its lineage names (when it exists here) or the bundled sample",
    )
    add("--num-recon", type=bounded_int(1, MAX_RECON), default=16, help="faces to reconstruct")
    add(
        "--interpolate",
        action="store_true",
        help=f"also write interpolation.png (up to {INTERPOLATE_PAIRS} pairs of test faces)",
    )
    add(
        "--traverse",
        action="store_true",
        help="also write traversal.png (the mean code swept along the principal components "
        "of the training latent means)",
    )
    add("--no-wandb", action="store_true", help="do not log to W&B")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``predict_model.py``: returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)
    options = PredictOptions(
        model=args.model,
        n=args.n,
        seed=args.seed,
        out=args.out,
        sampler=args.sampler,
        images=args.images,
        num_recon=args.num_recon,
        interpolate=args.interpolate,
        traverse=args.traverse,
        log_wandb=not args.no_wandb,
    )

    def call() -> int:
        result = predict(options)
        for warning in result.warnings:
            print(f"predict_model: warning: {warning}", file=sys.stderr)
        print("\n".join(result.report))
        return 0

    return run_command("predict_model", call)


if __name__ == "__main__":
    sys.exit(main())
