"""Uploads: the reconstruction of one image with its drift verdict, and the batch drift test
of many."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vae_cats.serving.inputs import (
    PNG,
    bad_request,
    decode_base64,
    ingest,
    read_form,
    read_upload,
)
from vae_cats.serving.schemas import MAX_DRIFT_FILES, BatchDriftResponse, ReconstructResponse
from vae_cats.serving.service import TooFewImagesError, b64_png, png_bytes
from vae_cats.serving.state import Service, serving_state

router = APIRouter()

RECONSTRUCT_BODY = {
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


@router.post(
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
    openapi_extra=RECONSTRUCT_BODY,
)
async def reconstruct(
    request: Request,
    model: Service,
    format: Annotated[Literal["json", "png"], Query()] = "json",
) -> Response:
    form = await read_form(request, 1, model.settings.max_body_bytes)
    file, image_base64 = form.get("file"), form.get("image_base64")
    if file is not None:
        image = await read_upload(model, "file", file)
    elif isinstance(image_base64, str):
        raw = decode_base64("image_base64", image_base64, model.settings.max_upload_bytes)
        image = await run_in_threadpool(ingest, model, "image_base64", raw)
    else:
        raise bad_request(422, "file: give an image as the file part or as image_base64")
    result = await run_in_threadpool(model.reconstruct, image)
    if result.drift is not None:
        outlier = str(result.drift["is_outlier"]).lower()
        serving_state(request).metrics.drift.labels(outlier).inc()
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


@router.post(
    "/drift",
    summary="Batch drift: MMD two-sample test of uploads against the training faces",
    response_model=BatchDriftResponse,
    responses={
        409: {"description": "the model stores no drift statistics"},
        422: {"description": "fewer than 2 distinct images, or more than the maximum"},
    },
    description=f"2 to {MAX_DRIFT_FILES} images as multipart `files`. Repeated images "
    "(identical pixels once ingested) are removed before the test and counted in "
    "`duplicates_removed`; `n` is the number of distinct images tested.",
)
async def drift(
    model: Service,
    files: Annotated[list[UploadFile], File(description=f"2 to {MAX_DRIFT_FILES} images")],
    alpha: Annotated[float, Form(gt=0, lt=1)] = 0.05,
) -> BatchDriftResponse:
    if model.drift is None:
        raise bad_request(409, "this model stores no drift statistics (package it)")
    if not 2 <= len(files) <= MAX_DRIFT_FILES:
        raise bad_request(422, f"files: give 2 to {MAX_DRIFT_FILES} images, got {len(files)}")
    images = [await read_upload(model, f"files.{i}", f) for i, f in enumerate(files)]
    try:
        result = await run_in_threadpool(model.batch_drift, torch.stack(images), alpha)
    except TooFewImagesError as err:
        raise bad_request(422, f"files: {err}") from None
    return BatchDriftResponse(**result)
