"""The model gate on real checkpoints: the shipped model against itself and against a copy
with damaged weights, scored on the bundled sample's test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.model_gate import Score, verdict
from tests.helpers import PROJECT_DIR
from vae_cats.checkpoint import SHIPPED_MODEL as SHIPPED


def run_gate(
    tmp_path: Path, *args: str | Path, env: dict | None = None
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "scripts.model_gate",
        "--source",
        "bundled",
        "--processed-dir",
        str(tmp_path / "processed"),
        "--out",
        str(tmp_path / "gate"),
        *map(str, args),
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=PROJECT_DIR, env=env
    )


def damaged_copy(path: Path, out: Path, scale: float) -> Path:
    """The shipped checkpoint with Gaussian noise of ``scale`` x each tensor's std added to
    every weight: a real checkpoint of a worse model."""
    checkpoint = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for name, tensor in checkpoint["state_dict"].items():
        if tensor.is_floating_point() and tensor.numel() > 1:
            noise = torch.randn(tensor.shape, generator=generator) * tensor.float().std() * scale
            checkpoint["state_dict"][name] = (tensor.float() + noise).to(tensor.dtype)
    torch.save(checkpoint, out)
    return out


@pytest.mark.slow
def test_shipped_model_passes_against_itself_and_a_damaged_copy_fails(tmp_path: Path) -> None:
    same = run_gate(tmp_path, "--candidate", SHIPPED)
    assert same.returncode == 0, same.stderr
    report = json.loads((tmp_path / "gate" / "model_gate.json").read_text())
    candidate, baseline = report["scores"]
    assert candidate["ssim"] == baseline["ssim"] and 0.3 < baseline["ssim"] < 1
    assert candidate["psnr"] == baseline["psnr"] and 10 < baseline["psnr"] < 40
    assert report["passed"] and report["test_size"] > 50
    assert "verdict: pass" in same.stdout
    assert (tmp_path / "gate" / "model_gate.md").read_text().strip() == same.stdout.strip()

    worse = run_gate(tmp_path, "--candidate", damaged_copy(SHIPPED, tmp_path / "worse.ckpt", 0.5))
    assert worse.returncode == 1, worse.stderr
    report = json.loads((tmp_path / "gate" / "model_gate.json").read_text())
    candidate, baseline = report["scores"]
    assert candidate["ssim"] < baseline["ssim"] - 0.01
    assert "verdict: FAIL: SSIM" in worse.stdout and not report["passed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--candidate", "no/such.ckpt"], "no such checkpoint file"),
        (["--candidate", "README.md"], "not a PyTorch checkpoint"),
        (["--artifact", "me/vae_cats/model-x:v0"], "WANDB_API_KEY is not set"),
        (["--artifact", ""], "no artifact name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    result = run_gate(tmp_path, *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def score(ssim: float, psnr: float) -> Score:
    return Score("m", "m.ckpt", ssim, psnr, 1.0, 100.0, True)


def test_verdict_margins() -> None:
    baseline = score(0.66, 22.2)
    assert verdict(score(0.651, 21.71), baseline, 0.01, 0.5) == ""
    assert verdict(score(0.649, 22.2), baseline, 0.01, 0.5).startswith("SSIM 0.6490 < 0.6600")
    assert "PSNR 21.60 dB" in verdict(score(0.70, 21.6), baseline, 0.01, 0.5)
