"""The training profiler: phase attribution on a real profile, and `make profile`'s script on
the demo experiment with the bundled faces."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd import profiler as autograd_profiler

from benchmarks.profile_train import (
    FORWARD_RANGE,
    LOSS_RANGE,
    PHASES,
    phase_of_range,
    summarise,
    tables,
)
from tests.helpers import PROJECT_DIR


def test_phase_of_range_maps_lightning_actions() -> None:
    assert phase_of_range("[_TrainingEpochLoop].train_dataloader_next") == "data"
    assert phase_of_range("[Strategy]SingleDeviceStrategy.batch_to_device") == "data"
    assert phase_of_range(FORWARD_RANGE) == "forward"
    assert phase_of_range(LOSS_RANGE) == "loss"
    assert phase_of_range("[Strategy]SingleDeviceStrategy.backward") == "backward"
    assert phase_of_range("[LightningModule]VAELitModule.optimizer_step") == "optimiser"
    assert phase_of_range("[LightningModule]VAELitModule.optimizer_zero_grad") == "optimiser"
    assert phase_of_range("[Strategy]SingleDeviceStrategy.training_step") is None
    assert phase_of_range("aten::conv2d") is None


def test_backward_is_split_between_the_net_and_the_loss() -> None:
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.rand(4, 3, 16, 16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with autograd_profiler.record_function("ProfilerStep#1"):
            with autograd_profiler.record_function(FORWARD_RANGE):
                y = conv(x)
            with autograd_profiler.record_function(LOSS_RANGE):
                loss = torch.nn.functional.avg_pool2d(y.sigmoid(), 2).pow(2).mean()
            with autograd_profiler.record_function("[Strategy]SingleDeviceStrategy.backward"):
                loss.backward()
    summary = summarise(list(prof.events()))
    ops = {(phase, name) for phase, name in summary["per_op"]}
    assert ("forward", "aten::convolution") in ops
    assert ("backward: net", "aten::convolution_backward") in ops
    assert ("loss", "aten::avg_pool2d") in ops
    assert ("backward: loss", "aten::avg_pool2d_backward") in ops
    assert ("backward: loss", "aten::sigmoid_backward") in ops
    assert len(summary["step_us"]) == 1 and summary["step_us"][0] > 0
    total = sum(summary["per_phase"].values())
    assert total == pytest.approx(sum(us for _, us in summary["per_op"].values()))
    text = tables(summary, batch_size=4, top=5)
    assert "| forward |" in text and "| backward: net |" in text
    assert len(re.findall(r"^\| `", text, flags=re.M)) == 5


@pytest.mark.slow
def test_profile_script_writes_a_trace_and_the_tables(tmp_path: Path) -> None:
    out = tmp_path / "profile"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/profile_train.py",
            "--experiment",
            "demo",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--top",
            "12",
            "--out",
            str(out),
            "data.source=bundled",
            f"data.processed_dir={tmp_path / 'processed'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trace = json.loads((out / "trace.json").read_text())
    names = {e["name"] for e in trace["traceEvents"] if e.get("ph") == "X"}
    assert {FORWARD_RANGE, LOSS_RANGE, "[Strategy]SingleDeviceStrategy.backward"} <= names
    assert {"ProfilerStep#1", "ProfilerStep#2"} <= names  # only the profiled steps
    assert "ProfilerStep#0" not in names

    text = (out / "profile.md").read_text()
    assert text.strip() in result.stdout
    assert "2 steps," in text
    shares = {
        m[1]: float(m[2])
        for m in re.finditer(r"^\| ([a-z:  ]+) \| [\d.]+ \| ([\d.]+)%", text, re.M)
    }
    assert set(shares) <= set(PHASES) and sum(shares.values()) == pytest.approx(100, abs=0.5)
    for phase in ("data", "forward", "loss", "backward: net", "backward: loss", "optimiser"):
        assert shares[phase] > 0, phase
    rows = re.findall(r"^\| `([^`]+)` \| ([a-z: ]+) \|", text, flags=re.M)
    assert len(rows) == 12 and {phase for _, phase in rows} <= set(PHASES)
    assert ("aten::convolution_backward", "backward: net") in rows
