"""The KTO Forge API: datasets and training jobs over HTTP (OpenAPI at /docs)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from ktoforge import __version__
from ktoforge.reaper import start_reaper
from ktoforge.settings import get_settings
from ktoforge_api.deps import get_celery, get_store
from ktoforge_api.routers import artifacts, datasets, events, health, internal, jobs


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    stop = start_reaper(get_store(), get_celery(), get_settings())
    yield
    stop.set()


def create_app() -> FastAPI:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO)
    # /docs and /redoc serve Swagger UI and ReDoc from the package, not a CDN: they work on an offline LAN.
    app = FastAPIOffline(title="KTO Forge", version=__version__, lifespan=lifespan,
                  description="KTO preference fine-tuning jobs on CUDA (TRL + Unsloth) and Apple silicon (MLX). "
                              "Send `Authorization: Bearer <KTOFORGE_API_KEY>` to every /v1 route.")
    if settings.cors_origins:  # closed unless origins are listed
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"])
    for module in (health, datasets, jobs, events, artifacts, internal):
        app.include_router(module.router)
    return app


app = create_app()
