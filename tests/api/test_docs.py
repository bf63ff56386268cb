"""The API's documentation pages work with no internet: their assets come from the API, not a CDN.

The browser test renders /docs in headless Chromium (CI installs it; this machine has no route to a CDN, so
a page that needed one would stay empty) and reads the operations Swagger UI drew from /openapi.json.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import LiveApi


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_every_asset_from_the_api(anon: TestClient, page: str):
    html = anon.get(page)
    assert html.status_code == 200 and "KTO Forge" in html.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets and all(a.startswith("/") for a in assets), assets  # same origin only
    for asset in assets:
        r = anon.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and not os.environ.get("CI"):
        pytest.skip("no Chromium on this machine (CI installs it: .ci/run)")
    assert found, "CI must have Chromium: .ci/run installs it"
    return found


def test_swagger_ui_renders_the_api_offline_in_a_browser(live_api: LiveApi, tmp_path):
    browser = chromium()
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                          "--dump-dom", f"{live_api.url}/docs"],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'class="swagger-ui' in dom, dom[:2000]
    for operation in ("/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/events", "/healthz"):
        assert f'data-path="{operation}"' in dom, operation
