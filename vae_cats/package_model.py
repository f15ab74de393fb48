"""Turn a checkpoint (a training one, or an already packaged one) into a slim model for inference.

``python -m vae_cats.package_model --model RUN/checkpoints/best.ckpt --out my_model.ckpt``

Keeps only what inference needs (architecture, float16 network weights, lineage) and adds,
from the training split the model was trained on (its lineage's data source and seed, or
``--source``): the Gaussian-mixture sampler (kept as it is when ``--model`` is already packaged
and ``--components`` is not given) and the principal components of the training faces'
posterior means; and ``--test-faces`` faces of the model's own test split, which predict
reconstructs by default. The test faces are stored only when the split's data hash is the one
in the model's lineage, so they are faces the model did not train on. Writes atomically; an
existing ``--out`` is replaced only with ``--force``. Every option is checked before any work.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vae_cats.checkpoint import (
    CheckpointError,
    read_checkpoint,
    slim_checkpoint,
    vae_from_checkpoint,
)
from vae_cats.data.ingest import resolve_source
from vae_cats.drift import reference_statistics, test_metrics
from vae_cats.fileio import atomic_write_bytes, check_writable
from vae_cats.generate import (
    DEFAULT_COMPONENTS,
    SamplerError,
    encode_means,
    fit_mixture,
    latent_pca,
)
from vae_cats.model import BaseVAE
from vae_cats.predict_model import InputError, bounded_int, image_splits, split_warning

DEFAULT_TEST_FACES = 32  # 384 KB of uint8 pixels: 2 interpolation rows + a 16-face recon grid


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="package_model",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the slim model")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--source", default=None, help="training data; None: the one in the model's lineage"
    )
    parser.add_argument(
        "--components",
        type=bounded_int(1),
        default=None,
        help="fit a Gaussian mixture of this many components; None: keep the mixture of an "
        f"already packaged --model (its samples stay the same), else fit {DEFAULT_COMPONENTS}",
    )
    parser.add_argument(
        "--test-faces",
        type=bounded_int(0, 256),
        default=DEFAULT_TEST_FACES,
        help="faces of the model's own test split to store for predict's reconstructions",
    )
    return parser.parse_args(argv)


def check_out(out: Path, force: bool) -> None:
    """Refuse, before any work, an ``--out`` that exists (without ``--force``), is a folder,
    or lies where nothing can be written."""
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
) -> dict[str, Any]:
    """The ``test_faces`` and ``test_faces_source`` entries of the slim model, or none (with a
    warning) when the split is not the model's own."""
    if count == 0:
        return {}
    name = resolve_source(source).name
    warning = split_warning(name, manifest, lineage)
    if warning:
        print(f"package_model: warning: {warning}; storing no test faces", file=sys.stderr)
        return {}
    about = {"source": name, "split": "test", "seed": seed, "data_hash": manifest["data_hash"]}
    return {"test_faces": test[:count].clone(), "test_faces_source": about}


def package(args: argparse.Namespace) -> str:
    """Write the slim model; returns what was fitted and stored, for the summary line.

    Raises:
        CheckpointError, InputError: Naming the bad file or option.
    """
    check_out(args.out, args.force)
    checkpoint = read_checkpoint(args.model)
    net = vae_from_checkpoint(checkpoint, args.model)
    lineage = checkpoint.get("lineage", {})
    data_config = lineage.get("config", {}).get("data", {})
    source = args.source or data_config.get("source")
    seed = data_config.get("seed", 42)
    splits, manifest = image_splits(source, seed)
    mu = encode_means(net, splits["train"])
    if len(mu) < 2:
        raise InputError(f"{source}: {len(mu)} training images; give a folder with more faces")
    kept = args.components is None and "gmm_sampler" in checkpoint
    mixture = checkpoint["gmm_sampler"] if kept else fit(mu, args.components, source)
    extras = own_test_faces(splits["test"], manifest, lineage, source, seed, args.test_faces)
    extras.update(drift_extras(net, splits, manifest, mixture))
    slim = slim_checkpoint(
        checkpoint, net, gmm_sampler=mixture, latent_pca=latent_pca(mu).state_dict(), **extras
    )
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    try:
        atomic_write_bytes(args.out, buffer.getvalue())
    except OSError as err:
        raise InputError(f"--out {args.out}: {err.strerror or err}") from err
    stored = len(extras.get("test_faces", ()))
    fitted = "principal components" if kept else "mixture and principal components"
    return (
        f"{fitted} fitted on {len(mu)} training faces of {resolve_source(source).name}"
        f"{' (mixture kept from --model)' if kept else ''}; "
        f"{stored} of its {len(splits['test'])} test faces stored"
    )


def drift_extras(
    net: BaseVAE, splits: dict[str, Tensor], manifest: dict[str, Any], mixture: dict[str, Tensor]
) -> dict[str, Any]:
    """``drift`` (vae_cats.drift.reference_statistics: thresholds set on the validation split)
    and ``metrics`` (test SSIM/PSNR) for the HTTP API; none, with a warning, from too few
    images."""
    extras: dict[str, Any] = {}
    if len(splits["test"]):
        metrics = test_metrics(net, splits["test"])
        extras["metrics"] = {"split": "test", "data_hash": manifest["data_hash"], **metrics}
    try:
        extras["drift"] = reference_statistics(net, splits["train"], splits["val"], mixture)
    except ValueError as err:
        print(f"package_model: warning: no drift statistics stored: {err}", file=sys.stderr)
    return extras


def fit(mu: Tensor, components: int | None, source: str | None) -> dict[str, Tensor]:
    """State of a mixture fitted on the training means; InputError when there are too few."""
    try:
        return fit_mixture(mu, components or DEFAULT_COMPONENTS).state_dict()
    except SamplerError as err:
        raise InputError(f"{source}: {err}: give more images or fewer --components") from err


def main(argv: list[str] | None = None) -> int:
    """``package_model``: returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)
    try:
        summary = package(args)
    except (CheckpointError, InputError) as err:
        print(f"package_model: error: {err}", file=sys.stderr)
        return 2
    size_mb = args.out.stat().st_size / 1e6
    print(f"wrote {args.out.resolve()} ({size_mb:.1f} MB): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
