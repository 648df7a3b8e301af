"""POST /v1/encode (images → bits) and POST /v1/decode (bits → images)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BeforeValidator

from service.api.common import b64, check_range, v1_router
from service.api.deps import RunDep, SettingsDep
from service.api.schemas import (
    DecodeRequest,
    DecodeResponse,
    EncodedImage,
    EncodeResponse,
)
from service.data.images import png_bytes, read_image
from service.errors import InvalidInputError
from service.evaluation.pixels import psnr_from_squared_error
from service.latents.bits import TextEncoding, packed_from_text, packed_to_text

router = v1_router()


def _form_bool(value: Any) -> Any:
    """A form's boolean as the schema spells it, true or false; not 0, "yes" or "on"."""
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false, got {value!r}")


@router.post("/encode", response_model=EncodeResponse, tags=["codec"])
async def encode(
    run: RunDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="Image files (PNG, JPEG, …).")],
    encoding: Annotated[TextEncoding, Form()] = "hex",
    reconstruction: Annotated[
        bool, Form(description="Also return the decoded PNG."), BeforeValidator(_form_bool)
    ] = False,
) -> Any:
    """Images → binary latents (and, on request, their reconstructions)."""
    check_range("files", len(files), 1, settings.max_images)
    channels, size, _ = run.image_shape
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
                background=run.background,
                field=f"files[{number}]",
            )
        )

    def work() -> EncodeResponse:
        batch = np.stack(images)
        packed = run.encode(batch)
        decoded = run.decode(packed) if reconstruction else None
        items = []
        for i, upload in enumerate(files):
            item = EncodedImage(filename=upload.filename, bits=packed_to_text(packed[i], encoding))
            if decoded is not None:
                item.reconstruction_png = b64(png_bytes(decoded[i]))
                squared = np.sum((batch[i].astype(np.int64) - decoded[i]) ** 2)
                psnr = psnr_from_squared_error(squared, batch[i].size)
                item.psnr_reconstruction = round(float(psnr), 4)
            items.append(item)
        return EncodeResponse(latent_shape=list(run.latent_shape), encoding=encoding, items=items)

    return await run_in_threadpool(work)


@router.post(
    "/decode",
    response_model=DecodeResponse,
    tags=["codec"],
    responses={200: {"content": {"image/png": {}}}},
)
def decode(body: DecodeRequest, run: RunDep, settings: SettingsDep) -> Any:
    """Binary latents → images: JSON with base64 PNGs, or one image/png with format=png."""
    check_range("bits", len(body.bits), 1, settings.max_images)
    if body.format == "png" and len(body.bits) != 1:
        raise InvalidInputError(f"format=png takes exactly one latent, got {len(body.bits)}")
    packed = np.stack(
        [packed_from_text(text, run.latent_shape, body.encoding) for text in body.bits]
    )
    images = run.decode(packed)
    if body.format == "png":
        return Response(png_bytes(images[0]), media_type="image/png")
    return DecodeResponse(images_png=[b64(png_bytes(image)) for image in images])
