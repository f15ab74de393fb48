"""The web page: ``GET /`` and the files of ``static/`` (plain HTML, CSS, one ES module)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


def mount_static(app: FastAPI) -> None:
    """Serve ``static/`` under ``/static`` (a mount, which routers cannot carry)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
