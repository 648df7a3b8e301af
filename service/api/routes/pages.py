"""The web page at / and the API's Swagger UI at /docs, both served from local files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent.parent / "static"
SWAGGER_UI = Path(str(resources.files("fastapi_swagger") / "resources"))  # Swagger UI 5 files

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/docs")
def docs() -> Response:
    """Swagger UI for /openapi.json, from the fastapi-swagger package: works offline."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="latentgram API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )


def mount_static(app: FastAPI) -> None:
    """The page's scripts and styles, and Swagger UI's."""
    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
