"""Model gate (CI step of model.yml): score a candidate checkpoint next to the shipped model.

    python -m scripts.model_gate --candidate PATH/best.ckpt
    python -m scripts.model_gate --artifact entity/project/model-abc123:v3   # needs WANDB_API_KEY

(``-m`` from the project root, so that ``benchmarks.bench_model`` imports.) Both models are
scored with the model benchmark's reconstruction figures (``benchmarks/bench_model.py``:
Kornia SSIM and PSNR of decode(mu), active latent dimensions, KL) on the test split of
``--source`` (default: the project's data, as training resolves it: ``data/raw``, else
../shared cats64, else the bundled sample), split with seed 42 like every experiment.

The candidate fails when it is worse than the baseline by more than a margin:

- SSIM lower by more than ``SSIM_MARGIN`` (0.01; the shipped model scores 0.79);
- PSNR lower by more than ``PSNR_MARGIN`` (0.5 dB; the shipped model scores 24.9 dB).

The margins let a retrained model differ by run-to-run noise (seed, bf16 rounding), not by
a real loss of quality. The table (Markdown and JSON) goes to ``--out``; the table also says
whether each checkpoint was trained on this very split (its data hash), since a model trained
on another split may have seen these test images.

Exit codes: 0 the candidate passes, 1 it is worse by more than a margin, 2 bad input (a
missing or unusable checkpoint, no ``WANDB_API_KEY`` for ``--artifact``, unusable data), with
one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_model import reconstruction_figures
from vae_cats.checkpoint import (
    SHIPPED_MODEL,
    CheckpointError,
    read_checkpoint,
    vae_from_checkpoint,
)
from vae_cats.data.ingest import processed_subdir
from vae_cats.data.settings import IngestSettings
from vae_cats.data.sources import resolve_source
from vae_cats.data.store import load_splits, prepare
from vae_cats.fileio import PROJECT_DIR, atomic_write_bytes
from vae_cats.model import BaseVAE

SSIM_MARGIN = 0.01
PSNR_MARGIN = 0.5
SEED = 42
KEY = "WANDB_API_KEY"


class GateError(Exception):
    """Bad input to the gate; the message is the one line printed."""


@dataclass
class Score:
    name: str
    path: str
    ssim: float
    psnr: float
    active: float
    kl: float
    same_split: bool


def download_artifact(name: str, root: Path) -> Path:
    """Download a W&B model artifact and return its checkpoint (``best.ckpt``, as training
    logs it, else the only ``*.ckpt``).

    Raises:
        GateError: Without a name or ``WANDB_API_KEY``, when W&B refuses, or when the
            artifact holds no single checkpoint.
    """
    if not name.strip():
        raise GateError(
            "no artifact name: a repository_dispatch needs client_payload.artifact_version_string"
        )
    if not os.environ.get(KEY, "").strip():
        raise GateError(
            f"{KEY} is not set: add your W&B API key as a CI secret to download {name}"
        )
    import wandb

    try:
        folder = Path(wandb.Api().artifact(name, type="model").download(root=str(root)))
    except (wandb.errors.Error, ValueError) as err:
        raise GateError(f"W&B artifact {name}: {str(err).splitlines()[0]}") from None
    found = sorted(folder.rglob("*.ckpt"))
    best = [p for p in found if p.name == "best.ckpt"]
    if len(best) == 1 or len(found) == 1:
        return (best or found)[0]
    raise GateError(f"W&B artifact {name}: holds {len(found)} .ckpt files, expected one")


def load_test_split(source: str | None, processed_dir: Path) -> tuple[torch.Tensor, str]:
    """Test images as float (N, 3, 64, 64) in [0, 1], and the split's data hash.

    Raises:
        GateError: If the source is missing or holds no usable image.
    """
    path = resolve_source(source)
    processed = processed_subdir(processed_dir, path)
    try:
        manifest = prepare(path, processed, IngestSettings(seed=SEED))
    except (OSError, ValueError) as err:
        raise GateError(f"data: {err}") from None
    test = load_splits(processed)["test"].float() / 255
    if len(test) == 0:
        raise GateError(f"data: {path} has no test images")
    return test, str(manifest["data_hash"])


def load(path: Path) -> tuple[BaseVAE, str | None]:
    """The network of a checkpoint, in eval mode, and the data hash it was trained on.

    Raises:
        GateError: If the checkpoint cannot be read or is not a vae_cats checkpoint.
    """
    try:
        checkpoint = read_checkpoint(path)
        net = vae_from_checkpoint(checkpoint, path)
    except CheckpointError as err:
        raise GateError(str(err)) from None
    return net.eval(), checkpoint.get("lineage", {}).get("data_hash")


def score(name: str, path: Path, test: torch.Tensor, data_hash: str) -> Score:
    """Reconstruction figures of one checkpoint on the test images.

    Raises:
        GateError: As ``load``.
    """
    net, trained_on = load(path)
    return Score(
        name=name,
        path=str(path),
        same_split=trained_on == data_hash,
        **reconstruction_figures(net, test),
    )


def verdict(candidate: Score, baseline: Score, ssim_margin: float, psnr_margin: float) -> str:
    """'' when the candidate passes, else why it fails (one line)."""
    worse = []
    if candidate.ssim < baseline.ssim - ssim_margin:
        worse.append(f"SSIM {candidate.ssim:.4f} < {baseline.ssim:.4f} - {ssim_margin}")
    if candidate.psnr < baseline.psnr - psnr_margin:
        worse.append(f"PSNR {candidate.psnr:.2f} dB < {baseline.psnr:.2f} - {psnr_margin} dB")
    return "; ".join(worse)


def table(scores: list[Score], test_size: int, failure: str) -> str:
    """The comparison as Markdown, with the verdict underneath."""
    lines = [
        "| model | ssim | psnr (dB) | active | kl (nats) | trained on this split | checkpoint |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.name} | {s.ssim:.4f} | {s.psnr:.2f} | {s.active:.0%} | {s.kl:.0f} "
            f"| {'yes' if s.same_split else 'no'} | {s.path} |"
        )
    lines.append("")
    lines.append(f"test split: {test_size} images (seed {SEED})")
    lines.append(f"verdict: FAIL: {failure}" if failure else "verdict: pass")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.model_gate", description=__doc__.splitlines()[0]
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--candidate", type=Path, help="checkpoint file to gate")
    which.add_argument("--artifact", help="W&B model artifact, e.g. entity/project/name:v3")
    parser.add_argument(
        "--baseline", type=Path, default=SHIPPED_MODEL, help="default: shipped model"
    )
    parser.add_argument("--source", default=None, help="data source (default as training)")
    parser.add_argument("--processed-dir", type=Path, default=PROJECT_DIR / "data" / "processed")
    parser.add_argument("--ssim-margin", type=float, default=SSIM_MARGIN)
    parser.add_argument("--psnr-margin", type=float, default=PSNR_MARGIN)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs" / "model_gate")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[str, dict[str, Any], bool]:
    """Download (if asked), score both models; returns the table, the JSON and pass/fail."""
    candidate = args.candidate or download_artifact(args.artifact, args.out / "artifact")
    for path in (candidate, args.baseline):
        load(path)  # a bad checkpoint stops the gate before the data is read
    test, data_hash = load_test_split(args.source, args.processed_dir)
    scores = [
        score("candidate", candidate, test, data_hash),
        score("baseline", args.baseline, test, data_hash),
    ]
    failure = verdict(scores[0], scores[1], args.ssim_margin, args.psnr_margin)
    report = {
        "scores": [vars(s) for s in scores],
        "artifact": args.artifact,
        "test_size": len(test),
        "data_hash": data_hash,
        "ssim_margin": args.ssim_margin,
        "psnr_margin": args.psnr_margin,
        "passed": not failure,
        "failure": failure,
    }
    return table(scores, len(test), failure), report, not failure


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        text, report, passed = run(args)
        atomic_write_bytes(args.out / "model_gate.md", (text + "\n").encode())
        atomic_write_bytes(args.out / "model_gate.json", json.dumps(report, indent=1).encode())
    except GateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or args.out}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
