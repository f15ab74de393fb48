"""Turn a training checkpoint into the slim model that ships in the package.

``python -m vae_cats.package_model --model RUN/checkpoints/best.ckpt [--out PATH]``

Keeps only what inference needs (architecture, network weights, lineage), fits the
Gaussian-mixture sampler on the posterior means of the training split the model was trained
on, and writes the result atomically (default: ``vae_cats/assets/cats_vae.ckpt``, the model
``predict_model.py`` uses without ``--model``).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import torch

from vae_cats.checkpoint import CheckpointError, read_checkpoint, vae_from_checkpoint
from vae_cats.ingest import atomic_write_bytes
from vae_cats.predict_model import (
    SHIPPED_MODEL,
    InputError,
    encode_means,
    image_splits,
    positive_int,
)
from vae_cats.samplers import GaussianMixtureSampler


def slim_checkpoint(
    checkpoint: dict[str, Any], path: Path, source: str | None, seed: int, components: int
) -> dict[str, Any]:
    """Inference-only checkpoint dict with a ``gmm_sampler`` fitted on the training split of
    ``source`` (split ``seed``); network weights stored as float16.

    Raises:
        InputError: If source is unusable or has fewer training images than components.
    """
    net = vae_from_checkpoint(checkpoint, path)
    means = encode_means(net, image_splits(source, seed)["train"])
    try:
        mixture = GaussianMixtureSampler(n_components=components).fit(means)
    except ValueError as err:
        raise InputError(f"{source}: {err}: give more images or fewer --components") from err
    # float16 weights halve the file (the package ships it); loading casts back to float32,
    # and the network trained under bf16 autocast, which is coarser than float16. The mixture
    # stays float64, as scikit-learn fitted it: rounding would break the covariances'
    # positive-definiteness that sampling checks.
    return {
        "net_config": checkpoint["net_config"],
        "state_dict": {k: v.half() for k, v in net.state_dict().items()},
        "lineage": checkpoint.get("lineage", {}),
        "gmm_sampler": mixture.state_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="package_model", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="training checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, default=SHIPPED_MODEL, help="where to write")
    parser.add_argument(
        "--source", default=None, help="training data (default: the one in the run's config)"
    )
    parser.add_argument(
        "--components", type=positive_int, default=10, help="Gaussian mixture components"
    )
    args = parser.parse_args(argv)
    try:
        checkpoint = read_checkpoint(args.model)
        data_config = checkpoint.get("lineage", {}).get("config", {}).get("data", {})
        source = args.source or data_config.get("source")
        seed = data_config.get("seed", 42)
        slim = slim_checkpoint(checkpoint, args.model, source, seed, args.components)
    except (CheckpointError, InputError) as err:
        print(f"package_model: error: {err}", file=sys.stderr)
        return 2
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, buffer.getvalue())
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB), mixture fitted on {source or 'the default data'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
