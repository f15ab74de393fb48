"""Prometheus metrics of the API (prometheus-client): request counts by route, method and
status, latency histograms by route, requests in flight, the served model (version, data
hash, backend), drift verdicts and micro-batch sizes.

With several uvicorn workers each process counts alone, and a scrape reaching one worker
would see its share only (counters that seem to go down between scrapes). So when
``PROMETHEUS_MULTIPROC_DIR`` is set (the serving CLI always sets it, to a folder it empties
at start) prometheus-client's multi-process mode is used: every worker writes its values to
memory-mapped files there, and ``/metrics`` sums the files of all workers, dead ones included
for counters and histograms (totals never go down); gauges count live workers only, and the
files of a worker that is gone are removed (``mark_process_dead``) at the next scrape.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets from 5 ms to 10 s: /healthz sits in the first, /generate n=256 in the last.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The multi-process folder from the environment, or None (one process)."""
    folder = os.environ.get(MULTIPROC_VARIABLE)
    return Path(folder) if folder else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def mark_dead_workers(folder: Path) -> list[int]:
    """``mark_process_dead`` for every process with live-gauge files in ``folder`` that no
    longer exists (a worker killed or restarted by uvicorn); returns their pids."""
    dead = set()
    for path in folder.iterdir():
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(folder))
    return sorted(dead)


class Metrics:
    """The app's collectors and what ``/metrics`` exposes.

    Raises:
        RuntimeError: If ``PROMETHEUS_MULTIPROC_DIR`` is set but prometheus-client was
            imported before it was (its values would stay per process).
    """

    def __init__(self) -> None:
        self.folder = multiprocess_dir()
        if self.folder is not None and values.ValueClass.__name__ != "MmapedValue":
            raise RuntimeError(
                f"${MULTIPROC_VARIABLE} was set after prometheus_client was imported: set it "
                "before the app is imported (python -m vae_cats.serving does)"
            )
        # In multi-process mode the values live in files; the collectors' own registry is
        # never exposed, a MultiProcessCollector reads the files instead.
        own = CollectorRegistry()
        self.requests = Counter(
            "vae_cats_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "vae_cats_http_request_duration_seconds",
            "Time from request to the end of the response, by route template",
            ["route"],
            buckets=BUCKETS,
            registry=own,
        )
        self.in_flight = Gauge(
            "vae_cats_http_requests_in_flight",
            "Requests being handled (all live workers)",
            registry=own,
            multiprocess_mode="livesum",
        )
        # A gauge of 1 with the facts as labels: Info does not work across processes.
        self.model = Gauge(
            "vae_cats_model_info",
            "The served model",
            ["name", "version", "data_hash", "backend"],
            registry=own,
            multiprocess_mode="livemax",
        )
        self.drift = Counter(
            "vae_cats_drift_verdicts",
            "Per-image drift verdicts of /reconstruct",
            ["outlier"],
            registry=own,
        )
        self.batch_images = Histogram(
            "vae_cats_decode_batch_images",
            "Images per shared decoder call of the micro-batcher",
            buckets=BATCH_BUCKETS,
            registry=own,
        )
        if self.folder is None:
            self.registry = own
        else:
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=str(self.folder))

    def exposition(self) -> bytes:
        """The Prometheus text of every worker's values (after removing dead workers' gauges)."""
        if self.folder is not None:
            mark_dead_workers(self.folder)
        return generate_latest(self.registry)

    def worker_exited(self) -> None:
        """Remove this process's live gauges (its counters stay in the totals)."""
        if self.folder is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.folder))


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The path template of the route that serves ``scope`` (``other`` when none does), so
    the route label stays a small set whatever paths clients try."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            path = getattr(route, "path", None)
            return str(path) if path is not None else "other"
    return "other"


class MetricsMiddleware:
    """Counts and times every HTTP request, including those refused by inner middleware."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = list(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.routes, scope)
        status = 500
        start = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
