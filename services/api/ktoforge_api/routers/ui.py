"""The jobs page at /ui: static HTML, CSS and JS shipped in the package (no CDN: the LAN may be offline).

The page itself holds no data and needs no key; everything it shows comes from the /v1 routes, which it
calls with the key the user typed (kept in the tab's sessionStorage, sent as an Authorization header,
never in a URL). The page has no inline script: the API's page CSP (middleware.SecurityHeaders) then allows
only this origin's scripts and connections.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
ASSETS = {"ui.js": "text/javascript", "ui.css": "text/css"}
HEADERS = {"Cache-Control": "no-cache"}  # a new release's page and script are picked up at once

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get("/ui")
def index_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=status.HTTP_308_PERMANENT_REDIRECT)


@router.get("/ui/")
def index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/ui/assets/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no UI asset {name!r}")
    return FileResponse(UI_DIR / name, media_type=ASSETS[name], headers=HEADERS)
