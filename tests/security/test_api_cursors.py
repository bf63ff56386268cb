"""Finding 8 (second half): an event cursor Redis rejects (`after=99999999999999999999999-0`) was a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

BAD = ["99999999999999999999999-0", "0-99999999999999999999999", "18446744073709551616-0", "abc", "1-", "-1-0",
       "1-2-3", "", "1e5-0"]


@pytest.mark.parametrize("cursor", BAD)
def test_a_bad_event_cursor_is_a_422(client: TestClient, dataset_id: str, cursor: str):
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    r = client.get(f"/v1/jobs/{job}/events", params={"after": cursor})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", "after"]
    sse = client.get(f"/v1/jobs/{job}/events", headers={"Accept": "text/event-stream", "Last-Event-ID": cursor})
    assert sse.status_code == 422, sse.text


def test_the_largest_cursor_is_an_empty_page(client: TestClient, dataset_id: str):
    """The largest id Redis allows is a valid cursor: nothing comes after it (an exclusive range Redis refuses)."""
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    top = f"{2**64 - 1}-{2**64 - 1}"
    r = client.get(f"/v1/jobs/{job}/events", params={"after": top})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [], "next_after": top}
