"""The API under load, with real servers: ``/drift`` at its maximum size keeps memory
bounded, and the load benchmark (``benchmarks/bench_serve.py``): its fixed-rate (open-loop)
mode and its ``/healthz`` probe show a 5-second stall of the server in their tails and lose no
request; its table carries the probe's figures in every row."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.bench_serve import HealthzProbe, Load, closed_loop, open_loop, scenario_request
from tests.helpers import PROJECT_DIR, bundled_members, run_script
from vae_cats.fileio import ASSETS_DIR
from vae_cats.serving.launch import free_port, running_server
from vae_cats.serving.schemas import MAX_DRIFT_FILES

SHIPPED = ASSETS_DIR / "cats_vae.ckpt"
BENCH_SERVE = PROJECT_DIR / "benchmarks" / "bench_serve.py"


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
    over a second; nothing is lost. The /healthz probe beside the open loop (10/s, its own
    thread and client) sees the same stall from each probe's due time. The closed loop, its
    clients blocked too, sends only a few requests during the stall."""
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
                with HealthzProbe(url, 10) as probe:
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
    health = probe.load
    assert health.sent >= 100 and health.answered == health.sent, health.statuses
    assert 4500 < health.percentile(1.0) < 8000
    assert sum(latency > 1.0 for latency in health.latencies) >= 35
    assert closed.failed == 0 and closed.percentile(1.0) > 4500
    assert sum(latency > 1.0 for latency in closed.latencies) <= 4


def table_rows(stdout: str) -> list[dict[str, str]]:
    """The rows of the one markdown table in ``stdout``, as {column: cell}."""
    lines = [line.strip().strip("|") for line in stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].split("|")]
    assert set(lines[1].replace("|", "")) == {"-"}, lines[1]
    return [
        dict(zip(header, (cell.strip() for cell in line.split("|")), strict=True))
        for line in lines[2:]
    ]


@pytest.mark.slow
def test_bench_serve_rows_carry_the_healthz_probe() -> None:
    """A short real run (2 s a row, closed and open loop, one worker): every row holds the
    load's counts and latencies and the /healthz probe's p99, max and failed/sent, the
    probe sending 10/s for at least the row's 2 s and losing none."""
    result = run_script(
        BENCH_SERVE, "--duration", "2", "--repeat", "1", "--scenarios", "generate1",
        "--batching", "on", "--clients", "4", "--rate", "20", "--healthz-rate", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/healthz probed at 10/s throughout each row" in result.stdout
    rows = table_rows(result.stdout)
    assert [(row["scenario"], row["mode"]) for row in rows] == [
        ("generate1", "closed"),
        ("generate1", "open"),
    ]
    for row in rows:
        assert int(row["sent"]) == int(row["answered"]) > 0 and row["failed"] == "0", row
        assert 0 < float(row["p50 ms"]) <= float(row["p99 ms"]) <= float(row["max ms"]), row
        failed, sent = (int(count) for count in row["healthz failed"].split("/"))
        assert failed == 0 and 20 <= sent <= 10 * 120, row
        p99, peak = float(row["healthz p99 ms"]), float(row["healthz max ms"])
        assert 0 < p99 <= peak < 120_000, row  # answered, within the client's timeout
        assert row["restarts"] == "0" and float(row["peak RSS MB"]) > 100, row
        # Decoding alone takes about 3 ms of CPU per image here; a client request far less.
        assert 1 < float(row["server CPU ms/req"]) < 1000, row
        assert 0 < float(row["client CPU ms/req"]) < float(row["server CPU ms/req"]), row
        # One worker holds every connection: the 4 clients' (closed loop) and the probe's.
        assert int(row["connections per worker"]) >= 1, row


@pytest.mark.slow
def test_bench_serve_measures_a_server_started_elsewhere() -> None:
    """``--url``: the server already running there is measured (not one started per
    setting); its rows name no backend, workers or batching, nor restarts and memory."""
    with running_server(SHIPPED, "onnx") as (url, _):
        result = run_script(
            BENCH_SERVE, "--url", f"{url}/", "--duration", "1", "--repeat", "1",
            "--scenarios", "generate16", "--modes", "closed", "--clients", "2",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"server: {url} (started elsewhere)" in result.stdout
    (row,) = table_rows(result.stdout)
    unknown = (
        "backend", "workers", "batching", "restarts", "server CPU ms/req",
        "connections per worker",
    )  # fmt: skip
    assert [row[key] for key in unknown] == ["-"] * len(unknown), row
    assert int(row["answered"]) == int(row["sent"]) > 0 and row["failed"] == "0", row
    assert float(row["img/s"]) > 0 and row["peak RSS MB"] == "-", row


def test_bench_serve_refuses_a_url_where_nothing_answers() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_script(BENCH_SERVE, "--url", url)
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert f"error: --url {url}: /healthz did not answer" in last, result.stderr


def test_bench_serve_refuses_a_healthz_rate_of_zero() -> None:
    result = run_script(BENCH_SERVE, "--healthz-rate", "0")
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith("error: --healthz-rate 0: give a rate above 0"), result.stderr
