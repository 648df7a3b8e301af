"""POST /v1/nearest: the training images nearest to an image or a latent."""

from __future__ import annotations

import base64
from typing import Any

from service.api.common import check_range, given_or_capped, hits_of, max_hits, v1_router
from service.api.deps import RunDep, SettingsDep
from service.api.schemas import NearestRequest, NearestResponse
from service.data.images import read_image
from service.errors import InvalidInputError
from service.latents.bits import packed_from_text, packed_to_text

router = v1_router()


@router.post("/nearest", response_model=NearestResponse, tags=["memorization"])
def nearest(body: NearestRequest, run: RunDep, settings: SettingsDep) -> Any:
    """The k training images nearest to an image or a latent, by pixel PSNR or Hamming distance."""
    limit = max_hits(settings.max_k, run)
    k = given_or_capped(body, "k", limit)
    check_range("k", k, 1, limit)
    if (body.image_png is None) == (body.bits is None):
        raise InvalidInputError("give exactly one of image_png and bits")
    if body.bits is not None:
        packed = packed_from_text(body.bits, run.latent_shape, body.encoding)[None]
        images = run.decode(packed)
    else:
        try:
            data = base64.b64decode(body.image_png or "", validate=True)
        except ValueError:
            raise InvalidInputError("image_png is not valid base64") from None
        channels, size, _ = run.image_shape
        image = read_image(
            data,
            channels=channels,
            size=size,
            max_pixels=settings.max_pixels,
            background=run.background,
            field="image_png",
        )
        images = image[None]
        packed = run.encode(images)
    found = run.nearest(images=images, packed=packed, k=k, by=body.by)
    return NearestResponse(by=body.by, bits=packed_to_text(packed[0]), hits=hits_of(found[0]))
