"""Load benchmark of the HTTP API: both backends side by side, one table.

    python benchmarks/bench_serve.py [--duration 20] [--clients 16] [--model PATH]

For each backend (ONNX Runtime, eager PyTorch) a real server (``python -m vae_cats.serving``)
starts on 127.0.0.1; a small asyncio client (httpx) then keeps ``--clients`` requests in
flight for ``--duration`` seconds per scenario:

- ``generate``: ``POST /generate {"n": 16}`` (default sampler, random seeds, PNG grid);
- ``mix``: 3 of 4 clients on that ``/generate``, 1 of 4 on ``POST /reconstruct`` with a real
  face of the bundled sample.

Each row gives requests/s, latency p50/p95/p99 (ms), errors (non-2xx or transport errors),
restarts (the server process gone) and the server's peak resident memory (``VmHWM``).
Before that, decoding 64 codes in-process: ONNX Runtime against eager PyTorch, median of
``--repeat`` runs. The client runs on the same machine as the server, so it takes CPU from it;
``uptime`` before and after is printed: figures taken under other load are marked so.
Everything stops by itself: at most 2 x 2 x ``--duration`` seconds of load, plus start-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.sources import BUNDLED_SAMPLE
from vae_cats.serving.backends import OnnxBackend, TorchBackend
from vae_cats.serving.launch import running_server
from vae_cats.serving.settings import SHIPPED_MODEL, default_threads

MAX_DURATION = 120.0


@dataclass
class Load:
    """Latencies (s) of the answered requests and the error count of one scenario."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    statuses: set[str] = field(default_factory=set)

    def row(self) -> list[str]:
        ordered = sorted(self.latencies) or [float("nan")]

        def pct(q: float) -> str:
            return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"

        rate = len(self.latencies) / self.seconds if self.seconds else 0.0
        return [f"{rate:.1f}", pct(0.50), pct(0.95), pct(0.99), str(self.errors)]


def a_face() -> bytes:
    import tarfile

    with tarfile.open(BUNDLED_SAMPLE) as archive:
        member = next(m for m in archive if m.isfile())
        return archive.extractfile(member).read()  # type: ignore[union-attr]


async def client(url: str, end: float, reconstruct: bool, face: bytes, load: Load) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as session:
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                if reconstruct:
                    files = {"file": ("cat.jpg", face)}
                    response = await session.post("/reconstruct", files=files)
                else:
                    body = {"n": 16, "seed": random.randrange(2**32)}
                    response = await session.post("/generate", json=body)
                ok = response.status_code == 200
                if not ok:
                    load.statuses.add(f"{response.status_code}: {response.text[:120]}")
            except httpx.HTTPError as err:
                ok = False
                load.statuses.add(type(err).__name__)
            if ok:
                load.latencies.append(time.perf_counter() - start)
            else:
                load.errors += 1


async def run_load(url: str, clients: int, duration: float, mix: bool, face: bytes) -> Load:
    load = Load()
    start = time.monotonic()
    end = start + duration
    reconstructing = clients // 4 if mix else 0
    await asyncio.gather(
        *(client(url, end, i < reconstructing, face, load) for i in range(clients))
    )
    load.seconds = time.monotonic() - start
    return load


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decode_speed(model: Path, repeat: int, threads: int) -> dict[str, float]:
    """Images/s decoding 64 codes, median of ``repeat`` warm runs, per backend."""
    net = vae_from_checkpoint(read_checkpoint(model), model)
    z = torch.randn(64, net.latent_dim, generator=torch.Generator().manual_seed(0))
    speeds = {}
    for backend in (OnnxBackend(net, 64, threads), TorchBackend(net, threads)):
        backend.decode(z)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            backend.decode(z)
            times.append(time.perf_counter() - start)
        speeds[backend.name] = 64 / statistics.median(times)
    return speeds


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=20, help="decode-64 timing runs")
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args(argv)
    if not 0 < args.duration * 4 <= MAX_DURATION:
        parser.error(f"--duration: 4 scenarios must fit {MAX_DURATION:.0f} s")
    print(f"before: {uptime()}")
    speeds = decode_speed(args.model, args.repeat, args.threads)
    ratio = speeds["onnx"] / speeds["torch"]
    print(
        f"decode 64 images ({args.threads} threads): onnx {speeds['onnx']:.0f} img/s, "
        f"torch {speeds['torch']:.0f} img/s, onnx/torch {ratio:.2f}x"
    )
    face = a_face()
    header = "| backend | scenario | req/s | p50 ms | p95 ms | p99 ms | errors | restarts "
    header += "| peak RSS MB |"
    print(f"\n{args.clients} clients, {args.duration:.0f} s per scenario\n")
    print(header)
    print("|---" * 9 + "|")
    for backend in ("onnx", "torch"):
        with running_server(args.model, backend, threads=args.threads) as (url, pid):
            for scenario in ("generate", "mix"):
                load = asyncio.run(
                    run_load(url, args.clients, args.duration, scenario == "mix", face)
                )
                restarts = 0 if Path(f"/proc/{pid}").exists() else 1
                cells = [backend, scenario, *load.row(), str(restarts), f"{peak_rss_mb(pid):.0f}"]
                print("| " + " | ".join(cells) + " |", flush=True)
                for status in sorted(load.statuses):
                    print(f"  error: {status}", file=sys.stderr)
    print(f"\nafter: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
