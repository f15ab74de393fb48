"""Images per second of an experiment's training loop, one or more configs side by side.

    python benchmarks/bench_train_step.py --experiment exp1 --steps 40 [--warmup 10] \\
        [--repeats 2] [--variant NAME=KEY=VALUE,KEY=VALUE ...] [KEY=VALUE ...]

Each variant (default: ``eager`` with ``lit_module.compile_loss=false`` and ``compiled`` with
``lit_module.compile_loss=true``) builds the experiment from its Hydra config plus the common
and its own overrides (e.g. ``data.source=bundled``), then runs ``warmup + steps`` training
steps in the real Lightning loop (no validation, logger or checkpoints) in a fresh process and
times the last ``steps``: the median step (a one-off recompilation for a smaller last batch
is not the loop's speed) and the mean. The warm-up covers oneDNN's first calls and the first
compilation; its seconds are the column "warm-up s". The variants take turns ``repeats``
times and each keeps its fastest run, so a passing burst of other work does not decide the
comparison. Prints one Markdown table with the load averages before and after: numbers taken
on a busy machine say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as `python benchmarks/<script>.py`: the project root on the path for `benchmarks.*`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common  # noqa: E402
from benchmarks.variants import parse_variant  # noqa: E402

DEFAULT_VARIANTS = ["eager=lit_module.compile_loss=false", "compiled=lit_module.compile_loss=true"]


def measure(experiment: str, overrides: list[str], warmup: int, steps: int) -> dict[str, Any]:
    """Train ``warmup + steps`` steps in this process; seconds of the warm-up and per step."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    cfg = common.experiment_config(experiment, overrides)
    stamps: list[float] = []

    class Stamp(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            stamps.append(time.perf_counter())

    module = instantiate(cfg.lit_module, net=instantiate(cfg.model))
    trainer = common.bare_trainer(
        cfg.trainer,
        default_root_dir=tempfile.mkdtemp(prefix="bench-train-step-"),
        max_steps=warmup + steps,
        callbacks=[Stamp()],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=instantiate(cfg.data))
    intervals = [b - a for a, b in zip(stamps[warmup - 1 :], stamps[warmup:], strict=False)]
    return {
        "precision": str(trainer.precision),
        "warmup_s": stamps[warmup - 1] - start,
        "step_s": statistics.median(intervals),
        "mean_step_s": statistics.fmean(intervals),
        "batch_size": int(cfg.data.batch_size),
    }


def main(argv: list[str] | None = None) -> None:
    parser = common.steps_parser(__doc__.splitlines()[0], steps=40, warmup=10, what="timed")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant, best kept")
    parser.add_argument(
        "--variant",
        action="append",
        help="NAME=KEY=VALUE[,KEY=VALUE...]; default: eager and compiled SSIM loss",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error("--steps, --warmup and --repeats must be >= 1")
    if args.child is not None:
        result = measure(
            args.experiment, [*args.overrides, *json.loads(args.child)], args.warmup, args.steps
        )
        print(json.dumps(result))
        return
    variants = [parse_variant(v) for v in args.variant or DEFAULT_VARIANTS]
    best: dict[str, dict[str, Any]] = {}
    load_before = common.load_average()
    for _ in range(args.repeats):
        for name, extra in variants:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    f"--experiment={args.experiment}",
                    f"--steps={args.steps}",
                    f"--warmup={args.warmup}",
                    f"--child={json.dumps(extra)}",
                    *args.overrides,
                ],
                capture_output=True,
                text=True,
                cwd=common.PROJECT_DIR,
                check=True,
            )
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{name}: {result}", file=sys.stderr, flush=True)
            if name not in best or result["step_s"] < best[name]["step_s"]:
                best[name] = result
    rows = [
        "| variant | precision | images/s (median step) | median ms / step | mean ms / step "
        "| warm-up s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, _ in variants:
        result = best[name]
        rows.append(
            f"| {name} | {result['precision']} | {result['batch_size'] / result['step_s']:.0f} | "
            f"{result['step_s'] * 1000:.0f} | {result['mean_step_s'] * 1000:.0f} | "
            f"{result['warmup_s']:.0f} |"
        )
    from vae_cats.hardware import describe_hardware

    print(f"load average (1, 5, 15 min) before {load_before}; after {common.load_average()}")
    print(
        f"{args.experiment}, {args.steps} timed steps after {args.warmup}, {os.cpu_count()} CPUs, "
        f"{describe_hardware()}"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
