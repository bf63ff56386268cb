"""The HTTP client the ``ktoforge`` verbs share: one place for the URL, the key, errors and the SSE stream.

The CLI talks to the API only (never to Redis), so it works the same against local mode, compose or a
server on another machine. The URL and key come from ``--url``/``--key`` or, through the one Settings
module, from ``KTOFORGE_API_URL``/``KTOFORGE_API_KEY`` (or .env).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SSE_READ_TIMEOUT_S = 60.0  # the API pings every 15 s: a minute of silence means the connection is gone
RECONNECT_GIVE_UP_S = 300.0  # how long a watcher keeps retrying an API that does not answer


class ApiError(RuntimeError):
    """A refusal from the API (status and its detail) or an API that cannot be reached (status 0)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}" if status else str(detail))
        self.status, self.detail = status, detail


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event as the API sends it: its stream id, type and JSON payload."""

    id: str | None
    type: str
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent | int]:
    """SSE frames from text lines (the WHATWG rules we need): events, and ``retry`` values as ints."""
    fields: dict[str, list[str]] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                payload = json.loads("\n".join(fields["data"]))
                yield SseEvent(fields.get("id", [None])[-1], fields.get("event", ["message"])[-1],
                               payload.get("data", payload))
            fields = {}
            continue
        if line.startswith(":"):  # a comment (keep-alive ping)
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "retry" and value.isdigit():
            yield int(value)
        else:
            fields.setdefault(name, []).append(value)


class Client:
    """Authenticated calls to one KTO Forge API; every non-2xx answer becomes an ApiError."""

    def __init__(self, url: str, key: str, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the API at {self.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail", body) if isinstance(body, dict) else body
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def upload_dataset(self, path: Path) -> dict[str, Any]:
        """POST the file; the report (with ``id``) on success, ApiError carrying the report's errors otherwise."""
        with path.open("rb") as fh:
            return self.json("POST", "/v1/datasets", files={"file": (path.name, fh, "application/jsonl")})

    def answers(self) -> bool:
        """Whether a KTO Forge API answers at this URL (its /healthz), used by `demo` before starting one."""
        try:
            return self.http.get("/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def download(self, job_id: str, folder: Path) -> list[Path]:
        """Every artifact of a job into ``folder`` (written to a temporary name, then renamed whole)."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for artifact in self.json("GET", f"/v1/jobs/{job_id}/artifacts"):
            target = folder / Path(artifact["name"]).name
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as fh, self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{target.name}") as r:
                if r.status_code >= 400:
                    raise ApiError(r.status_code, f"artifact {target.name}: {r.read().decode(errors='replace')}")
                for chunk in r.iter_bytes():
                    fh.write(chunk)
            partial.replace(target)
            written.append(target)
        return written

    def events(self, job_id: str, on_retry: Callable[[str], None] | None = None,
               last_id: str | None = None) -> Iterator[SseEvent]:
        """The job's events over SSE until its final state, reconnecting with Last-Event-ID when dropped.

        A stream can end without the final state (the API restarted and closed it cleanly) or break (a
        dropped connection): either way the next connection resumes after the last event seen, so no event
        is shown twice or missed. ``on_retry`` is told each time, so a live display can say so.
        """
        retry_s, down_since = 2.0, None
        while True:
            headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(10.0, read=SSE_READ_TIMEOUT_S)) as response:
                    if response.status_code >= 400:
                        raise ApiError(response.status_code, response.read().decode(errors="replace"))
                    down_since = None
                    for item in parse_sse(response.iter_lines()):
                        if isinstance(item, int):
                            retry_s = min(item / 1000, 5.0)
                            continue
                        last_id = item.id or last_id
                        yield item
                        if item.type == "state" and item.data.get("status") in FINAL:
                            return
                reason = "the stream ended before the job did"
            except (httpx.TransportError, ValueError) as exc:  # ValueError: a frame cut in half
                reason = f"connection lost ({type(exc).__name__})"
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > RECONNECT_GIVE_UP_S:
                raise ApiError(0, f"no answer from {self.url} for {RECONNECT_GIVE_UP_S:.0f} s; "
                                  f"the job goes on: `ktoforge job watch {job_id}`")
            if on_retry:
                on_retry(f"{reason}; reconnecting")
            time.sleep(retry_s)


FINAL = {"succeeded", "failed", "cancelled"}
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 2}
EXIT_INTERRUPTED = 130
EXIT_USAGE = 64  # sysexits.h EX_USAGE: a bad command line, told apart from every job outcome
