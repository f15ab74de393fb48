"""Model benchmark: reconstruction, sampling and speed figures of trained checkpoints.

    python benchmarks/bench_model.py --run exp1=PATH/best.ckpt --run baseline=PATH/best.ckpt

Scores every checkpoint on the deduplicated cats64 test split (the split of seed 42, the
one every experiment trains against) and prints one table; writes ``reports/benchmark.json``,
``reports/benchmark_table.md`` and sample grids ``reports/samples_<run>_<sampler>.png``.

Figures (definitions from issue 5):
- ssim / psnr: Kornia SSIM (window 11) and PSNR (dB) of decode(mu) against the test images;
- active: share of latent dimensions whose test-set mean KL exceeds 0.01 nats;
- realism: for 256 samples, each sample's best SSIM against the test images, averaged (the
  best is searched among the 32 test images nearest in pixel L2, to keep it tractable);
- diversity: mean pairwise RMS distance between the 256 samples (pixel values in [0, 1]);
- sharpness: variance of the 3x3 Laplacian of the gray samples over the same of test images;
- img/s, data wait: training throughput and share of step time waiting for the next batch,
  from Lightning's SimpleProfiler over a short real fit with the run's own config;
- flop ratio: model FLOP/s over those steps (torch.utils.flop_counter) divided by the FLOP/s
  of a 2048x2048 matrix multiply in the same precision on the same threads;
- predict ms: decoding 64 images from noise, warm, eager, median of 10.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
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

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.datamodule import CatFacesDataModule
from vae_cats.data.ingest import SHARED_CATS64
from vae_cats.images import make_grid, save_png
from vae_cats.losses import kl_divergence, ssim
from vae_cats.model import BaseVAE
from vae_cats.samplers import GaussianMixtureSampler, NormalSampler

NUM_SAMPLES = 256
NEAREST = 32
SPEED_STEPS = 30


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
        "sharpness": float(laplacian_variance(samples).mean() / laplacian_variance(test).mean()),
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
    module = instantiate(cfg.lit_module, net=instantiate(cfg.model))
    precision = str(cfg.trainer.precision)
    # The profiler's own report goes to a file; this script prints the figures it needs.
    profiler = SimpleProfiler(dirpath=out, filename="profiler")
    datamodule.batch_size = int(cfg.data.batch_size)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=SPEED_STEPS,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        profiler=profiler,
        enable_model_summary=False,
    )
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


@torch.no_grad()
def predict_latency_ms(net: BaseVAE) -> float:
    z = torch.randn(64, net.latent_dim)
    net.decode(z)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        net.decode(z)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_run(name: str, path: Path, datamodule: CatFacesDataModule, out: Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(path)
    net = vae_from_checkpoint(checkpoint, path)
    test = datamodule.splits["test"].float() / 255
    row: dict[str, Any] = {
        "run": name,
        "checkpoint": str(path),
        **reconstruction_figures(net, test),
    }
    lineage = checkpoint.get("lineage", {})
    row["same_split"] = lineage.get("data_hash") == datamodule.manifest["data_hash"]
    means = batched(lambda b: net.encode(b)[0], datamodule.splits["train"].float() / 255)
    samplers = {
        "normal": NormalSampler(net.latent_dim),
        "gmm": GaussianMixtureSampler.from_state_dict(checkpoint["gmm_sampler"])
        if "gmm_sampler" in checkpoint
        else GaussianMixtureSampler().fit(means),
    }
    for sampler_name, sampler in samplers.items():
        with torch.no_grad():
            samples = net.decode(sampler.sample(NUM_SAMPLES, seed=0)).float()
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
        save_png(make_grid(samples[:64]), out / f"samples_{slug}_{sampler_name}.png")
        for key, value in sample_figures(samples, test).items():
            row[f"{key}_{sampler_name}"] = value
    row["predict_ms"] = predict_latency_ms(net)
    if "config" in lineage:
        row.update(speed_figures(lineage["config"], datamodule, out))
    return row


COLUMNS = [
    ("run", "{}"),
    ("ssim", "{:.3f}"),
    ("psnr", "{:.2f}"),
    ("active", "{:.0%}"),
    ("kl", "{:.0f}"),
    ("realism_normal", "{:.3f}"),
    ("diversity_normal", "{:.3f}"),
    ("sharpness_normal", "{:.3f}"),
    ("realism_gmm", "{:.3f}"),
    ("diversity_gmm", "{:.3f}"),
    ("sharpness_gmm", "{:.3f}"),
    ("img_per_s", "{:.0f}"),
    ("data_wait", "{:.1%}"),
    ("flop_ratio", "{:.1%}"),
    ("predict_ms", "{:.1f}"),
]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [fmt.format(row[c]) if row.get(c) is not None else "-" for c, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=PATH/TO.ckpt")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument(
        "--source", default=str(SHARED_CATS64), help="data the test split comes from"
    )
    args = parser.parse_args()
    pl.seed_everything(0)
    datamodule = CatFacesDataModule(source=args.source, seed=42)
    datamodule.prepare_data()
    datamodule.setup()
    print(
        f"test split: {len(datamodule.splits['test'])} distinct images of "
        f"{datamodule.source.name}; {torch.get_num_threads()} threads"
    )
    rows = []
    for spec in args.run:
        name, _, path = spec.partition("=")
        rows.append(bench_run(name, Path(path), datamodule, args.out))
        print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown_table(rows)
    (args.out / "benchmark_table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
