"""The FastAPI app (``create_app``): routes of docs/serving.md and notes/API.md.

Model calls run in sync routes or ``run_in_threadpool``, never on the event loop, so
``/healthz`` answers while a large ``/generate`` runs. The model loads in a background thread
at start-up: ``/readyz`` says 503 until it is loaded, model routes answer 503 meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException

from vae_cats.data.decode import BadImageError
from vae_cats.generate import SamplerError
from vae_cats.serving.limits import BodyLimitMiddleware
from vae_cats.serving.metrics import Metrics, MetricsMiddleware
from vae_cats.serving.service import (
    ModelService,
    UploadTooLargeError,
    b64_png,
    grid_png,
    png_bytes,
)
from vae_cats.serving.settings import Settings

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_N = 256
MAX_STEPS = 64
MAX_DRIFT_FILES = 512
MAX_SEED = 2**32 - 1  # scikit-learn's mixture takes seeds below 2**32
MAX_LATENT = 1000.0
PNG = {"content": {"image/png": {}}, "description": "PNG image"}

Sampler = Literal["normal", "gmm"]
Format = Literal["png", "json"]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
LatentValue = Annotated[float, Field(ge=-MAX_LATENT, le=MAX_LATENT, allow_inf_nan=False)]
Latent = Annotated[list[LatentValue], Field(min_length=1, max_length=4096)]


class GenerateRequest(BaseModel):
    """New cats: ``n`` codes of ``sampler`` drawn with ``seed``, decoded."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"n": 16, "seed": 0, "sampler": "gmm", "format": "png"}]},
    )
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 16
    seed: Seed | None = None
    sampler: Sampler | None = None
    format: Format = "png"


class DecodeRequest(BaseModel):
    """Latent codes to decode, each of the model's ``latent_dim`` values."""

    model_config = ConfigDict(extra="forbid")
    latents: Annotated[list[Latent], Field(min_length=1, max_length=MAX_N)]
    format: Format = "png"


class InterpolateRequest(BaseModel):
    """Ends given as two seeds (code 0 of ``/generate {n: 1, seed}``) or two latent codes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"seed_a": 1, "seed_b": 2, "steps": 8, "format": "png"}]},
    )
    seed_a: Seed | None = None
    seed_b: Seed | None = None
    sampler: Sampler | None = None
    latent_a: Latent | None = None
    latent_b: Latent | None = None
    steps: Annotated[StrictInt, Field(ge=2, le=MAX_STEPS)] = 8
    format: Format = "png"


class GenerateResponse(BaseModel):
    seed: int
    sampler: str
    images: list[str] = Field(description="base64 PNG, one per image")
    latents: list[list[float]]


class ImagesResponse(BaseModel):
    images: list[str] = Field(description="base64 PNG, one per image")


class DriftVerdict(BaseModel):
    is_outlier: bool
    score: float
    threshold: float
    verdict: str


class ReconstructResponse(BaseModel):
    original: str = Field(description="base64 PNG of the upload as ingested (S x S)")
    reconstruction: str = Field(description="base64 PNG of decode(mu)")
    ssim: float
    psnr: float = Field(description="dB")
    latent: list[float]
    drift: DriftVerdict | None = Field(description="null when the model stores no drift stats")


class BatchDriftResponse(BaseModel):
    n: int
    mmd: float
    p_value: float
    is_drift: bool
    alpha: float


def one_line(errors: list[Any]) -> str:
    """The first validation error as ``field: message``."""
    if not errors:
        return "invalid request"
    error = errors[0]
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "form")]
    if error.get("type") == "json_invalid":
        return f"body: malformed JSON ({error.get('ctx', {}).get('error', 'cannot parse')})"
    field = ".".join(loc) or "body"
    return f"{field}: {error.get('msg', 'invalid')}"


def _bad_request(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _json_or_png(images: Any, fmt: str, nrow: int = 8) -> Response:
    if fmt == "png":
        return Response(grid_png(images, nrow=nrow), media_type="image/png")
    return JSONResponse({"images": [b64_png(image) for image in images]})


def create_app(settings: Settings) -> FastAPI:
    """The API serving ``settings.model`` with ``settings.backend``."""
    metrics = Metrics()
    state: dict[str, Any] = {"service": None, "error": None}

    def load() -> None:
        try:
            service = ModelService(settings)
        except Exception as err:  # noqa: BLE001 - reported by /readyz, one line
            log.error("model not loaded: %s", err)
            state["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
            return
        lineage = service.lineage
        metrics.model.info(
            {
                "name": settings.model.name,
                "version": str(lineage.get("git_commit") or "unknown"),
                "data_hash": str(lineage.get("data_hash") or "unknown"),
                "backend": service.backend.name,
            }
        )
        state["service"] = service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="load-model", daemon=True).start()
        yield

    app = FastAPI(
        title="vae_cats",
        summary="Generate, reconstruct and interpolate 64x64 cat faces with a VAE",
        version="1.0",
        lifespan=lifespan,
    )

    def service() -> ModelService:
        if state["service"] is None:
            raise _bad_request(503, state["error"] or "the model is still loading")
        return state["service"]

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line(list(exc.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: the model is loaded",
        responses={503: {"description": "still loading, or the model failed to load"}},
    )
    async def readyz() -> JSONResponse:
        if state["service"] is None:
            detail = state["error"] or "the model is still loading"
            return JSONResponse({"detail": detail}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/model", summary="Model card: config, lineage, metrics, drift, latent directions")
    def model() -> dict[str, Any]:
        return service().card()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/generate",
        summary="New cats from a seed",
        response_model=GenerateResponse,
        responses={200: PNG, 422: {"description": "a field out of range"}},
        description="PNG grid (8 per row) or JSON. Image i of seed s is sample i of "
        "`predict_model.py --n N --seed s --sampler X` (bit-equal with the torch backend). "
        "The seed used is in the `X-Seed` header and the JSON.",
    )
    def generate(request: GenerateRequest) -> Response:
        model = service()
        seed = request.seed if request.seed is not None else random.randint(0, MAX_SEED)
        sampler = request.sampler or model.default_sampler
        try:
            z = model.codes(request.n, seed, sampler)
        except SamplerError as err:
            raise _bad_request(422, f"sampler: {err}") from None
        images = model.decode(z)
        headers = {"X-Seed": str(seed), "X-Sampler": sampler}
        if request.format == "png":
            return Response(grid_png(images), media_type="image/png", headers=headers)
        body = {
            "seed": seed,
            "sampler": sampler,
            "images": [b64_png(image) for image in images],
            "latents": z.tolist(),
        }
        return JSONResponse(body, headers=headers)

    @app.post(
        "/decode",
        summary="Images of given latent codes",
        response_model=ImagesResponse,
        responses={200: PNG},
    )
    def decode(request: DecodeRequest) -> Response:
        model = service()
        for i, latent in enumerate(request.latents):
            check_latent(f"latents.{i}", latent, model.latent_dim)
        return _json_or_png(model.decode(torch.tensor(request.latents)), request.format)

    async def read_upload(model: ModelService, field: str, upload: Any) -> Any:
        if not isinstance(upload, StarletteUploadFile):
            raise _bad_request(422, f"{field}: expected an image file part")
        raw = await upload.read(settings.max_upload_bytes + 1)
        return await run_in_threadpool(ingest, model, field, raw)

    def ingest(model: ModelService, field: str, raw: bytes) -> Any:
        try:
            return model.ingest_upload(raw)
        except UploadTooLargeError as err:
            raise _bad_request(413, f"{field}: {err}") from None
        except BadImageError as err:
            raise _bad_request(400, f"{field}: {err}") from None

    async def read_form(request: Request, max_files: int) -> Any:
        # Starlette caps a text part at 1 MB by default: a base64 image may take the body limit.
        try:
            return await request.form(
                max_files=max_files, max_fields=8, max_part_size=settings.max_body_bytes
            )
        except MultiPartException as err:
            raise _bad_request(400, f"body: {err.message}") from None

    reconstruct_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "image_base64": {"type": "string"},
                        },
                    }
                }
            },
        }
    }

    @app.post(
        "/reconstruct",
        summary="Reconstruct an uploaded image, with SSIM, PSNR and a drift verdict",
        response_model=ReconstructResponse,
        responses={
            200: PNG,
            400: {"description": "not a usable image"},
            413: {"description": "over the size or pixel limit"},
        },
        description="Multipart: the image as the file part `file`, or as base64 text in the "
        "form field `image_base64` (same size limit once decoded). `format=png` returns the "
        "reconstruction alone, with `X-SSIM`, `X-PSNR` and `X-Drift-Outlier` headers.",
        openapi_extra=reconstruct_body,
    )
    async def reconstruct(
        request: Request, format: Annotated[Literal["json", "png"], Query()] = "json"
    ) -> Response:
        model = service()
        form = await read_form(request, max_files=1)
        file, image_base64 = form.get("file"), form.get("image_base64")
        if file is not None:
            image = await read_upload(model, "file", file)
        elif isinstance(image_base64, str) and image_base64:
            raw = decode_base64("image_base64", image_base64, settings.max_upload_bytes)
            image = await run_in_threadpool(ingest, model, "image_base64", raw)
        else:
            raise _bad_request(422, "file: give an image as the file part or as image_base64")
        result = await run_in_threadpool(model.reconstruct, image)
        if result.drift is not None:
            metrics.drift.labels(str(result.drift["is_outlier"]).lower()).inc()
        if format == "png":
            headers = {"X-SSIM": f"{result.ssim:.6f}", "X-PSNR": f"{result.psnr:.4f}"}
            if result.drift is not None:
                headers["X-Drift-Outlier"] = str(result.drift["is_outlier"]).lower()
            return Response(png_bytes(result.recon), media_type="image/png", headers=headers)
        return JSONResponse(
            {
                "original": b64_png(result.original),
                "reconstruction": b64_png(result.recon),
                "ssim": result.ssim,
                "psnr": result.psnr,
                "latent": result.mu.tolist(),
                "drift": result.drift,
            }
        )

    interpolate_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": InterpolateRequest.model_json_schema(),
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file_a", "file_b"],
                        "properties": {
                            "file_a": {"type": "string", "format": "binary"},
                            "file_b": {"type": "string", "format": "binary"},
                            "steps": {"type": "integer", "minimum": 2, "maximum": MAX_STEPS},
                            "format": {"type": "string", "enum": ["png", "json"]},
                        },
                    }
                },
            },
        }
    }

    @app.post(
        "/interpolate",
        summary="Decodings on the line between two seeds, two codes or two uploads",
        response_model=ImagesResponse,
        responses={200: PNG},
        openapi_extra=interpolate_body,
        description="JSON `{seed_a, seed_b, sampler?, steps, format}` or "
        "`{latent_a, latent_b, steps, format}`, or multipart `file_a`, `file_b` (+ `steps`, "
        "`format`). A seed's end is code 0 of `/generate {n: 1, seed}`.",
    )
    async def interpolate(request: Request) -> Response:
        model = service()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await read_form(request, max_files=2)
            parsed = parse(InterpolateRequest, form_fields(form, ("steps", "format")))
            a = await read_upload(model, "file_a", form.get("file_a"))
            b = await read_upload(model, "file_b", form.get("file_b"))
            ends = await run_in_threadpool(model.encode, torch.stack([a, b]))
        else:
            try:
                payload = await request.json()
            except ValueError:
                raise _bad_request(422, "body: malformed JSON") from None
            parsed = parse(InterpolateRequest, payload)
            ends = code_ends(model, parsed)
        images = await run_in_threadpool(model.interpolate, ends[0], ends[1], parsed.steps)
        return _json_or_png(images, parsed.format, nrow=parsed.steps)

    def code_ends(model: ModelService, request: InterpolateRequest) -> Any:
        if request.latent_a is not None and request.latent_b is not None:
            check_latent("latent_a", request.latent_a, model.latent_dim)
            check_latent("latent_b", request.latent_b, model.latent_dim)
            return torch.tensor([request.latent_a, request.latent_b])
        if request.seed_a is None or request.seed_b is None:
            raise _bad_request(422, "seed_a: give seed_a and seed_b, or latent_a and latent_b")
        sampler = request.sampler or model.default_sampler
        try:
            return torch.cat(
                [model.codes(1, request.seed_a, sampler), model.codes(1, request.seed_b, sampler)]
            )
        except SamplerError as err:
            raise _bad_request(422, f"sampler: {err}") from None

    @app.post(
        "/drift",
        summary="Batch drift: MMD two-sample test of uploads against the training faces",
        response_model=BatchDriftResponse,
        responses={409: {"description": "the model stores no drift statistics"}},
    )
    async def drift(
        files: Annotated[list[UploadFile], File(description="2 or more images")],
        alpha: Annotated[float, Form(gt=0, lt=1)] = 0.05,
    ) -> BatchDriftResponse:
        model = service()
        if model.drift is None:
            raise _bad_request(409, "this model stores no drift statistics (package it)")
        if not 2 <= len(files) <= MAX_DRIFT_FILES:
            raise _bad_request(422, f"files: give 2 to {MAX_DRIFT_FILES} images, got {len(files)}")
        images = [await read_upload(model, f"files.{i}", f) for i, f in enumerate(files)]
        result = await run_in_threadpool(model.batch_drift, torch.stack(images), alpha)
        return BatchDriftResponse(**result)

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    return app


def decode_base64(field: str, text: str, limit: int) -> bytes:
    """The bytes of a base64 field, refused (413) past ``limit`` before decoding."""
    if len(text) * 3 // 4 > limit + 3:
        raise _bad_request(413, f"{field}: image over the {limit}-byte limit")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_request(422, f"{field}: not valid base64") from None
    if len(raw) > limit:
        raise _bad_request(413, f"{field}: image of {len(raw)} bytes, over the {limit}-byte limit")
    return raw


def check_latent(field: str, latent: list[float], latent_dim: int) -> None:
    """Refuse (422) a code whose length is not the model's ``latent_dim``."""
    if len(latent) != latent_dim:
        raise _bad_request(422, f"{field}: has {len(latent)} values, the model needs {latent_dim}")


def form_fields(form: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The text fields ``names`` of a multipart form; whole numbers (``steps``) as ints.

    Raises:
        HTTPException: 422 naming a field that is a file or not a whole number.
    """
    fields: dict[str, Any] = {}
    for name in names:
        value = form.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _bad_request(422, f"{name}: expected a text field")
        if name == "steps":
            if not value.strip().lstrip("-").isdigit():
                raise _bad_request(422, f"steps: not a whole number: {value[:20]!r}")
            fields[name] = int(value)
        else:
            fields[name] = value
    return fields


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` as ``model``.

    Raises:
        HTTPException: 422 naming the first bad field.
    """
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as err:
        raise _bad_request(422, one_line(list(err.errors()))) from None
