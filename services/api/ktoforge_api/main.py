"""The KTO Forge API: datasets and training jobs over HTTP (OpenAPI at /docs)."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from ktoforge import __version__
from ktoforge.jobs import JobStore
from ktoforge.secret_guard import check_api
from ktoforge.settings import get_settings
from ktoforge_api.deps import close_reader, get_celery, get_store
from ktoforge_api.middleware import BodyLimit, SecurityHeaders
from ktoforge_api.reaper import start_reaper
from ktoforge_api.routers import artifacts, datasets, evaluations, events, health, internal, jobs, ui
from ktoforge_api.routers import presets, workers


def _index_old_records(store: JobStore, stop: threading.Event) -> None:
    """Records stored by a version without per-status indexes get them, once Redis answers (the API starts
    without waiting for Redis, as before)."""
    while not stop.is_set():
        try:
            store.ensure_indexes()
            return
        except Exception:
            logging.getLogger(__name__).warning("job indexes not built yet; retrying", exc_info=True)
            stop.wait(5)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    stop = start_reaper(get_store(), get_celery(), get_settings())
    threading.Thread(target=_index_old_records, args=(get_store(), stop), name="ktoforge-index", daemon=True).start()
    # The ~100k objects of a started app (modules, routes, pydantic schemas) live as long as the process: moved
    # out of the collector's reach, a full collection no longer walks them. Each walked them for 30-200 ms with
    # every request waiting: the p99 of GET /v1/jobs/{id} under load. bench/profile_api.py times every collection
    # (bench/profiles/api_after.txt: the longest 2.8 ms, frozen).
    gc.freeze()
    yield
    stop.set()
    await close_reader()


def create_app() -> FastAPI:
    settings = get_settings()
    check_api(settings)  # exits on key == worker token, or beyond loopback on a placeholder/development secret
    logging.basicConfig(level=logging.INFO)
    # /docs and /redoc serve Swagger UI and ReDoc from the package, not a CDN: they work on an offline LAN.
    app = FastAPIOffline(title="KTO Forge", version=__version__, lifespan=lifespan,
                  description="KTO preference fine-tuning jobs on CUDA (TRL + Unsloth) and Apple silicon (MLX). "
                              "Send `Authorization: Bearer <KTOFORGE_API_KEY>` to every /v1 route.")
    if settings.cors_origins:  # closed unless origins are listed
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"])
    app.add_middleware(BodyLimit, limit=settings.max_json_body_kb * 1024, setting="KTOFORGE_MAX_JSON_BODY_KB",
                       exempt=("/v1/datasets", "/v1/internal/"))  # uploads: streamed under limits of their own
    app.add_middleware(SecurityHeaders)  # outermost: also on the 413s and on errors of the layers inside
    for module in (health, datasets, jobs, events, artifacts, evaluations, ui):
        app.include_router(module.router)
    for module in (presets, workers):  # issue 12: machine presets with their estimate, live workers' devices
        app.include_router(module.router)
    app.include_router(internal.router, include_in_schema=False)  # workers' routes: not part of the public API
    return app


app = create_app()
