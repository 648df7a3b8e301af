"""The /v1 endpoints. Heavy work runs in FastAPI's thread pool (plain `def` handlers, or
run_in_threadpool after an upload is read), so /healthz answers while samples are made."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from service.api.schemas import (
    DecodeRequest,
    DecodeResponse,
    EncodedImage,
    EncodeResponse,
    Encoding,
    Hit,
    NearestRequest,
    NearestResponse,
    Problem,
    Sample,
    SampleRequest,
    SampleResponse,
)
from service.api.settings import Settings
from service.bits import packed_from_text, packed_to_text
from service.engine import RunEngine
from service.errors import InvalidInputError
from service.image_input import png_bytes, read_image
from service.nearest import psnr_from_squared_error
from service.report import REPORT_JSON, REPORT_PLOT
from service.sampler import SampleConfig
from service.windows import check_gamma

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "API key missing or wrong"},
    404: {"model": Problem, "description": "not found"},
    409: {"model": Problem, "description": "the run lacks what this needs"},
    413: {"model": Problem, "description": "request body too large"},
    422: {"model": Problem, "description": "a field is out of range or malformed"},
    503: {"model": Problem, "description": "the run is not ready"},
}

router = APIRouter(prefix="/v1", responses=ERRORS)


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def engine_of(request: Request) -> RunEngine:
    return request.app.state.holder.get()


EngineDep = Annotated[RunEngine, Depends(engine_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]


def check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidInputError(f"{field} must be in {low}..{high}, got {value}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hits_of(found: list[dict[str, Any]]) -> list[Hit]:
    return [Hit(**hit) for hit in found]


@router.post("/sample", response_model=SampleResponse, tags=["generate"])
def sample(body: SampleRequest, engine: EngineDep, settings: SettingsDep, request: Request) -> Any:
    """Draw samples in any mode, with per-sample provenance and optionally nearest neighbours."""
    check_range("n", body.n, 1, settings.max_n)
    check_range("budget", body.budget, 1, settings.max_budget)
    check_range("nearest", body.nearest, 0, settings.max_k)
    check_gamma(body.gamma)
    started = time.perf_counter()
    config = SampleConfig(
        n=body.n, seed=body.seed, temperature=body.temperature, budget=body.budget
    )
    result = engine.sample(
        gamma=body.gamma,
        mode=body.mode,
        config=config,
        positional=body.positional,
        complete_with_hybrid=body.complete,
    )
    batch = result.batch
    packed = engine.pack_tokens(batch.tokens)
    finished = np.flatnonzero(batch.ok)
    nearest: dict[int, list[Hit]] = {}
    if body.nearest and len(finished):
        found = engine.nearest(images=result.images[finished], k=body.nearest, by="pixels")
        nearest = {int(i): hits_of(h) for i, h in zip(finished, found, strict=True)}
    shares = batch.neural_share
    samples = [
        Sample(
            index=i,
            ok=bool(batch.ok[i]),
            failure=str(batch.failure[i]) or None,
            bits=packed_to_text(packed[i], body.encoding) if batch.ok[i] else None,
            image_png=b64(png_bytes(result.images[i])) if body.images and batch.ok[i] else None,
            backtracks=int(batch.backtracks[i]),
            steps=int(batch.steps[i]),
            neural_share=float(shares[i]),
            answered_by=batch.answered_by[i].tolist(),
            examples=batch.examples[i].tolist(),
            nearest=nearest.get(i),
        )
        for i in range(len(batch))
    ]
    metrics = request.app.state.metrics
    metrics.samples.labels(body.mode, "yes").inc(len(finished))
    metrics.samples.labels(body.mode, "no").inc(len(batch) - len(finished))
    return SampleResponse(
        gamma=body.gamma,
        mode=body.mode,
        seed=body.seed,
        temperature=body.temperature,
        budget=body.budget,
        positional=body.positional,
        latent_shape=list(engine.latent_shape),
        encoding=body.encoding,
        finished=len(finished),
        seconds=round(time.perf_counter() - started, 6),
        samples=samples,
    )


@router.post("/encode", response_model=EncodeResponse, tags=["codec"])
async def encode(
    engine: EngineDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="Image files (PNG, JPEG, …).")],
    encoding: Annotated[Encoding, Form()] = "hex",
    reconstruction: Annotated[bool, Form(description="Also return the decoded PNG.")] = False,
) -> Any:
    """Images → binary latents (and, on request, their reconstructions)."""
    check_range("files", len(files), 1, settings.max_images)
    channels, size, _ = engine.image_shape
    images = []
    for number, upload in enumerate(files):
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise InvalidInputError(f"files[{number}] is over {settings.max_upload_bytes} bytes")
        images.append(
            read_image(
                data,
                channels=channels,
                size=size,
                max_pixels=settings.max_pixels,
                field=f"files[{number}]",
            )
        )

    def work() -> EncodeResponse:
        batch = np.stack(images)
        packed = engine.encode(batch)
        decoded = engine.decode(packed) if reconstruction else None
        items = []
        for i, upload in enumerate(files):
            item = EncodedImage(filename=upload.filename, bits=packed_to_text(packed[i], encoding))
            if decoded is not None:
                item.reconstruction_png = b64(png_bytes(decoded[i]))
                squared = np.sum((batch[i].astype(np.int64) - decoded[i]) ** 2)
                psnr = psnr_from_squared_error(squared, batch[i].size)
                item.psnr_reconstruction = round(float(psnr), 4)
            items.append(item)
        return EncodeResponse(
            latent_shape=list(engine.latent_shape), encoding=encoding, items=items
        )

    return await run_in_threadpool(work)


@router.post(
    "/decode",
    response_model=DecodeResponse,
    tags=["codec"],
    responses={200: {"content": {"image/png": {}}}},
)
def decode(body: DecodeRequest, engine: EngineDep, settings: SettingsDep) -> Any:
    """Binary latents → images: JSON with base64 PNGs, or one image/png with format=png."""
    check_range("bits", len(body.bits), 1, settings.max_images)
    if body.format == "png" and len(body.bits) != 1:
        raise InvalidInputError(f"format=png takes exactly one latent, got {len(body.bits)}")
    packed = np.stack(
        [packed_from_text(text, engine.latent_shape, body.encoding) for text in body.bits]
    )
    images = engine.decode(packed)
    if body.format == "png":
        return Response(png_bytes(images[0]), media_type="image/png")
    return DecodeResponse(images_png=[b64(png_bytes(image)) for image in images])


@router.post("/nearest", response_model=NearestResponse, tags=["memorization"])
def nearest(body: NearestRequest, engine: EngineDep, settings: SettingsDep) -> Any:
    """The k training images nearest to an image or a latent, by pixel PSNR or Hamming distance."""
    check_range("k", body.k, 1, min(settings.max_k, engine.train_images))
    if (body.image_png is None) == (body.bits is None):
        raise InvalidInputError("give exactly one of image_png and bits")
    if body.bits is not None:
        packed = packed_from_text(body.bits, engine.latent_shape, body.encoding)[None]
        images = engine.decode(packed)
    else:
        try:
            data = base64.b64decode(body.image_png or "", validate=True)
        except ValueError:
            raise InvalidInputError("image_png is not valid base64") from None
        channels, size, _ = engine.image_shape
        image = read_image(data, channels=channels, size=size, max_pixels=settings.max_pixels)
        images = image[None]
        packed = engine.encode(images)
    found = engine.nearest(images=images, packed=packed, k=body.k, by=body.by)
    return NearestResponse(by=body.by, bits=packed_to_text(packed[0]), hits=hits_of(found[0]))


@router.get(
    "/images/{image_id}",
    tags=["memorization"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the image as PNG"}},
)
def image(image_id: Annotated[int, Path(ge=0, le=2**62)], engine: EngineDep) -> Response:
    """A training (or test) image of the run as PNG; its label and split in headers."""
    pixels, label, split = engine.image(image_id)
    return Response(
        png_bytes(pixels),
        media_type="image/png",
        headers={"X-Label": str(label), "X-Split": split, "Cache-Control": "max-age=3600"},
    )


@router.get("/info", tags=["run"])
def info(engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    """The run: shapes, tables, which γ have a γ-ARVM, and the server's limits."""
    limits = settings.model_dump(exclude={"run", "api_key", "reload_seconds"})
    return {
        **engine.describe(),
        "modes": ["exact", "backoff", "hybrid", "neural"],
        "limits": limits,
        "report": (engine.paths.reports / REPORT_JSON).exists(),
    }


@router.get("/report", tags=["memorization"])
def report(engine: EngineDep) -> Any:
    """The latest memorization report (written by `latentgram report`)."""
    path = engine.paths.reports / REPORT_JSON
    if not path.exists():
        raise LookupError(f"no report yet: run `latentgram report --run {engine.paths.root}`")
    return FileResponse(path, media_type="application/json")


@router.get(
    "/report/memorization.png",
    tags=["memorization"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def report_plot(engine: EngineDep) -> Any:
    """Memorization and exact-copy rates against γ, as PNG."""
    path = engine.paths.reports / REPORT_PLOT
    if not path.exists():
        raise LookupError(f"no report yet: run `latentgram report --run {engine.paths.root}`")
    return FileResponse(path, media_type="image/png")
