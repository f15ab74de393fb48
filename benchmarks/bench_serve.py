"""Load benchmark of the HTTP API: closed and open loop, one table.

    python benchmarks/bench_serve.py [--duration 15] [--clients 16] [--rate 100]
        [--backends onnx,torch] [--workers 1,2] [--batching on,off] [--modes closed,open]
        [--scenarios generate16,generate1,mix] [--healthz-rate 10] [--url URL]

For each backend x workers x batching setting a real server (``python -m vae_cats.serving``)
starts on 127.0.0.1 (or, with ``--url``, the server already running there is measured: a
container, another commit's server); an asyncio aiohttp client then runs each scenario in each
mode for ``--duration`` seconds:

- ``closed`` loop: ``--clients`` clients, each sending its next request when the previous one
  is answered. A slow server slows the clients down, so a stall shows up as a few slow
  requests only (coordinated omission).
- ``open`` loop: requests are due at a fixed rate (``--rate`` per second) whatever the server
  does, each sent at its due time by a task of its own; latency counts **from the time it was
  due**, so a stall shows up in every request due during it.

Scenarios: ``generate16`` (``POST /generate {"n": 16}``, random seeds, PNG grid),
``generate1`` (``{"n": 1}``), ``mix`` (3 of 4 requests that ``/generate n=16``, 1 of 4
``/reconstruct`` of a real face of the bundled sample).

Throughout each row a ``/healthz`` probe runs beside the load: open loop at
``--healthz-rate`` per second, from a thread of its own (its own event loop and client,
so it never waits behind the load's connections or tasks), latency from each probe's due
time, from just before the row's first request until its last answer.

Each row: the mode, requests sent, answered (200), failed (other status or transport
error), answered requests/s and images/s, latency p50/p95/p99/max in ms over **all** sent
requests (a failed one counts with its time to failure), the ``/healthz`` probe's p99 and max
in ms and its failed probes out of those sent (``failed/sent``; a probe fails on any status
but 200 or a transport error), the CPU time per answered request of the server (all its
workers) and of this client (the load and the probe), the open connections per worker halfway
through the row (workers share one listening socket: the kernel splits the clients' keep-alive
connections between them, often unevenly, and a worker of one thread cannot use the core its
idle sibling leaves), restarts (the server process gone) and
the server's peak resident memory (``VmHWM``, one worker only). Before that, the raw ONNX
decoder in-process at batch 1, 16 and 64 (median of ``--repeat`` runs): the ceiling of
``/generate``. The client runs on the same machine as the server and takes CPU from it: aiohttp
(C-accelerated HTTP) takes about 0.4 ms of CPU per request where httpx took 2 ms, which the
server of a 2-core machine lost. ``uptime`` before and after is printed: figures taken under
other load are marked so.
Everything stops by itself (at most ``MAX_LOAD_S`` seconds of load).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp
import psutil
import torch

from vae_cats.checkpoint import read_checkpoint, vae_from_checkpoint
from vae_cats.data.sources import BUNDLED_SAMPLE
from vae_cats.serving.backends import OnnxBackend
from vae_cats.serving.launch import running_server
from vae_cats.serving.settings import SHIPPED_MODEL, default_threads

MAX_LOAD_S = 900.0
SCENARIOS = ("generate16", "generate1", "mix")
MODES = ("closed", "open")
# Shorter than uvicorn's 5 s keep-alive: the client drops an idle connection before the
# server may close it under a request just sent (a race that loses the request).
KEEPALIVE_S = 2.0

Request = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[bool, int, str]]]
# What a request that got no answer raises: refused or dropped connection, timeout.
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


@dataclass
class Load:
    """What one scenario in one mode gave: per request, its latency (s) from when it was due
    and whether it was answered (200), and the images it returned."""

    mode: str
    latencies: list[float] = field(default_factory=list)
    answered: int = 0
    failed: int = 0
    images: int = 0
    seconds: float = 0.0
    statuses: set[str] = field(default_factory=set)

    @property
    def sent(self) -> int:
        return self.answered + self.failed

    def percentile(self, q: float) -> float:
        """The q-quantile (0..1) of all latencies, ms (nearest rank); NaN when none."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def cells(self) -> list[str]:
        rate = self.answered / self.seconds if self.seconds else 0.0
        images = self.images / self.seconds if self.seconds else 0.0
        quantiles = [f"{self.percentile(q):.0f}" for q in (0.5, 0.95, 0.99, 1.0)]
        counts = [str(self.sent), str(self.answered), str(self.failed)]
        return [self.mode, *counts, f"{rate:.1f}", f"{images:.0f}", *quantiles]

    def probe_cells(self) -> list[str]:
        """The probe's columns: p99 and max latency (ms), failed/sent."""
        quantiles = [f"{self.percentile(q):.0f}" for q in (0.99, 1.0)]
        return [*quantiles, f"{self.failed}/{self.sent}"]


def a_face() -> bytes:
    """The first face file of the bundled sample."""
    with tarfile.open(BUNDLED_SAMPLE) as archive:
        member = next(m for m in archive if m.isfile())
        return archive.extractfile(member).read()  # type: ignore[union-attr]


async def outcome(
    session: aiohttp.ClientSession, method: str, path: str, images: int, **body: object
) -> tuple[bool, int, str]:
    """Send one request and read its whole answer: (answered with 200, ``images`` if so else
    0, what went wrong)."""
    async with session.request(method, path, **body) as response:  # type: ignore[arg-type]
        content = await response.read()
    if response.status == 200:
        return True, images, ""
    return False, 0, f"{path} {response.status}: {content[:120].decode(errors='replace')}"


def scenario_request(scenario: str, face: bytes) -> Request:
    """The request of ``scenario``: called with a session and the request's index, returns
    (answered with 200, images returned, what went wrong)."""

    async def generate(session: aiohttp.ClientSession, n: int) -> tuple[bool, int, str]:
        body = {"n": n, "seed": random.randrange(2**32)}
        return await outcome(session, "POST", "/generate", n, json=body)

    async def reconstruct(session: aiohttp.ClientSession) -> tuple[bool, int, str]:
        form = aiohttp.FormData()
        form.add_field("file", face, filename="cat.jpg")
        return await outcome(session, "POST", "/reconstruct", 1, data=form)

    async def request(session: aiohttp.ClientSession, index: int) -> tuple[bool, int, str]:
        if scenario == "generate1":
            return await generate(session, 1)
        if scenario == "mix" and index % 4 == 3:
            return await reconstruct(session)
        return await generate(session, 16)

    return request


async def timed(
    request: Request, session: aiohttp.ClientSession, index: int, due: float, load: Load
) -> None:
    """Send request ``index`` and record its latency from ``due`` (a ``perf_counter`` time)."""
    try:
        ok, images, problem = await request(session, index)
    except TRANSPORT_ERRORS as err:
        ok, images, problem = False, 0, type(err).__name__
    load.latencies.append(time.perf_counter() - due)
    if ok:
        load.answered += 1
        load.images += images
    else:
        load.failed += 1
        load.statuses.add(problem)


def session_for(url: str) -> aiohttp.ClientSession:
    """A client session on ``url``: no cap on connections, a 120-s timeout per request."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=120)
    return aiohttp.ClientSession(url, connector=connector, timeout=timeout)


async def closed_loop(url: str, clients: int, duration: float, request: Request) -> Load:
    """``clients`` clients, each sending its next request once the last is answered."""
    load = Load("closed")
    counter = itertools.count()
    start = time.perf_counter()
    end = start + duration

    async def client(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < end:
            await timed(request, session, next(counter), time.perf_counter(), load)

    async with session_for(url) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    load.seconds = time.perf_counter() - start
    return load


async def open_loop(
    url: str,
    rate: float,
    duration: float,
    request: Request,
    stop: threading.Event | None = None,
    mode: str = "open",
) -> Load:
    """Requests due every ``1 / rate`` seconds for ``duration`` seconds (or until ``stop`` is
    set), each sent at its due time whether or not earlier ones were answered; latency from
    the due time. Waits for every request sent (each has the session's 120 s timeout)."""
    load = Load(mode)
    total = int(rate * duration)
    start = time.perf_counter()
    async with session_for(url) as session:
        tasks = []
        for index in range(total):
            if stop is not None and stop.is_set():
                break
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(request, session, index, due, load)))
        await asyncio.gather(*tasks)
    load.seconds = time.perf_counter() - start
    return load


async def healthz(session: aiohttp.ClientSession, index: int) -> tuple[bool, int, str]:
    """``GET /healthz``: answered when 200."""
    return await outcome(session, "GET", "/healthz", 0)


class HealthzProbe:
    """``GET /healthz`` at ``rate`` per second (open loop, latency from each probe's due time)
    from a thread of its own, with its own event loop and client session, from ``with`` until
    the block ends; then ``load`` holds what it saw (mode ``healthz``). At most ``MAX_LOAD_S``
    seconds."""

    def __init__(self, url: str, rate: float) -> None:
        self.url, self.rate = url, rate
        self.stop = threading.Event()
        self.load = Load("healthz")
        self.thread = threading.Thread(target=self.run, name="healthz-probe", daemon=True)

    def run(self) -> None:
        self.load = asyncio.run(
            open_loop(self.url, self.rate, MAX_LOAD_S, healthz, self.stop, "healthz")
        )

    def __enter__(self) -> HealthzProbe:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop.set()
        self.thread.join()


def run_mode(mode: str, url: str, scenario: str, args: argparse.Namespace, face: bytes) -> Load:
    request = scenario_request(scenario, face)
    if mode == "closed":
        return asyncio.run(closed_loop(url, args.clients, args.duration, request))
    return asyncio.run(open_loop(url, args.rates[scenario], args.duration, request))


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds used so far by process ``pid`` and its live children (a
    server's workers); NaN for None or a process gone."""
    if pid is None:
        return float("nan")
    try:
        server = psutil.Process(pid)
        times = [process.cpu_times() for process in (server, *server.children(recursive=True))]
    except psutil.NoSuchProcess:
        return float("nan")
    return sum(spent.user + spent.system for spent in times)


def measure_row(
    url: str, pid: int | None, scenario: str, mode: str, args: argparse.Namespace, face: bytes
) -> list[str]:
    """The cells of one row from ``scenario`` in ``mode`` to the CPU columns, the /healthz
    probe running beside it, on the server at ``url`` (``pid`` None: started elsewhere, so no
    server CPU)."""
    server_start, client_start = cpu_seconds(pid), time.process_time()
    split: list[str] = ["-"]
    midway = threading.Timer(args.duration / 2, lambda: split.append(connections(pid, url)))
    with HealthzProbe(url, args.healthz_rate) as probe:
        midway.start()
        load = run_mode(mode, url, scenario, args, face)
    midway.cancel()
    answered = max(load.answered, 1)
    server_ms = (cpu_seconds(pid) - server_start) * 1000 / answered
    client_ms = (time.process_time() - client_start) * 1000 / answered
    cpu = [f"{server_ms:.1f}" if pid is not None else "-", f"{client_ms:.1f}"]
    for status in sorted(load.statuses | probe.load.statuses):
        print(f"  failed: {status}", file=sys.stderr)
    return [scenario, *load.cells(), *probe.load.probe_cells(), *cpu, split[-1]]


def connections(pid: int | None, url: str) -> str:
    """Open connections to ``url``'s port per worker of server ``pid``, most first (``9/8``),
    the probe's included; ``-`` for a server started elsewhere or gone. Workers share one listening
    socket, so the kernel, not a balancer, splits the clients' keep-alive connections."""
    if pid is None:
        return "-"
    port = urllib.parse.urlsplit(url).port
    counts = []
    try:
        server = psutil.Process(pid)
        for process in server.children(recursive=True) or [server]:
            ours = [c for c in process.net_connections("tcp") if c.laddr.port == port]
            if any(c.status == psutil.CONN_LISTEN for c in ours):  # a worker, not a helper
                counts.append(sum(c.status == psutil.CONN_ESTABLISHED for c in ours))
    except psutil.NoSuchProcess:  # the server (or a worker) died: the restarts column says so
        return "-"
    return "/".join(str(count) for count in sorted(counts, reverse=True))


def peak_rss_mb(pid: int) -> float:
    """``VmHWM`` of process ``pid`` in MB; NaN once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return float("nan")
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw_decoder(model: Path, repeat: int, threads: int) -> dict[int, float]:
    """Images/s of the ONNX decoder in-process at batch 1, 16 and 64, median of ``repeat``."""
    net = vae_from_checkpoint(read_checkpoint(model), model)
    backend = OnnxBackend(net, int(net.config["image_size"]), threads)
    speeds = {}
    for batch in (1, 16, 64):
        z = torch.randn(batch, net.latent_dim, generator=torch.Generator().manual_seed(0))
        backend.decode(z)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            backend.decode(z)
            times.append(time.perf_counter() - start)
        speeds[batch] = batch / statistics.median(times)
    return speeds


@contextmanager
def server_for(
    args: argparse.Namespace, backend: str, workers: str, batching: str
) -> Iterator[tuple[str, int | None]]:
    """(URL, pid) of the server measured for one setting: started on 127.0.0.1 for the row's
    backend, workers and batching and stopped afterwards, or the one at ``--url`` (pid None)."""
    if args.url:
        yield args.url, None
        return
    options = [] if batching == "on" else ["--no-batching"]
    with running_server(args.model, backend, workers=int(workers), options=options) as server:
        yield server


def check_answers(url: str) -> None:
    """Raise ValueError naming ``url`` unless its ``/healthz`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            status = response.status
    except (OSError, ValueError) as err:
        raise ValueError(f"--url {url}: /healthz did not answer ({err})") from None
    if status != 200:
        raise ValueError(f"--url {url}: /healthz answered {status}, not 200")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def split(text: str, allowed: tuple[str, ...], name: str) -> list[str]:
    values = [value for value in text.split(",") if value]
    bad = [value for value in values if value not in allowed]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"{name}: choose from {','.join(allowed)}, got {text!r}")
    return values


def rates(text: str, scenarios: list[str]) -> dict[str, float]:
    """Open-loop rate per scenario from ``12.5`` or ``generate16=20,generate1=100``."""
    if "=" not in text:
        return dict.fromkeys(scenarios, float(text))
    given = {key: float(value) for key, value in (part.split("=") for part in text.split(","))}
    missing = [name for name in scenarios if name not in given]
    if missing:
        raise ValueError(f"--rate: no rate for {', '.join(missing)}")
    return given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per row")
    parser.add_argument("--clients", type=int, default=16, help="closed loop: clients")
    parser.add_argument(
        "--rate",
        default="generate16=20,generate1=100,mix=20",
        help="open loop: requests/s due, one number or SCENARIO=RATE,...",
    )
    parser.add_argument("--repeat", type=int, default=20, help="raw decoder timing runs")
    parser.add_argument("--backends", default="onnx")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts")
    parser.add_argument("--batching", default="on,off")
    parser.add_argument("--modes", default="closed,open")
    parser.add_argument("--scenarios", default="generate16,generate1")
    parser.add_argument(
        "--healthz-rate", type=float, default=10.0, help="/healthz probes/s during each row"
    )
    parser.add_argument(
        "--url",
        help="measure the server already running at this URL (e.g. http://127.0.0.1:8000) "
        "instead of starting one per setting; --backends, --workers, --batching then do "
        "not apply",
    )
    args = parser.parse_args(argv)
    try:
        backends = split(args.backends, ("onnx", "torch"), "--backends")
        batchings = split(args.batching, ("on", "off"), "--batching")
        modes = split(args.modes, MODES, "--modes")
        scenarios = split(args.scenarios, SCENARIOS, "--scenarios")
        workers = [int(value) for value in args.workers.split(",")]
        args.rates = rates(args.rate, scenarios)
    except (argparse.ArgumentTypeError, ValueError) as err:
        parser.error(str(err))
    if args.healthz_rate <= 0:
        parser.error(f"--healthz-rate {args.healthz_rate:g}: give a rate above 0")
    settings = (
        [("-", "-", "-")]
        if args.url
        else [(b, str(w), on) for b, w, on in itertools.product(backends, workers, batchings)]
    )
    if args.url:
        args.url = args.url.rstrip("/")
        try:
            check_answers(args.url)
        except ValueError as err:
            parser.error(str(err))
    rows = len(settings) * len(modes) * len(scenarios)
    if not 0 < args.duration * rows <= MAX_LOAD_S:
        parser.error(f"{rows} rows x --duration must fit {MAX_LOAD_S:.0f} s of load")
    print(f"before: {uptime()}")
    threads = default_threads()
    speeds = raw_decoder(args.model, args.repeat, threads)
    best = max(speeds.values())
    text = ", ".join(f"batch {batch}: {speed:.0f}" for batch, speed in speeds.items())
    print(f"raw ONNX decoder ({threads} threads), images/s: {text}; best {best:.0f}")
    face = a_face()
    if args.url:
        print(f"server: {args.url} (started elsewhere); raw decoder: {args.model}")
    print(
        f"\nclosed loop: {args.clients} clients; open loop: {args.rate} requests/s due; "
        f"{args.duration:g} s per row; /healthz probed at {args.healthz_rate:g}/s throughout "
        "each row; latency from when each request was due, over all sent\n"
    )
    header = [
        "backend", "workers", "batching", "scenario", "mode", "sent", "answered", "failed",
        "req/s", "img/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "healthz p99 ms",
        "healthz max ms", "healthz failed", "server CPU ms/req", "client CPU ms/req",
        "connections per worker", "restarts", "peak RSS MB",
    ]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for backend, count, batching in settings:
        with server_for(args, backend, count, batching) as (url, pid):
            for scenario, mode in itertools.product(scenarios, modes):
                cells = measure_row(url, pid, scenario, mode, args, face)
                # A server started here: whether it died, and one worker's own memory (the
                # supervisor of several holds no model).
                restarts = "-" if pid is None else str(int(not Path(f"/proc/{pid}").exists()))
                rss = f"{peak_rss_mb(pid):.0f}" if pid is not None and count == "1" else "-"
                row = [backend, count, batching, *cells, restarts, rss]
                print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nafter: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
