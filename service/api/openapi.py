"""/openapi.json as this server judges requests.

FastAPI derives a static schema from the request models. What the server accepts also depends on
its settings (the largest n, budget, k, batch) and on the loaded run (how many bytes a latent
has, which γ have tables), so each request for the document narrows the static schema to them.
A client or a fuzzer that generates from it then sends what the server accepts, and the server
refuses what it does not describe: the bits patterns come from the function that checks them.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.common import default_gamma, max_hits
from service.api.handlers import PROTECTED
from service.api.settings import Settings
from service.api.state import RunHolder
from service.latents.bits import TextEncoding, packed_size, text_pattern
from service.run.loaded import LoadedRun

Schema = dict[str, Any]

# Formats of our own: an image file Pillow reads (PNG, JPEG, …) as base64 text in JSON, and as
# bytes in a multipart upload. A client that generates requests must be taught to make one
# (tests/api/image_strategies.py does it for schemathesis).
IMAGE_FORMAT = "base64-image"
IMAGE_FILE_FORMAT = "image-file"  # the same file's bytes, as a multipart upload

ENCODINGS: tuple[TextEncoding, ...] = ("hex", "base64")
FORMATS = ("json", "png")


def install_openapi(app: FastAPI, settings: Settings, holder: RunHolder) -> None:
    """Serve the narrowed document at /openapi.json (and so in /docs)."""
    static: Schema = {}

    def openapi() -> Schema:
        if not static:
            static.update(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return narrowed(static, settings, holder.loaded)

    app.openapi = openapi  # type: ignore[method-assign]


def narrowed(static: Schema, settings: Settings, run: LoadedRun | None) -> Schema:
    """A copy of `static` with the settings' limits, the run's latent and tables, and the key."""
    doc = copy.deepcopy(static)
    schemas = doc["components"]["schemas"]
    sample = schemas["SampleRequest"]["properties"]
    _cap(sample["n"], settings.max_n)
    _cap(sample["budget"], settings.max_budget)
    _cap(sample["nearest"], settings.max_k)
    _cap(schemas["NearestRequest"]["properties"]["k"], max_hits(settings.max_k, run))
    schemas["DecodeRequest"]["properties"]["bits"]["maxItems"] = settings.max_images
    _narrow_uploads(doc, settings)
    if run is not None:
        if run.gammas:
            sample["gamma"]["enum"] = run.gammas
            sample["gamma"]["default"] = default_gamma(run.gammas)
        nbytes = packed_size(run.latent_shape)
        schemas["NearestRequest"] = nearest_variants(schemas["NearestRequest"], nbytes)
        schemas["DecodeRequest"] = decode_variants(schemas["DecodeRequest"], nbytes, settings)
    if settings.api_key:
        _declare_key(doc)
    return doc


def _cap(prop: Schema, limit: int) -> None:
    """The server's limit as the maximum, and the default capped at it (given_or_capped)."""
    prop["maximum"] = limit
    prop["default"] = min(prop["default"], limit)


def _narrow_uploads(doc: Schema, settings: Settings) -> None:
    """/v1/encode: one to max_images files, each an image file."""
    media = doc["paths"]["/v1/encode"]["post"]["requestBody"]["content"]["multipart/form-data"]
    name = media["schema"]["$ref"].rsplit("/", 1)[1]
    files = doc["components"]["schemas"][name]["properties"]["files"]
    files["minItems"], files["maxItems"] = 1, settings.max_images
    files["items"]["format"] = IMAGE_FILE_FORMAT


def bits_schema(nbytes: int, encoding: TextEncoding) -> Schema:
    return {
        "type": "string",
        "pattern": text_pattern(nbytes, encoding),
        "description": f"A packed latent of {nbytes} bytes in {encoding}.",
    }


def _variant(static: Schema, title: str, required: list[str], **properties: Schema) -> Schema:
    """`static`'s object schema with some properties replaced and more of them required."""
    merged = {**static["properties"], **properties}
    return {
        "type": "object",
        "title": title,
        "properties": merged,
        "required": sorted(set(static.get("required", [])) | set(required)),
        "additionalProperties": False,
    }


def _encoding(encoding: TextEncoding) -> tuple[Schema, list[str]]:
    """The encoding property of a variant, and whether it must be given (hex is the default)."""
    return {"const": encoding}, [] if encoding == "hex" else ["encoding"]


def nearest_variants(static: Schema, nbytes: int) -> Schema:
    """Exactly one of an image and a latent; the latent's pattern follows its encoding."""
    image = _variant(
        static,
        "NearestByImage",
        ["image_png"],
        image_png={
            "type": "string",
            "format": IMAGE_FORMAT,
            "description": "Base64 of an image file (PNG, JPEG, …).",
        },
        bits={"type": "null"},
    )
    by_bits = []
    for encoding in ENCODINGS:
        schema, required = _encoding(encoding)
        by_bits.append(
            _variant(
                static,
                f"NearestByBits{encoding.capitalize()}",
                ["bits", *required],
                bits=bits_schema(nbytes, encoding),
                encoding=schema,
                image_png={"type": "null"},
            )
        )
    return _one_of(static, [image, *by_bits])


def decode_variants(static: Schema, nbytes: int, settings: Settings) -> Schema:
    """Latents in one encoding; format=png takes exactly one of them."""
    variants = []
    for encoding in ENCODINGS:
        schema, required = _encoding(encoding)
        for answer in FORMATS:
            bits: Schema = {
                "type": "array",
                "items": bits_schema(nbytes, encoding),
                "minItems": 1,
                "maxItems": 1 if answer == "png" else settings.max_images,
            }
            variants.append(
                _variant(
                    static,
                    f"Decode{encoding.capitalize()}{answer.capitalize()}",
                    [*required, *(["format"] if answer == "png" else [])],
                    bits=bits,
                    encoding=schema,
                    format={"const": answer},
                )
            )
    return _one_of(static, variants)


def _one_of(static: Schema, variants: list[Schema]) -> Schema:
    one_of: Schema = {key: static[key] for key in ("title", "description") if key in static}
    one_of["oneOf"] = variants
    return one_of


def _declare_key(doc: Schema) -> None:
    """The API key, as the two ways the server takes it, on every protected operation."""
    doc["components"]["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer"},
    }
    for path, operations in doc["paths"].items():
        if path.startswith(PROTECTED):
            for operation in operations.values():
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
