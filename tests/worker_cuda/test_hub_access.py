"""A gated hub model this worker has no access to fails the job before anything is downloaded (issue 9).

A local stand-in for the Hugging Face hub (``HF_ENDPOINT``) answers every request the way the hub answers
for a gated repo without access (403, ``X-Error-Code: GatedRepo``) and records what was asked: the worker
(a fresh process, the real lifecycle, API and Redis) asks about the repo, and never for a file of it
(``/resolve/``: model or tokenizer files; ``/revision/``: the listing a snapshot download starts with).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ktoforge.schemas import JobStatus

GATED = "ktoforge-tests/gated-model"


class GatedHub(BaseHTTPRequestHandler):
    requests: list[str] = []

    def _gated(self) -> None:
        GatedHub.requests.append(f"{self.command} {self.path}")
        body = b'{"error": "Access to model ktoforge-tests/gated-model is restricted."}'
        self.send_response(403)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model ktoforge-tests/gated-model is restricted.")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = _gated

    def log_message(self, *args: object) -> None:
        pass


def test_a_gated_model_without_access_fails_before_any_download(new_job, tmp_path):
    store, make = new_job
    job_id = make(model=GATED)
    hub = ThreadingHTTPServer(("127.0.0.1", 0), GatedHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_port}", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    code = ("from ktoforge.lifecycle import run_job\nfrom ktoforge_worker.train import train\n"
            f"run_job({job_id!r}, 'cuda', train)\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        hub.shutdown()
    job = store.get(job_id)
    assert job.status == JobStatus.failed, proc.stderr[-3000:]
    assert f"{GATED} is gated" in job.reason and "KTOFORGE_HF_TOKEN" in job.reason
    assert any(r.startswith(f"GET /api/models/{GATED}") for r in GatedHub.requests), GatedHub.requests
    assert not [r for r in GatedHub.requests if "/resolve/" in r or "/revision/" in r], GatedHub.requests
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())
