"""``python -m vae_cats.serving --model PATH --backend onnx|torch --host 127.0.0.1 --port 8000``

Serves the HTTP API with uvicorn (one worker; the backend gets every core). A bad ``--model``
is one error line and exit code 2, before the server starts.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import uvicorn

from vae_cats.checkpoint import CheckpointError, read_checkpoint, vae_from_checkpoint
from vae_cats.serving.app import create_app
from vae_cats.serving.settings import BACKENDS, SHIPPED_MODEL, Settings, default_threads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m vae_cats.serving",
        description="Serve a vae_cats model over HTTP (FastAPI + uvicorn).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="checkpoint (.ckpt)")
    parser.add_argument("--backend", choices=BACKENDS, default="onnx", help="model runtime")
    parser.add_argument(
        "--host",
        default=os.environ.get("VAE_CATS_SERVE_HOST", "127.0.0.1"),
        help="address to listen on (default: $VAE_CATS_SERVE_HOST, else 127.0.0.1; the "
        "predict image sets 0.0.0.0 so that docker run -p reaches it)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--threads", type=int, default=default_threads(), help="backend threads (<= cores)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=2.0, help="largest image upload, in MiB"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; 2 after one error line for a bad option or model."""
    args = parse_args(argv)
    try:
        vae_from_checkpoint(read_checkpoint(args.model), args.model)
        settings = Settings(
            model=args.model,
            backend=args.backend,
            threads=args.threads,
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        )
    except (CheckpointError, ValueError) as err:
        print(f"serving: error: {err}", file=sys.stderr)
        return 2
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it
    # found: make that an ordinary exit (atexit hooks run, exit code 0; docker stop's case).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
