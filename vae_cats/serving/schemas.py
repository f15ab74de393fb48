"""Request and response bodies of the HTTP API (pydantic) and the limits they enforce."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

MAX_N = 256
MAX_STEPS = 64
# /drift decodes and encodes its uploads in chunks (Settings.chunk_images): 512 faces fit the
# body limit (a 64x64 face is 2-4 KB) and keep the MMD test's kernel small (812 x 812).
MAX_DRIFT_FILES = 512
MAX_SEED = 2**32 - 1  # scikit-learn's mixture takes seeds below 2**32
MAX_LATENT = 1000.0

Sampler = Literal["normal", "gmm", "pca_gmm", "flow"]
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
    n: int = Field(description="distinct images tested")
    duplicates_removed: int = Field(description="repeated images removed before the test")
    mmd: float
    p_value: float
    is_drift: bool
    alpha: float
