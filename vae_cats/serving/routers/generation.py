"""New cats from seeds, images of given latent codes, and interpolations between two seeds,
two codes or two uploads. Model calls run in sync routes or the thread pool, never on the
event loop."""

from __future__ import annotations

import random
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from vae_cats.generate import SamplerError
from vae_cats.serving.inputs import (
    PNG,
    bad_request,
    check_latent,
    form_fields,
    json_or_png,
    parse,
    read_form,
    read_upload,
)
from vae_cats.serving.schemas import (
    MAX_SEED,
    MAX_STEPS,
    DecodeRequest,
    GenerateRequest,
    GenerateResponse,
    ImagesResponse,
    InterpolateRequest,
)
from vae_cats.serving.service import ModelService, b64_png, grid_png
from vae_cats.serving.state import Service

router = APIRouter()


@router.post(
    "/generate",
    summary="New cats from a seed",
    response_model=GenerateResponse,
    responses={200: PNG, 422: {"description": "a field out of range"}},
    description="PNG grid (8 per row) or JSON. Image i of seed s is sample i of "
    "`predict_model.py --n N --seed s --sampler X` (bit-equal with the torch backend). "
    "The seed used is in the `X-Seed` header and the JSON.",
)
def generate(request: GenerateRequest, model: Service) -> Response:
    seed = request.seed if request.seed is not None else random.randint(0, MAX_SEED)
    sampler = request.sampler or model.default_sampler
    try:
        z = model.codes(request.n, seed, sampler)
    except SamplerError as err:
        raise bad_request(422, f"sampler: {err}") from None
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


@router.post(
    "/decode",
    summary="Images of given latent codes",
    response_model=ImagesResponse,
    responses={200: PNG},
)
def decode(request: DecodeRequest, model: Service) -> Response:
    for i, latent in enumerate(request.latents):
        check_latent(f"latents.{i}", latent, model.latent_dim)
    return json_or_png(model.decode(torch.tensor(request.latents)), request.format)


INTERPOLATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": InterpolateRequest.model_json_schema()},
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


@router.post(
    "/interpolate",
    summary="Decodings on the line between two seeds, two codes or two uploads",
    response_model=ImagesResponse,
    responses={200: PNG},
    openapi_extra=INTERPOLATE_BODY,
    description="JSON `{seed_a, seed_b, sampler?, steps, format}` or "
    "`{latent_a, latent_b, steps, format}`, or multipart `file_a`, `file_b` (+ `steps`, "
    "`format`). A seed's end is code 0 of `/generate {n: 1, seed}`.",
)
async def interpolate(request: Request, model: Service) -> Response:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await read_form(request, 2, model.settings.max_body_bytes)
        parsed = parse(InterpolateRequest, form_fields(form, ("steps", "format")))
        a = await read_upload(model, "file_a", form.get("file_a"))
        b = await read_upload(model, "file_b", form.get("file_b"))
        ends = await run_in_threadpool(model.encode, torch.stack([a, b]))
    else:
        try:
            payload = await request.json()
        except ValueError:
            raise bad_request(422, "body: malformed JSON") from None
        parsed = parse(InterpolateRequest, payload)
        ends = await run_in_threadpool(code_ends, model, parsed)
    images = await run_in_threadpool(model.interpolate, ends[0], ends[1], parsed.steps)
    return json_or_png(images, parsed.format, nrow=parsed.steps)


def code_ends(model: ModelService, request: InterpolateRequest) -> Any:
    """The two end codes (2, latent_dim) of an interpolation given as codes or seeds."""
    if request.latent_a is not None and request.latent_b is not None:
        check_latent("latent_a", request.latent_a, model.latent_dim)
        check_latent("latent_b", request.latent_b, model.latent_dim)
        return torch.tensor([request.latent_a, request.latent_b])
    if request.seed_a is None or request.seed_b is None:
        raise bad_request(422, "seed_a: give seed_a and seed_b, or latent_a and latent_b")
    sampler = request.sampler or model.default_sampler
    try:
        return torch.cat(
            [model.codes(1, request.seed_a, sampler), model.codes(1, request.seed_b, sampler)]
        )
    except SamplerError as err:
        raise bad_request(422, f"sampler: {err}") from None
