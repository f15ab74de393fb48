"""Short budgeted training runs of recipe variants, one after another, and one table.

    python benchmarks/explore.py [--experiment exp1] [--minutes 5] [--out outputs/explore] \\
        --variant NAME=KEY=VALUE,KEY=VALUE ... [KEY=VALUE ...]

Each variant is a real ``python vae_cats/train_model.py experiments=<experiment>`` run with
``trainer.max_time`` set to ``--minutes`` (its LR schedule fitted to that budget), the CSV
logger, and its own overrides plus the common ones, in ``<out>/<name>/``. A variant whose
folder holds a ``result.yaml`` with status ``finished`` is not run again, so a killed
exploration goes on where it stopped; a failed variant ends the exploration with one line
(its own error is printed above it) and runs again next time. The table then reads every
run back from its ``csv/*/metrics.csv`` and training log: test SSIM and PSNR of the best
checkpoint, the last epoch's train and validation reconstruction loss (their gap shows
over-fitting), steps trained, steps/s and the load averages at the end (figures taken under
other load are not comparable: run it alone).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as `python benchmarks/<script>.py`: the project root on the path for `benchmarks.*`.
sys.path.insert(0, str(PROJECT_DIR))
from benchmarks.variants import parse_variant  # noqa: E402

RATE = re.compile(
    r"trained (\d+) steps in (\d+) s: ([\d.]+) steps/s.*\(1, 5, 15 min\): ([\d., ]+) on"
)
COLUMNS = ["test/ssim", "test/psnr", "train/recon_loss_epoch", "val/recon_loss", "val/ssim"]


def finished(folder: Path) -> bool:
    """Whether a training run in ``folder`` ran to its end (``result.yaml``, written by every
    run, failed ones too, says ``status: finished``)."""
    result = folder / "result.yaml"
    return result.is_file() and OmegaConf.select(OmegaConf.load(result), "status") == "finished"


def run_variant(experiment: str, minutes: float, folder: Path, overrides: list[str]) -> None:
    """Train one variant in ``folder`` unless it finished there before.

    Raises:
        SystemExit: If the training run fails, naming the variant and its log.
    """
    if finished(folder):
        print(f"{folder.name}: done before, not run again", flush=True)
        return
    seconds = int(minutes * 60)
    command = [
        sys.executable,
        str(PROJECT_DIR / "vae_cats" / "train_model.py"),
        f"experiments={experiment}",
        f"trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}",
        "logger=csv",
        # A variant that did not finish before starts over in its folder.
        "overwrite=true",
        f"hydra.run.dir={folder}",
        *overrides,
    ]
    print(f"{folder.name}: {' '.join(command[2:])}", flush=True)
    code = subprocess.run(command, cwd=PROJECT_DIR).returncode
    if code:
        sys.exit(f"explore: variant {folder.name} failed (exit {code}): {folder}/train_model.log")


def last_values(metrics_csv: Path) -> dict[str, float]:
    """The last logged value of every column of a Lightning CSV log."""
    values: dict[str, float] = {}
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def row(name: str, folder: Path) -> list[str]:
    """One table row read back from a finished run's files."""
    logs = sorted(folder.glob("csv/*/metrics.csv"))
    values = last_values(logs[-1]) if logs else {}
    cells = [f"{values[c]:.4f}" if c in values else "-" for c in COLUMNS]
    rate = RATE.search((folder / "train_model.log").read_text(errors="replace"))
    steps, per_s, load = (rate.group(1), rate.group(3), rate.group(4)) if rate else ("-",) * 3
    return [name, *cells, steps, per_s, load]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="exp1")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "outputs" / "explore")
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME=KEY=VALUE,KEY=VALUE (NAME= alone: the experiment as it is)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every variant")
    args = parser.parse_args()
    variants = [parse_variant(spec) for spec in args.variant]
    for name, own in variants:
        run_variant(args.experiment, args.minutes, args.out.resolve() / name, args.overrides + own)
    header = ["variant", *COLUMNS, "steps", "steps/s", "load average (1, 5, 15 min) at end"]
    print(f"\n{args.experiment}, {args.minutes:g} minutes each, common overrides {args.overrides}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, _ in variants:
        print("| " + " | ".join(row(name, args.out.resolve() / name)) + " |")


if __name__ == "__main__":
    main()
