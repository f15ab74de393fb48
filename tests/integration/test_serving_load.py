"""The API under load, with real servers: ``/drift`` at its maximum size keeps memory
bounded, and the load benchmark's fixed-rate (open-loop) mode shows a 5-second stall of
the server in its tail and loses no request (``benchmarks/bench_serve.py``)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.bench_serve import Load, closed_loop, open_loop, scenario_request
from tests.helpers import bundled_members
from vae_cats.fileio import ASSETS_DIR
from vae_cats.serving.launch import running_server
from vae_cats.serving.schemas import MAX_DRIFT_FILES

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.slow
def test_drift_of_the_maximum_size_keeps_memory_bounded() -> None:
    """Three /drift requests of 512 distinct faces raise the server's resident memory by
    less than 300 MB over the idle server's (before chunking: +2.4 GB after one)."""
    faces = [raw for _, raw in bundled_members(MAX_DRIFT_FILES)]
    files = [("files", (f"{i}.jpg", raw)) for i, raw in enumerate(faces)]
    with (
        running_server(SHIPPED, "onnx") as (url, pid),
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        client.post("/generate", json={"n": 1, "seed": 0}).raise_for_status()
        idle = rss_mb(pid)
        for _ in range(3):
            body = client.post("/drift", files=files).json()
            assert body["n"] == MAX_DRIFT_FILES and body["duplicates_removed"] == 0, body
            assert body["is_drift"] is False, body
        grown = rss_mb(pid) - idle
        assert grown < 300, f"RSS {idle:.0f} MB idle, +{grown:.0f} MB after three /drift"
        too_many = files + [("files", ("extra.jpg", faces[0]))]
        response = client.post("/drift", files=too_many)
        assert response.status_code == 422 and "512" in response.json()["detail"]


@pytest.mark.slow
def test_open_loop_shows_a_stall_that_the_closed_loop_hides() -> None:
    """The server stopped (SIGSTOP) for 5 s mid-run: at 10 requests/s due, every request
    due during the stall waits for it, so the open loop's maximum is about 5 s and its p95
    over a second; nothing is lost. The closed loop, its clients blocked too, sends only a
    few requests during the stall."""
    request = scenario_request("generate1", b"")
    with running_server(SHIPPED, "onnx") as (url, pid):

        def stall(after: float) -> None:
            time.sleep(after)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(5)
            os.kill(pid, signal.SIGCONT)

        loads: dict[str, Load] = {}
        for mode in ("open", "closed"):
            stopper = threading.Thread(target=stall, args=(2.0,))
            stopper.start()
            if mode == "open":
                loads[mode] = asyncio.run(open_loop(url, 10, 10, request))
            else:
                loads[mode] = asyncio.run(closed_loop(url, 2, 10, request))
            stopper.join()
    opened, closed = loads["open"], loads["closed"]
    assert opened.sent == 100 and opened.answered == 100 and opened.failed == 0, opened.statuses
    assert 4500 < opened.percentile(1.0) < 8000
    assert opened.percentile(0.95) > 1000
    # About 50 requests fell due during the stall: each waited part of it.
    assert sum(latency > 1.0 for latency in opened.latencies) >= 35
    assert closed.failed == 0 and closed.percentile(1.0) > 4500
    assert sum(latency > 1.0 for latency in closed.latencies) <= 4
