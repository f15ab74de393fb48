"""``python -m vae_cats.serving --model PATH --backend onnx|torch --workers N --port 8000``

Serves the HTTP API with uvicorn: ``--workers`` processes (each loads the model), each
backend with ``--threads`` threads (default: the cores divided among the workers, so
workers x threads <= cores). Metrics are summed across workers through prometheus-client's
multi-process mode: ``$PROMETHEUS_MULTIPROC_DIR`` when set (emptied at start), else a
temporary folder removed at exit. A bad ``--model`` or option is one error line and exit
code 2, before the server starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from vae_cats.checkpoint import CheckpointError, read_checkpoint, vae_from_checkpoint
from vae_cats.serving.settings import (
    BACKENDS,
    SETTINGS_VARIABLE,
    SHIPPED_MODEL,
    Settings,
    available_cores,
    default_threads,
)

# Not imported from serving.metrics: prometheus_client must first be imported after the
# variable is set, and that module imports it.
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
FACTORY = "vae_cats.serving.app:app_from_environment"
MAX_WORKERS = 64
# uvicorn's default is 5 s, measured in wall-clock time: after a stall of the process longer
# than that (a pause, a swap storm, SIGSTOP) it closed idle connections on which clients had
# already sent requests, and those requests were lost (tests/integration/test_serving_load.py).
# A server should also outlast the idle timeout of the proxy in front of it.
KEEP_ALIVE_S = 65


def tcp_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port``, created with protocol ``IPPROTO_TCP``, for
    uvicorn's workers to listen on.

    uvicorn (0.54) binds the workers' socket itself with protocol 0; accepted connections
    inherit that, and asyncio turns on ``TCP_NODELAY`` only for sockets that say
    ``IPPROTO_TCP``, so Nagle's algorithm held every keep-alive response until the client's
    delayed ACK: /healthz took 42 ms instead of 1.3 ms with 2 workers (Kludex/uvicorn#3149).

    Raises:
        OSError: One line naming the address when it cannot be bound (in use, not local).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vae_cats.serving",
        description="Serve a vae_cats model over HTTP (FastAPI + uvicorn).",
    )
    parser.add_argument(
        "--model", type=Path, default=SHIPPED_MODEL, help="checkpoint (default: the shipped model)"
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="onnx", help="model runtime (default: onnx)"
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("VAE_CATS_SERVE_HOST", "127.0.0.1"),
        help="address to listen on (default: $VAE_CATS_SERVE_HOST, else 127.0.0.1; the "
        "predict image sets 0.0.0.0 so that docker run -p reaches it)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help=f"server processes, 1..{MAX_WORKERS}, each with its own model (default: 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="backend threads per worker (default: available cores // workers, at least 1)",
    )
    parser.add_argument(
        "--keep-alive-s",
        type=int,
        default=KEEP_ALIVE_S,
        help="seconds an idle connection stays open (default: %(default)g, longer than the "
        "60 s idle timeout of common load balancers)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=2.0,
        help="largest image upload, in MiB (default: 2)",
    )
    parser.add_argument(
        "--no-batching",
        action="store_true",
        help="decode each request alone (default: concurrent decodes share one call)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=Settings.batch_wait_ms,
        help="how long a decode waits for others to share its call "
        f"(default: {Settings.batch_wait_ms:g})",
    )
    parser.add_argument(
        "--batch-max-images",
        type=int,
        default=Settings.batch_max_images,
        help=f"most images in one shared decode (default: {Settings.batch_max_images})",
    )
    return parser.parse_args(argv)


def metrics_folder() -> tuple[Path, bool]:
    """The multi-process metrics folder, emptied, and whether this run created it."""
    given = os.environ.get(MULTIPROC_VARIABLE)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="vae_cats_metrics_"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # an earlier server's counts would add to ours
        stale.unlink()
    return folder, not given


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; 2 after one error line for a bad option or model."""
    args = parse_args(argv)
    try:
        if not 1 <= args.workers <= MAX_WORKERS:
            raise ValueError(f"--workers must lie in 1..{MAX_WORKERS}, got {args.workers}")
        vae_from_checkpoint(read_checkpoint(args.model), args.model)
        threads = args.threads if args.threads is not None else default_threads(args.workers)
        settings = Settings(
            model=args.model,
            backend=args.backend,
            threads=threads,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            batching=not args.no_batching,
            batch_wait_ms=args.batch_wait_ms,
            batch_max_images=args.batch_max_images,
            # With several workers, a worker takes connections only once its model is loaded,
            # so no request meets a worker that is still loading.
            load_in_background=args.workers == 1,
        )
    except (CheckpointError, ValueError) as err:
        print(f"serving: error: {err}", file=sys.stderr)
        return 2
    cores = available_cores()
    if args.workers * threads > cores:
        print(
            f"serving: warning: {args.workers} workers x {threads} threads on {cores} cores: "
            "the workers will compete for the cores",
            file=sys.stderr,
        )
    folder, created = metrics_folder()
    os.environ[MULTIPROC_VARIABLE] = str(folder)
    os.environ[SETTINGS_VARIABLE] = settings.to_environment()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it
    # found: make that an ordinary exit (atexit hooks run, exit code 0; docker stop's case).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    options = {"host": args.host, "port": args.port, "timeout_keep_alive": args.keep_alive_s}
    try:
        if args.workers == 1:
            uvicorn.run(FACTORY, factory=True, log_level="info", **options)
        else:
            config = uvicorn.Config(
                FACTORY, factory=True, workers=args.workers, log_level="info", **options
            )
            listener = tcp_listener(args.host, args.port)
            print(f"serving on http://{args.host}:{args.port} with {args.workers} workers")
            Multiprocess(config, sockets=[listener]).run()
    except OSError as err:
        print(f"serving: error: {err}", file=sys.stderr)
        return 2
    finally:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
