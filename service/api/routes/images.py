"""GET /v1/images/{id}: an image of the run's data set, as PNG."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from fastapi.responses import Response

from service.api.common import v1_router
from service.api.deps import RunDep
from service.api.schemas import MAX_JSON_INT
from service.data.images import png_bytes

router = v1_router()


@router.get(
    "/images/{image_id}",
    tags=["memorization"],
    response_class=Response,
    responses={
        200: {
            "content": {"image/png": {}},
            "description": "the image as PNG",
            "headers": {
                "X-Split": {
                    "description": "Which split the image is in: train or test.",
                    "schema": {"type": "string", "enum": ["train", "test"]},
                },
                "X-Label": {
                    "description": "Its class label (see /v1/info class_names).",
                    "schema": {"type": "string", "pattern": "^-?[0-9]+$"},
                },
            },
        }
    },
)
def image(image_id: Annotated[int, Path(ge=0, le=MAX_JSON_INT)], run: RunDep) -> Response:
    """An image of the run's data set as PNG, from the training or the test split (ids as in
    images.parquet); the split and label are in the X-Split and X-Label headers."""
    pixels, label, split = run.image(image_id)
    return Response(
        png_bytes(pixels),
        media_type="image/png",
        headers={"X-Label": str(label), "X-Split": split, "Cache-Control": "max-age=3600"},
    )
