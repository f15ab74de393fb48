"""Several uvicorn workers behind one port (``python -m vae_cats.serving --workers 2``):
Prometheus metrics are one total across the workers (multi-process mode), never go down
between scrapes, and survive a worker that is killed and restarted; schemathesis and hostile
uploads get no 5xx, and /healthz stays up meanwhile."""

from __future__ import annotations

import base64
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_serve import HealthzProbe
from tests.helpers import (
    UNUSABLE_UPLOADS,
    assert_one_line,
    bundled_members,
    hostile_uploads,
    schemathesis_calls,
)
from vae_cats.fileio import ASSETS_DIR
from vae_cats.serving.launch import running_server

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"
GENERATE_OK = (("method", "POST"), ("route", "/generate"), ("status", "200"))


def generate_count(client: httpx.Client) -> float:
    """``vae_cats_http_requests_total`` of answered ``POST /generate`` from one scrape."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "vae_cats_http_requests_total" and tuple(
                sorted(sample.labels.items())
            ) == tuple(sorted(GENERATE_OK)):
                return sample.value
    return 0.0


def settled_count(client: httpx.Client, expected: float) -> float:
    """``generate_count`` once it reaches ``expected`` (a worker counts a request just after
    sending its answer), or after 5 s."""
    deadline = time.monotonic() + 5
    count = generate_count(client)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        count = generate_count(client)
    return count


def workers_of(supervisor: int) -> list[int]:
    """The pids of uvicorn's workers: the children of ``supervisor`` except multiprocessing's
    resource tracker (spawned workers start one)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = []
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:  # exited meanwhile
            continue
        if b"resource_tracker" not in command:
            workers.append(int(pid))
    return workers


def test_two_workers_count_one_monotonic_total(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"stale")  # an earlier server's file: removed at start
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    with (
        running_server(SHIPPED, "onnx", workers=2, env=env) as (url, supervisor),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        assert not (folder / "counter_1.db").exists()
        pids = workers_of(supervisor)
        assert len(pids) == 2, pids

        def one(seed: int) -> int:
            with httpx.Client(base_url=url, timeout=60) as own:
                return own.post("/generate", json={"n": 1, "seed": seed}).status_code

        counts = []
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(one, seed) for seed in range(100)]
            for _ in range(20):
                counts.append(generate_count(client))
                time.sleep(0.05)
            statuses = [future.result() for future in futures]
        assert statuses == [200] * 100
        counts.append(settled_count(client, 100))
        assert all(b >= a for a, b in zip(counts, counts[1:], strict=False)), counts
        assert counts[-1] == 100, counts
        # Both workers answered (each wrote its own counter file).
        writers = {path.name for path in folder.glob("counter_*.db")}
        assert {f"counter_{pid}.db" for pid in pids} <= writers, writers

        # A worker killed outright: uvicorn starts another; its count stays in the total and
        # its live gauges are removed at the next scrape.
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            alive = workers_of(supervisor)
            if len(alive) == 2 and pids[0] not in alive:
                break
            time.sleep(0.5)
        assert pids[0] not in workers_of(supervisor)
        assert generate_count(client) == 100
        assert not list(folder.glob(f"gauge_live*_{pids[0]}.db"))
        for seed in range(10):
            assert client.post("/generate", json={"n": 1, "seed": seed}).status_code == 200
        assert settled_count(client, 110) == 110


def assert_refused_or_answered(response: httpx.Response, name: str, field: str) -> None:
    """A file of ``UNUSABLE_UPLOADS`` is refused with a 4xx whose JSON detail is one line
    that starts with ``field``; any other hostile file is answered (200)."""
    status, path = response.status_code, response.request.url.path
    if name not in UNUSABLE_UPLOADS:
        assert status == 200, (name, path, response.text[:300])
        return
    assert 400 <= status < 500, (name, path, status, response.text[:300])
    assert_one_line(response, status)
    assert response.json()["detail"].startswith(f"{field}: "), (name, response.text[:300])


@pytest.mark.slow
def test_two_workers_give_no_server_error_to_schemathesis_or_hostile_uploads(
    tmp_path: Path,
) -> None:
    """Schemathesis over the OpenAPI schema (10 examples per operation), then each hostile
    upload through /reconstruct (file part and base64) and /drift (beside a real face), then
    all of them in one /drift: never a 5xx; every unusable file refused with a one-line JSON
    4xx naming its field, every odd but decodable one answered. /healthz, probed at 10/s
    from a thread throughout, answers 200 every time, and no worker died."""
    uploads = hostile_uploads(tmp_path)
    good = bundled_members(8)[-1]
    with (
        running_server(SHIPPED, "onnx", workers=2) as (url, supervisor),
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        pids = workers_of(supervisor)
        assert len(pids) == 2, pids
        with HealthzProbe(url, 10) as probe:
            calls = schemathesis_calls(url)
            for name, raw in uploads:
                answer = client.post("/reconstruct", files={"file": (name, raw)})
                assert_refused_or_answered(answer, name, "file")
                if answer.status_code == 200:
                    assert len(answer.json()["reconstruction"]) > 100, name
                encoded = {"image_base64": base64.b64encode(raw).decode()}
                answer = client.post("/reconstruct", data=encoded)
                assert_refused_or_answered(answer, name, "image_base64")
                pair = [("files", good), ("files", (name, raw))]
                answer = client.post("/drift", files=pair)
                assert_refused_or_answered(answer, name, "files.1")
                if answer.status_code == 200:
                    assert answer.json()["n"] == 2, (name, answer.json())
            everything = [("files", upload) for upload in uploads]
            assert_one_line(client.post("/drift", files=everything), 400, "files.0: empty")
        assert sorted(workers_of(supervisor)) == sorted(pids)
    assert len(calls) >= 9 and {"POST /reconstruct", "POST /drift"} <= set(calls), calls
    health = probe.load
    assert health.failed == 0 and health.answered == health.sent, health.statuses
    assert health.sent >= 20, health.sent  # 10/s through a run of more than 2 s
