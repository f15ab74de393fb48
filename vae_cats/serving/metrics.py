"""Prometheus metrics of the API (prometheus-client), in a registry of its own per app:
request counts by route, method and status, latency histograms by route, requests in flight,
the served model (version, data hash, backend) and drift verdicts."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Latency buckets from 5 ms to 10 s: /healthz sits in the first, /generate n=256 in the last.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The app's collectors, all in ``registry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vae_cats_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vae_cats_http_request_duration_seconds",
            "Time from request to the end of the response, by route template",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "vae_cats_http_requests_in_flight", "Requests being handled", registry=self.registry
        )
        self.model = Info("vae_cats_model", "The served model", registry=self.registry)
        self.drift = Counter(
            "vae_cats_drift_verdicts",
            "Per-image drift verdicts of /reconstruct",
            ["outlier"],
            registry=self.registry,
        )


def route_template(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The path template of the route that serves ``scope`` (``other`` when none does), so
    the route label stays a small set whatever paths clients try."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
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
