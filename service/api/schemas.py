"""Request and response bodies of /v1. Upper limits live in Settings and are checked per request;
the bounds here are the ones no setting can move."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from service.evaluation.nearest import NearestBy
from service.latents.bits import TextEncoding as Encoding
from service.ngram.samples import MAX_SEED, MAX_TEMPERATURE, MIN_TEMPERATURE, Mode

# The largest integer every JSON reader keeps exactly (a JavaScript number, a schema validator's
# double): a bound above it cannot be checked by a client.
MAX_JSON_INT = 2**53 - 1


def _integral(value: Any) -> Any:
    """JSON has one number type: 4.0 is the integer 4 (as JSON Schema says), 4.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema means it: 5 or 5.0; never "5", true or 5.5 (the models are strict)
Integer = Annotated[int, BeforeValidator(_integral)]


class Strict(BaseModel):
    # A misspelt field is an error, not a default; "5" is not 5 and 0 is not false.
    model_config = ConfigDict(extra="forbid", strict=True)


class SampleRequest(Strict):
    n: Integer = Field(16, ge=1, description="Samples to draw (≤ max_n; left out: 16 or max_n).")
    gamma: Integer = Field(
        5,
        ge=3,
        le=99,
        description="Window size γ of a built table (left out: 5, or the least built).",
    )
    mode: Mode = Field("exact", description="exact, backoff, hybrid or neural.")
    seed: Integer = Field(0, ge=0, le=MAX_SEED, description="Same seed, same samples.")
    temperature: float = Field(
        1.0,
        ge=MIN_TEMPERATURE,
        le=MAX_TEMPERATURE,
        allow_inf_nan=False,
        description="Weights are count^(1/T).",
    )
    budget: Integer = Field(1000, ge=1, description="Search steps per exact sample (≤ max_budget).")
    positional: bool = Field(False, description="Use the positional tables.")
    complete: bool = Field(False, description="Finish failed exact samples in hybrid mode.")
    nearest: Integer = Field(0, ge=0, description="Nearest training images per sample (0: none).")
    images: bool = Field(True, description="Include each sample's decoded image as PNG.")
    encoding: Encoding = Field("hex", description="How latents are written.")


class Hit(BaseModel):
    id: int = Field(description="Training image id (GET /v1/images/{id}).")
    label: int
    label_name: str | None
    psnr: float = Field(description="dB between the query and the training image.")
    psnr_reconstruction: float = Field(
        description="dB between the query and the BL-AE reconstruction of the training image."
    )
    hamming: int = Field(description="Bits that differ between the two latents.")
    memorized: bool = Field(description="psnr > 30 dB, the paper's rule.")
    memorized_reconstruction: bool = Field(
        description="psnr_reconstruction > 30 dB: the paper's rule against the reconstruction, "
        "which a decoded copy of a training latent passes whatever the BL-AE's own PSNR."
    )
    exact_copy: bool = Field(description="The latents are equal.")


class Sample(BaseModel):
    index: int
    ok: bool
    failure: str | None = Field(
        description="Why the sample did not finish; null when ok. 'budget': the exact search used "
        "its whole budget of steps (a larger budget may finish it); 'exhausted': no sample "
        "exists, every candidate was tried; 'deadline': the request's time ran out before the "
        "search reached this sample; 'unknown context': backoff met a context no table "
        "knows and no γ-ARVM was trained."
    )
    bits: str | None = Field(description="The latent, packed; null when not ok.")
    image_png: str | None = Field(description="Base64 PNG of the decoded sample.")
    backtracks: int = Field(description="Times the exact search went back.")
    jumps: int = Field(description="Those backtracks that skipped positions (backjumping).")
    steps: int
    neural_share: float = Field(description="Share of positions the γ-ARVM filled.")
    answered_by: list[list[int]] = Field(
        description="Per position: γ of the table that chose the token, 0 neural, −1 unfilled."
    )
    examples: list[list[int]] = Field(
        description="Per position: a training image id holding that window, −1 if none."
    )
    nearest: list[Hit] | None = None


class SampleResponse(BaseModel):
    gamma: int
    mode: Mode
    seed: int
    temperature: float
    budget: int
    positional: bool
    latent_shape: list[int]
    encoding: Encoding
    finished: int
    seconds: float
    samples: list[Sample]


class EncodedImage(BaseModel):
    filename: str | None
    bits: str
    reconstruction_png: str | None = None
    psnr_reconstruction: float | None = None


class EncodeResponse(BaseModel):
    latent_shape: list[int]
    encoding: Encoding
    items: list[EncodedImage]


class DecodeRequest(Strict):
    bits: list[str] = Field(min_length=1, description="Packed latents (at most max_images).")
    encoding: Encoding = "hex"
    format: Literal["json", "png"] = Field(
        "json", description="json: base64 PNGs; png: one image/png (one latent only)."
    )


class DecodeResponse(BaseModel):
    images_png: list[str]


class NearestRequest(Strict):
    """Exactly one of image_png and bits."""

    image_png: str | None = Field(None, description="Base64 image file (PNG, JPEG, …).")
    bits: str | None = Field(None, description="A packed latent, instead of an image.")
    encoding: Encoding = "hex"
    k: Integer = Field(5, ge=1, description="Hits to return (at most max_k).")
    by: NearestBy = Field("pixels", description="Rank by pixel PSNR or by latent Hamming distance.")


class NearestResponse(BaseModel):
    by: NearestBy
    bits: str = Field(description="The query's latent (hex).")
    hits: list[Hit]


class Problem(BaseModel):
    detail: str
