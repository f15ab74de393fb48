"""Training throughput on CPU: one process vs DDP with 2 processes (gloo), same config.

``python benchmarks/bench_ddp.py [--steps 30] [--batch-size 32]`` runs real training as
subprocesses and prints a table. Each setup runs twice, 1 step and steps + 1 steps; the
difference of the two wall clocks is the time of ``steps`` optimiser steps without start-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
COMMON = [
    "data.source=bundled",
    "trainer.max_epochs=1",
    "trainer.max_time=null",
    "trainer.limit_val_batches=0",
    "trainer.num_sanity_val_steps=0",
    "callbacks.image_grids=null",
    "callbacks.early_stopping=null",
    "callbacks.model_checkpoint=null",
    "logger=csv",
    "test=false",
    # A rerun into the same --out replaces the earlier run's checkpoints.
    "overwrite=true",
]


def run(label: str, steps: int, batch_size: int, extra: list[str], out: Path) -> tuple[float, str]:
    command = [
        sys.executable,
        str(PROJECT_DIR / "vae_cats" / "train_model.py"),
        *COMMON,
        f"trainer.limit_train_batches={steps}",
        f"data.batch_size={batch_size}",
        *extra,
        f"hydra.run.dir={out / label}",
        f"data.processed_dir={out / 'processed'}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_DIR, env=env)
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"bench_ddp: {label} failed: {result.stderr.strip().splitlines()[-1]}")
    return wall, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per process")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step per process")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # Warm-up: ingest the bundled sample once so neither timed run pays for it.
        run("warmup", 1, args.batch_size, ["trainer.devices=1"], out)
        for name, label, extra, processes in [
            ("single", "1 process", ["trainer.devices=1"], 1),
            ("ddp2", "DDP 2 processes (gloo)", ["trainer.strategy=ddp", "trainer.devices=2"], 2),
        ]:
            short, _ = run(f"{name}_short", 1, args.batch_size, extra, out)
            full, _ = run(name, args.steps + 1, args.batch_size, extra, out)
            seconds = max(full - short, 1e-9)  # the start-up cost cancels out
            images = args.steps * args.batch_size * processes
            rows.append((label, args.steps, seconds, images / seconds))
    print(f"CPU cores: {os.cpu_count()}; torch threads per process: default")
    print(f"{'setup':<26} {'steps':>6} {'seconds':>8} {'images/s':>9} {'vs 1 proc':>9}")
    for label, steps, seconds, rate in rows:
        print(f"{label:<26} {steps:>6} {seconds:>8.1f} {rate:>9.1f} {rate / rows[0][3]:>8.2f}x")


if __name__ == "__main__":
    main()
