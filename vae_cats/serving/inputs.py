"""Reading what clients send beyond plain JSON bodies: uploads (file parts and base64
fields), multipart forms, hand-parsed JSON, latent codes; and turning validation errors
into one-line ``detail`` messages. Every refusal is an ``HTTPException`` with a 4xx."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException
from torch import Tensor

from vae_cats.data.decode import BadImageError
from vae_cats.serving.service import ModelService, UploadTooLargeError, b64_png, grid_png

PNG = {"content": {"image/png": {}}, "description": "PNG image"}
# Error types of a body that is not a JSON object at all (a str or bytes where a dict was due).
_NOT_AN_OBJECT = {"model_attributes_type", "dict_type"}


def bad_request(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def one_line(errors: list[Any], content_type: str | None = None) -> str:
    """The first validation error as ``field: message``; a body that is not a JSON object
    because it was not sent as JSON names the content type it came with."""
    if not errors:
        return "invalid request"
    error = errors[0]
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "form")]
    if error.get("type") == "json_invalid":
        return f"body: malformed JSON ({error.get('ctx', {}).get('error', 'cannot parse')})"
    sent_as = (content_type or "").split(";")[0].strip().lower()
    is_json = sent_as == "application/json" or sent_as.endswith("+json")
    if not loc and error.get("type") in _NOT_AN_OBJECT and not is_json:
        return (
            f"body: send a JSON object with Content-Type: application/json "
            f"(this body came as {sent_as or 'no content type'})"
        )
    field = ".".join(loc) or "body"
    return f"{field}: {error.get('msg', 'invalid')}"


def json_or_png(images: Tensor, fmt: str, nrow: int = 8) -> Response:
    """Images (B, 3, S, S) in [0, 1] as a PNG grid (``nrow`` per row) or JSON base64 PNGs."""
    if fmt == "png":
        return Response(grid_png(images, nrow=nrow), media_type="image/png")
    return JSONResponse({"images": [b64_png(image) for image in images]})


def ingest(model: ModelService, field: str, raw: bytes, size: int | None = None) -> Tensor:
    """``model.ingest_upload`` with its refusals as 413 (too large) and 400 (not an image)."""
    try:
        return model.ingest_upload(raw, size)
    except UploadTooLargeError as err:
        raise bad_request(413, f"{field}: {err}") from None
    except BadImageError as err:
        raise bad_request(400, f"{field}: {err}") from None


async def read_upload(model: ModelService, field: str, upload: Any) -> Tensor:
    """The image of a multipart file part, uint8 (3, S, S), read no further than the limit."""
    if not isinstance(upload, StarletteUploadFile):
        raise bad_request(422, f"{field}: expected an image file part")
    raw = await upload.read(model.settings.max_upload_bytes + 1)
    return await run_in_threadpool(ingest, model, field, raw, upload.size)


async def read_form(request: Request, max_files: int, max_part_bytes: int) -> FormData:
    """The multipart form of ``request``; a malformed one is a 400."""
    # Starlette caps a text part at 1 MB by default: a base64 image may take the body limit.
    try:
        return await request.form(max_files=max_files, max_fields=8, max_part_size=max_part_bytes)
    except MultiPartException as err:
        raise bad_request(400, f"body: {err.message}") from None


def decode_base64(field: str, text: str, limit: int) -> bytes:
    """The bytes of a base64 field, refused (413) past ``limit`` before decoding."""
    if not text:
        raise bad_request(422, f"{field}: is empty: give the image as base64 text")
    if len(text) * 3 // 4 > limit + 3:
        raise bad_request(
            413,
            f"{field}: image of about {len(text) * 3 // 4} bytes is over the {limit}-byte limit",
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(422, f"{field}: not valid base64") from None
    if len(raw) > limit:
        raise bad_request(
            413, f"{field}: image of {len(raw)} bytes is over the {limit}-byte limit"
        )
    return raw


def check_latent(field: str, latent: list[float], latent_dim: int) -> None:
    """Refuse (422) a code whose length is not the model's ``latent_dim``."""
    if len(latent) != latent_dim:
        raise bad_request(422, f"{field}: has {len(latent)} values, the model needs {latent_dim}")


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
            raise bad_request(422, f"{name}: expected a text field")
        if name == "steps":
            if not value.strip().lstrip("-").isdigit():
                raise bad_request(422, f"steps: not a whole number: {value[:20]!r}")
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
        raise bad_request(422, one_line(list(err.errors()))) from None
