"""One router per resource: sample, codec (encode, decode), nearest, images, info, report, health
and the pages (/ and /docs)."""

from service.api.routes import codec, health, images, info, nearest, pages, report, sample

ROUTERS = (
    sample.router,
    codec.router,
    nearest.router,
    images.router,
    info.router,
    report.router,
    health.router,
    pages.router,
)
