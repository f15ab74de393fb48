"""Entry point of the predict image: ``serve ...`` runs the HTTP API
(``python -m vae_cats.serving``), anything else is handed to the predict script unchanged.

``docker run -p 8000:8000 predict:latest serve --model /models/x.ckpt``
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the first argument; returns the exit code of the command run."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        from vae_cats.serving.__main__ import main as serve

        return serve(args[1:])
    from vae_cats.predict_model import main as predict

    return predict(args)


if __name__ == "__main__":
    sys.exit(main())
