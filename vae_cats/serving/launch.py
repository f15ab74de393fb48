"""Start the API in a subprocess on 127.0.0.1 and wait until it is ready: for the serving
tests and the load benchmark (benchmarks/bench_serve.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from vae_cats.fileio import PROJECT_DIR


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(
    model: Path,
    backend: str = "onnx",
    timeout: float = 300,
    threads: int | None = None,
    workers: int = 1,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """A real API server (``python -m vae_cats.serving``) on 127.0.0.1 and a free port: yields
    its base URL and pid once ``/readyz`` answers 200, and stops it (that pid) afterwards.

    Args:
        model: The checkpoint served.
        backend: ``onnx`` or ``torch``.
        timeout: Seconds to wait for readiness.
        threads: ``--threads``; default ``$OMP_NUM_THREADS`` (else 2) for one worker, the
            CLI's own choice (cores // workers) for several.
        workers: ``--workers``; with several, the pid is uvicorn's supervisor.
        options: More command-line options (``--no-batching``, ...).
        env: Extra environment variables of the server.

    Raises:
        RuntimeError: If the server exits or is not ready within ``timeout`` seconds.
    """
    port = free_port()
    command = [sys.executable, "-m", "vae_cats.serving", "--model", str(model)]
    command += ["--backend", backend, "--port", str(port)]
    command += ["--workers", str(workers), *options]
    if threads is not None or workers == 1:
        command += ["--threads", str(threads or os.environ.get("OMP_NUM_THREADS", "2"))]
    # The log goes to a file: a pipe nobody reads would fill and stall the server.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        command,
        cwd=PROJECT_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"server exited: {log.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout} s")
            time.sleep(0.5)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
