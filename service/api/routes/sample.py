"""POST /v1/sample: samples in any mode, with per-sample provenance. A plain `def` handler: it
runs in FastAPI's thread pool, so /healthz answers while samples are made."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import Request

from service.api.common import (
    b64,
    check_range,
    default_gamma,
    given_or_capped,
    hits_of,
    v1_router,
)
from service.api.deps import RunDep, SettingsDep
from service.api.metrics import Metrics
from service.api.schemas import Hit, Sample, SampleRequest, SampleResponse
from service.data.images import png_bytes
from service.latents.bits import packed_to_text
from service.ngram.samples import SampleConfig
from service.ngram.windows import check_gamma
from service.run.loaded import LoadedRun
from service.run.steps import GeneratedSamples

router = v1_router()


@router.post("/sample", response_model=SampleResponse, tags=["generate"])
def sample(body: SampleRequest, run: RunDep, settings: SettingsDep, request: Request) -> Any:
    """Draw samples in any mode, with per-sample provenance and optionally nearest neighbours."""
    n = given_or_capped(body, "n", settings.max_n)
    budget = given_or_capped(body, "budget", settings.max_budget)
    gamma = body.gamma if "gamma" in body.model_fields_set else default_gamma(run.gammas)
    check_range("n", n, 1, settings.max_n)
    check_range("budget", budget, 1, settings.max_budget)
    check_range("nearest", body.nearest, 0, settings.max_k)
    check_gamma(gamma)
    metrics: Metrics = request.app.state.metrics
    started = time.perf_counter()
    with metrics.in_progress.labels("sample").track_inprogress():
        config = SampleConfig(
            n=n,
            seed=body.seed,
            temperature=body.temperature,
            budget=budget,
            time_limit=settings.request_seconds,
        )
        result = run.sample(
            gamma=gamma,
            mode=body.mode,
            config=config,
            positional=body.positional,
            complete_with_hybrid=body.complete,
        )
        samples = _described(run, body, result)
    finished = int(result.batch.ok.sum())
    metrics.samples.labels(body.mode, "yes").inc(finished)
    metrics.samples.labels(body.mode, "no").inc(len(result.batch) - finished)
    return SampleResponse(
        gamma=gamma,
        mode=body.mode,
        seed=body.seed,
        temperature=body.temperature,
        budget=budget,
        positional=body.positional,
        latent_shape=list(run.latent_shape),
        encoding=body.encoding,
        finished=finished,
        seconds=round(time.perf_counter() - started, 6),
        samples=samples,
    )


def _described(run: LoadedRun, body: SampleRequest, result: GeneratedSamples) -> list[Sample]:
    """Each sample with its latent, image, provenance and (on request) nearest training images."""
    batch = result.batch
    packed = run.pack_tokens(batch.tokens)
    finished = np.flatnonzero(batch.ok)
    nearest: dict[int, list[Hit]] = {}
    if body.nearest and len(finished):
        # ranked by the samples' own latents, which are exact (their decodings are blurred, so
        # by pixels the image a sample copies may rank below others); encoding the images again
        # may not give those latents back
        found = run.nearest(
            images=result.images[finished], k=body.nearest, by="latent", packed=packed[finished]
        )
        nearest = {int(i): hits_of(h) for i, h in zip(finished, found, strict=True)}
    shares = batch.neural_share
    return [
        Sample(
            index=i,
            ok=bool(batch.ok[i]),
            failure=str(batch.failure[i]) or None,
            bits=packed_to_text(packed[i], body.encoding) if batch.ok[i] else None,
            image_png=b64(png_bytes(result.images[i])) if body.images and batch.ok[i] else None,
            backtracks=int(batch.backtracks[i]),
            jumps=int(batch.jumps[i]),
            steps=int(batch.steps[i]),
            neural_share=float(shares[i]),
            answered_by=batch.answered_by[i].tolist(),
            examples=batch.examples[i].tolist(),
            nearest=nearest.get(i),
        )
        for i in range(len(batch))
    ]
