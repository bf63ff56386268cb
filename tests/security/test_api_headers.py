"""Finding 9: the HTML pages sent no CSP, X-Frame-Options or nosniff; internal routes were in the public
OpenAPI schema; anonymous /readyz named the workers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

HTML_HEADERS = {"content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_html_pages_send_security_headers(anon: TestClient, page: str):
    r = anon.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert HTML_HEADERS <= set(r.headers), r.headers
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "unsafe-eval" not in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]  # inline scripts go by hash


def test_every_response_says_nosniff(client: TestClient, anon: TestClient):
    for r in (anon.get("/healthz"), anon.get("/openapi.json"), anon.get("/v1/jobs"), client.get("/v1/jobs"),
              anon.get("/static-offline-docs/swagger-ui.css"), client.get("/nowhere")):
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.headers)


def test_internal_routes_are_not_in_the_public_schema(anon: TestClient, worker: TestClient):
    paths = anon.get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/v1/internal")], sorted(paths)
    assert worker.get(f"/v1/internal/jobs/{'0' * 32}/checkpoint").status_code == 404  # still routed


def test_anonymous_readyz_says_only_ready_or_not(anon: TestClient, client: TestClient):
    r = anon.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True}
    assert set(client.get("/readyz").json()["queues"]) == {"cuda", "mlx"}  # a key holder sees the queues
