"""GET /v1/images/{id}: an image of the run's data set, as PNG."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from fastapi.responses import Response

from service.api.common import v1_router
from service.api.deps import RunDep
from service.data.images import png_bytes

router = v1_router()


@router.get(
    "/images/{image_id}",
    tags=["memorization"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the image as PNG"}},
)
def image(image_id: Annotated[int, Path(ge=0, le=2**62)], run: RunDep) -> Response:
    """A training (or test) image of the run as PNG; its label and split in headers."""
    pixels, label, split = run.image(image_id)
    return Response(
        png_bytes(pixels),
        media_type="image/png",
        headers={"X-Label": str(label), "X-Split": split, "Cache-Control": "max-age=3600"},
    )
