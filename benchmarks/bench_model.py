"""Model benchmark: reconstruction, sampling and speed figures of trained checkpoints.

    python benchmarks/bench_model.py --run exp1=PATH/best.ckpt --run baseline=PATH/best.ckpt

Scores every checkpoint on the deduplicated cats64 test split (the split of seed 42, the
one every experiment trains against) and prints one table, header first, a row per run as it
finishes. Writes ``benchmark.json``, ``benchmark_table.md``, sample grids
``samples_<run>_<sampler>.png`` and the profiler's report under ``--out`` (default
``outputs/bench/``); only ``--update-reports`` also writes the tracked ``reports/``
(``benchmark.json``: rows of the same run names replaced, others kept; the sample grids).
Warns when a run's lineage names another data hash than the scored split's: then the
"test" faces are not that model's own test split and may include faces it trained on. Every
``--run`` checkpoint is read before any work: a bad one is one line and exit code 2.

Figures (definitions from issue 5):
- ssim / psnr: Kornia SSIM (window 11) and PSNR (dB) of decode(mu) against the test images;
- active: share of latent dimensions whose test-set mean KL exceeds 0.01 nats;
- realism: for 256 samples, each sample's best SSIM against the test images, averaged (the
  best is searched among the 32 test images nearest in pixel L2, to keep it tractable);
- diversity: mean pairwise RMS distance between the 256 samples (pixel values in [0, 1]);
- sharpness: variance of the 3x3 Laplacian of the gray samples over the same of test images;
  recon_sharpness: the same of the reconstructions, the ceiling of a sampler whose samples
  look like reconstructions (the decoder draws both);
- img/s, data wait: training throughput and share of step time waiting for the next batch,
  from Lightning's SimpleProfiler over a short real fit with the run's own config, in the
  precision ``trainer.precision: auto`` picks on this machine (a run's stored bf16 would be
  emulated, about 9x slower, on a CPU without native bf16);
- flop ratio: model FLOP/s over those steps (torch.utils.flop_counter) divided by the FLOP/s
  of a 2048x2048 matrix multiply in the same precision on the same threads;
- predict ms: decoding 64 images from noise, warm, eager, median of 10;
- c2st_recon: classifier two-sample test (``vae_cats.two_sample``, Lopez-Paz & Oquab 2017)
  of test faces against their reconstructions: held-out accuracy of a small CNN trained on
  half of each set, 0.5 when the sets cannot be told apart, 1.0 when they always can. It
  measures the decoder's blur, which no sampler can fix;
- per sampler (normal and every learned sampler of ``samplers.LEARNED_SAMPLERS``: the ones
  the checkpoint stores, else fitted on the training split's means), a second table:
  realism, diversity and sharpness of its samples as above; c2st: the same two-sample test of
  those reconstructions against as many decoded samples of the sampler: both sides pass the
  decoder, so it isolates the latent prior (lower is better, 0.5 the floor); ms/64: drawing
  64 codes and decoding them, warm, eager, median of 5.
The two-sample tests use the first ``--two-sample-faces`` test faces (all of them when the
split holds fewer), classifiers of ``--two-sample-steps`` steps (default 400),
``--two-sample-repeats`` tests a pair (seed r for test r: the halves, the classifier's start,
the samples); the figure is their pooled accuracy, with the
Wilson 95 % interval of the pooled counts (``<column>_ci``) and each test's accuracy
(``<column>_runs``). With 836 faces a side one test moved by up to 0.07 between seeds, so
differences below that are noise.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import kornia
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.profilers import SimpleProfiler
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics.functional.image import peak_signal_noise_ratio

# Run as `python benchmarks/<script>.py`: the project root on the path for `benchmarks.*`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import bare_trainer  # noqa: E402
from vae_cats.checkpoint import CheckpointError, read_checkpoint, vae_from_checkpoint
from vae_cats.data.datamodule import CatFacesDataModule
from vae_cats.data.sources import SHARED_CATS64
from vae_cats.fileio import PROJECT_DIR, atomic_write_bytes, check_writable
from vae_cats.generate import encode_means, fit_sampler
from vae_cats.hardware import AUTO, describe_hardware, resolve_precision
from vae_cats.images import make_grid, save_png, to_float
from vae_cats.losses import kl_divergence, ssim
from vae_cats.model import BaseVAE
from vae_cats.samplers import (
    LEARNED_SAMPLERS,
    LatentSampler,
    NormalSampler,
    sampler_from_checkpoint,
    stored_samplers,
)
from vae_cats.training.lit_module import VAELitModule
from vae_cats.two_sample import DEFAULT_STEPS, MIN_PER_SIDE, two_sample_test, wilson_interval

NUM_SAMPLES = 256
NEAREST = 32
SPEED_STEPS = 30
# Faces a side of each two-sample test: a few seconds a test on 2 cores; pass the whole test
# split (--two-sample-faces 10000) for the narrowest interval.
TWO_SAMPLE_FACES = 256
# Tests per pair, each with its own seed: with 836 faces a side one test's accuracy moved by
# up to 0.07 between seeds, as much as the samplers differ.
TWO_SAMPLE_REPEATS = 3
# About an hour a test on 2 cores: more is a typo, not a budget.
MAX_TWO_SAMPLE_STEPS = 100_000
REPORTS_DIR = PROJECT_DIR / "reports"


class BenchInputError(ValueError):
    """A command-line input that cannot work; the message names it."""


def batched(fn: Any, x: Tensor, size: int = 256) -> Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


@torch.no_grad()
def reconstruction_figures(net: BaseVAE, test: Tensor) -> dict[str, float]:
    recon = batched(net.reconstruct, test).float()
    mu, logvar = (
        torch.cat(t)
        for t in zip(
            *[net.encode(test[i : i + 256]) for i in range(0, len(test), 256)], strict=True
        )
    )
    kl_per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(dim=0)
    return {
        "ssim": float(ssim(recon, test).mean()),
        "psnr": float(peak_signal_noise_ratio(recon, test, data_range=1.0, dim=(1, 2, 3))),
        "active": float((kl_per_dim > 0.01).float().mean()),
        "kl": float(kl_divergence(mu, logvar).mean()),
    }


def laplacian_variance(images: Tensor) -> Tensor:
    gray = kornia.color.rgb_to_grayscale(images)
    return kornia.filters.laplacian(gray, kernel_size=3).var(dim=(1, 2, 3))


def sharpness(images: Tensor, test: Tensor) -> float:
    return float(laplacian_variance(images).mean() / laplacian_variance(test).mean())


@torch.no_grad()
def sample_figures(samples: Tensor, test: Tensor) -> dict[str, float]:
    flat_s, flat_t = samples.flatten(1), test.flatten(1)
    nearest = torch.cdist(flat_s, flat_t).topk(NEAREST, largest=False).indices
    best = [
        float(ssim(s.expand(NEAREST, -1, -1, -1), test[idx]).max())
        for s, idx in zip(samples, nearest, strict=True)
    ]
    pair = torch.cdist(flat_s, flat_s) / flat_s.shape[1] ** 0.5
    n = len(samples)
    return {
        "realism": statistics.fmean(best),
        "diversity": float(pair.sum() / (n * (n - 1))),
        "sharpness": sharpness(samples, test),
    }


def matmul_flops(dtype: torch.dtype) -> float:
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    for _ in range(3):
        a @ b
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - start)


def speed_figures(
    config: dict[str, Any], datamodule: CatFacesDataModule, out: Path
) -> dict[str, float]:
    cfg = OmegaConf.create(config)
    # Every lit_module config builds VAELitModule; checkpoints made before the package was
    # re-laid out (the shipped model among them) name its old path, vae_cats.lit_module.
    cfg.lit_module._target_ = f"{VAELitModule.__module__}.{VAELitModule.__name__}"
    module = instantiate(cfg.lit_module, net=instantiate(cfg.model))
    precision = resolve_precision(AUTO, "cpu").value
    # The profiler's own report goes to a file; this script prints the figures it needs.
    profiler = SimpleProfiler(dirpath=out, filename="profiler")
    datamodule.batch_size = int(cfg.data.batch_size)
    trainer = bare_trainer(precision=precision, max_steps=SPEED_STEPS, profiler=profiler)
    trainer.fit(module, datamodule=datamodule)
    durations = profiler.recorded_durations
    steps = durations["run_training_batch"][5:]  # first steps warm oneDNN up
    waits = durations["[_TrainingEpochLoop].train_dataloader_next"][5:]
    step_s = statistics.fmean(steps) + statistics.fmean(waits)
    x = next(iter(datamodule.train_dataloader())).float().div(255)
    x = x.contiguous(memory_format=module.memory_format)
    bf16 = "bf16" in precision
    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module.net(x)
        module.net.loss_function(x, out, 1e-3).loss.backward()
    model_flops = counter.get_total_flops() / step_s
    return {
        "img_per_s": len(x) / step_s,
        "data_wait": statistics.fmean(waits) / step_s,
        "flop_ratio": model_flops / matmul_flops(torch.bfloat16 if bf16 else torch.float32),
        "gflops": model_flops / 1e9,
    }


def two_sample_figures(
    net: BaseVAE,
    test: Tensor,
    recon: Tensor,
    samplers: dict[str, NormalSampler | LatentSampler],
    repeats: int,
    steps: int,
) -> dict[str, Any]:
    """``c2st_recon`` (test faces against their reconstructions) and ``c2st_<sampler>``
    (reconstructions against as many samples): the mean held-out accuracy of ``repeats`` tests,
    test r with seed r (the halves, the classifier's start and the samples drawn), with
    ``<key>_runs`` (each test's accuracy) and ``<key>_ci`` (the Wilson 95 % interval of the
    pooled counts; the runs share the real faces, so it is narrower than independent faces
    would give: compare the runs' spread). ``None`` each when ``test`` (float (N, 3, 64, 64)
    in [0, 1]; ``recon`` their reconstructions, the same shape) is too small."""
    keys = ["recon", *samplers]
    tails = ("", "_ci", "_runs")
    if len(test) < MIN_PER_SIDE:
        return {f"c2st_{key}{tail}": None for key in keys for tail in tails}
    figures: dict[str, Any] = {}
    for key in keys:
        results = []
        for seed in range(repeats):
            if key == "recon":
                other = test
            else:
                with torch.no_grad():
                    codes = samplers[key].sample(len(test), seed=seed)
                    other = batched(net.decode, codes).float()
            results.append(two_sample_test(recon, other, seed=seed, steps=steps))
        correct, total = sum(r.correct for r in results), sum(r.total for r in results)
        figures[f"c2st_{key}"] = correct / total
        figures[f"c2st_{key}_ci"] = list(wilson_interval(correct, total))
        figures[f"c2st_{key}_runs"] = [r.accuracy for r in results]
    return figures


@torch.no_grad()
def median_ms(fn: Any, repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeat`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run_samplers(
    net: BaseVAE, checkpoint: dict[str, Any], train: Tensor
) -> dict[str, NormalSampler | LatentSampler]:
    """``normal`` and every learned sampler: stored in the checkpoint, else fitted on the
    posterior means of the uint8 training images ``train`` (N, 3, H, W)."""
    samplers: dict[str, NormalSampler | LatentSampler] = {"normal": NormalSampler(net.latent_dim)}
    stored = stored_samplers(checkpoint)
    mu = None if len(stored) == len(LEARNED_SAMPLERS) else encode_means(net, train)
    for name in LEARNED_SAMPLERS:
        samplers[name] = (
            sampler_from_checkpoint(name, checkpoint) if name in stored else fit_sampler(name, mu)
        )
    return samplers


def bench_run(
    name: str,
    path: Path,
    checkpoint: dict[str, Any],
    datamodule: CatFacesDataModule,
    out: Path,
    two_sample_faces: int,
    two_sample_repeats: int,
    two_sample_steps: int,
) -> dict[str, Any]:
    net = vae_from_checkpoint(checkpoint, path)
    test = to_float(datamodule.splits["test"])
    row: dict[str, Any] = {
        "run": name,
        "checkpoint": str(path),
        **reconstruction_figures(net, test),
    }
    with torch.no_grad():
        recon = batched(net.reconstruct, test).float()
    row["recon_sharpness"] = sharpness(recon, test)
    lineage = checkpoint.get("lineage", {})
    row["same_split"] = lineage.get("data_hash") == datamodule.manifest["data_hash"]
    samplers = run_samplers(net, checkpoint, datamodule.splits["train"])
    row["samplers"] = list(samplers)
    for sampler_name, sampler in samplers.items():
        with torch.no_grad():
            samples = net.decode(sampler.sample(NUM_SAMPLES, seed=0)).float()
        save_png(make_grid(samples[:64]), out / sample_grid_name(name, sampler_name))
        for key, value in sample_figures(samples, test).items():
            row[f"{key}_{sampler_name}"] = value
        row[f"sample_ms_{sampler_name}"] = median_ms(
            lambda s=sampler: net.decode(s.sample(64, seed=1)), repeat=5
        )
    row.update(
        two_sample_figures(
            net,
            test[:two_sample_faces],
            recon[:two_sample_faces],
            samplers,
            two_sample_repeats,
            two_sample_steps,
        )
    )
    row["predict_ms"] = median_ms(lambda: net.decode(torch.randn(64, net.latent_dim)), 10)
    if "config" in lineage:
        row.update(speed_figures(lineage["config"], datamodule, out))
    return row


def sample_grid_name(run: str, sampler: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", run).strip("_")
    return f"samples_{slug}_{sampler}.png"


COLUMNS = [
    ("run", "{}"),
    ("ssim", "{:.3f}"),
    ("psnr", "{:.2f}"),
    ("active", "{:.0%}"),
    ("kl", "{:.0f}"),
    ("recon_sharpness", "{:.3f}"),
    ("c2st_recon", "{:.3f}"),
    ("img_per_s", "{:.0f}"),
    ("data_wait", "{:.1%}"),
    ("flop_ratio", "{:.1%}"),
    ("predict_ms", "{:.1f}"),
]
SAMPLER_COLUMNS = [
    ("realism", "{:.3f}"),
    ("diversity", "{:.3f}"),
    ("sharpness", "{:.3f}"),
    ("c2st", "{:.3f}"),
    ("sample_ms", "{:.0f}"),
]


def markdown_header() -> list[str]:
    return ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]


def markdown_row(row: dict[str, Any]) -> str:
    cells = [fmt.format(row[c]) if row.get(c) is not None else "-" for c, fmt in COLUMNS]
    return "| " + " | ".join(cells) + " |"


def sampler_table(rows: list[dict[str, Any]]) -> str:
    """One line per run and sampler: its sample figures, two-sample accuracy with the Wilson
    95 % interval, and ms to draw and decode 64 codes."""
    names = ["run", "sampler", *(c for c, _ in SAMPLER_COLUMNS), "c2st 95% CI", "c2st runs"]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        for sampler in row.get("samplers", []):
            cells = [row["run"], sampler]
            for column, fmt in SAMPLER_COLUMNS:
                value = row.get(f"{column}_{sampler}")
                cells.append("-" if value is None else fmt.format(value))
            ci = row.get(f"c2st_{sampler}_ci")
            cells.append("-" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}")
            runs = row.get(f"c2st_{sampler}_runs")
            cells.append("-" if runs is None else " ".join(f"{r:.3f}" for r in runs))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    main = "\n".join(markdown_header() + [markdown_row(row) for row in rows])
    return main + "\n\n" + sampler_table(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        default=argparse.SUPPRESS,  # required: no "(default: None)" in --help
        help="NAME=PATH/TO.ckpt, once per checkpoint",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"), help="output folder")
    parser.add_argument(
        "--update-reports",
        action="store_true",
        help=f"also write {REPORTS_DIR.name}/benchmark.json (same-named rows replaced) and the "
        "sample grids into the tracked reports folder",
    )
    parser.add_argument(
        "--source", default=str(SHARED_CATS64), help="data the test split comes from"
    )
    parser.add_argument(
        "--two-sample-repeats",
        type=int,
        default=TWO_SAMPLE_REPEATS,
        help="two-sample tests per pair, seeds 0..N-1; the table gives their pooled accuracy",
    )
    parser.add_argument(
        "--two-sample-steps",
        type=int,
        default=DEFAULT_STEPS,
        help="optimiser steps of each two-sample classifier (fewer: a quicker, weaker test)",
    )
    parser.add_argument(
        "--two-sample-faces",
        type=int,
        default=TWO_SAMPLE_FACES,
        help=f"test faces a side in each two-sample test, >= {MIN_PER_SIDE} (the whole test "
        "split when it holds fewer)",
    )
    return parser.parse_args(argv)


def read_runs(specs: list[str]) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, path, checkpoint) of every ``--run NAME=PATH``, all read before any work.

    Raises:
        BenchInputError, CheckpointError: Naming the bad spec or file.
    """
    runs: list[tuple[str, Path, dict[str, Any]]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not (sep and name and path):
            raise BenchInputError(f"--run {spec!r}: give NAME=PATH/TO.ckpt")
        if name in [r[0] for r in runs]:
            raise BenchInputError(f"--run {spec!r}: the name {name!r} is given twice")
        runs.append((name, Path(path), read_checkpoint(Path(path))))
    return runs


def check_outputs(args: argparse.Namespace) -> None:
    folders = [("--out", args.out)] + (
        [("--update-reports", REPORTS_DIR)] if args.update_reports else []
    )
    for option, folder in folders:
        if folder.exists() and not folder.is_dir():
            raise BenchInputError(f"{option} {folder}: exists and is not a folder")
        try:
            check_writable(folder)
        except OSError as err:
            raise BenchInputError(
                f"{option} {folder}: cannot write there ({err.strerror})"
            ) from err


def split_warnings(runs: list[tuple[str, Path, dict[str, Any]]], data_hash: str) -> list[str]:
    """One line per run whose lineage names another data hash than the scored split's."""
    lines = []
    for name, _, checkpoint in runs:
        trained_on = checkpoint.get("lineage", {}).get("data_hash")
        if trained_on != data_hash:
            named = f"data hash {trained_on[:12]}" if trained_on else "no data hash"
            lines.append(
                f"warning: run {name}: its lineage names {named}, the scored split is "
                f"{data_hash[:12]}: not its own test split, so some scored faces may be faces "
                "it trained on"
            )
    return lines


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def dump(data: list[dict[str, Any]]) -> bytes:
        return (json.dumps(data, indent=1) + "\n").encode()

    atomic_write_bytes(args.out / "benchmark.json", dump(rows))
    atomic_write_bytes(args.out / "benchmark_table.md", (markdown_table(rows) + "\n").encode())
    print(f"wrote {args.out / 'benchmark.json'}, benchmark_table.md and the sample grids")
    if args.update_reports:
        report = REPORTS_DIR / "benchmark.json"
        names = {row["run"] for row in rows}
        kept = json.loads(report.read_text()) if report.is_file() else []
        atomic_write_bytes(report, dump([r for r in kept if r["run"] not in names] + rows))
        for row in rows:
            for sampler in row["samplers"]:
                grid = sample_grid_name(row["run"], sampler)
                atomic_write_bytes(REPORTS_DIR / grid, (args.out / grid).read_bytes())
        print(f"updated {report} and its sample grids")


def main(argv: list[str] | None = None) -> int:
    """Returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)
    try:
        if args.two_sample_repeats < 1:
            raise BenchInputError(
                f"--two-sample-repeats {args.two_sample_repeats}: give at least 1 test a pair"
            )
        if not 1 <= args.two_sample_steps <= MAX_TWO_SAMPLE_STEPS:
            raise BenchInputError(
                f"--two-sample-steps {args.two_sample_steps}: give 1 to "
                f"{MAX_TWO_SAMPLE_STEPS} steps"
            )
        if args.two_sample_faces < MIN_PER_SIDE:
            raise BenchInputError(
                f"--two-sample-faces {args.two_sample_faces}: a two-sample test needs at "
                f"least {MIN_PER_SIDE} faces a side"
            )
        check_outputs(args)
        runs = read_runs(args.run)
        datamodule = CatFacesDataModule(source=args.source, seed=42)
        datamodule.prepare_data()
    except (BenchInputError, CheckpointError) as err:
        print(f"bench_model: error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # the data source: ingest's message names it
        print(f"bench_model: error: --source {err}", file=sys.stderr)
        return 2
    datamodule.setup()
    pl.seed_everything(0, verbose=False)
    test_size = len(datamodule.splits["test"])
    print(
        f"test split: {test_size} distinct images of "
        f"{datamodule.source.name}; {torch.get_num_threads()} threads; {describe_hardware()}; "
        f"training speed in {resolve_precision(AUTO, 'cpu').value}; two-sample tests on "
        f"{min(args.two_sample_faces, test_size)} faces a side, {args.two_sample_steps} steps"
    )
    for line in split_warnings(runs, datamodule.manifest["data_hash"]):
        print(line, file=sys.stderr)
    print("\n".join(markdown_header()), flush=True)
    rows = []
    for name, path, checkpoint in runs:
        rows.append(
            bench_run(
                name,
                path,
                checkpoint,
                datamodule,
                args.out,
                args.two_sample_faces,
                args.two_sample_repeats,
                args.two_sample_steps,
            )
        )
        print(markdown_row(rows[-1]), flush=True)
    print("\n" + sampler_table(rows), flush=True)
    write_results(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
