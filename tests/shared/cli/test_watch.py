"""`ktoforge job …` in a real pseudo-terminal against local mode (the torch worker on CPU, builtin model).

What a user sees: the live bar reaching 100 % and the exit code of the job's end; Ctrl-C that detaches
without cancelling; a watcher that survives a dropped connection without losing or repeating an event.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.shared.cli.conftest import KTOFORGE, cli_env
from tests.shared.cli.proxy import CuttableProxy
from tests.shared.cli.pty_session import PtySession
from tests.system import FINISHED, System, events, upload, wait_status, wait_step

pytestmark = pytest.mark.slow
SHORT = ["--set", "max_steps=6", "--set", "gradient_accumulation_steps=1", "--set", "max_length=128"]
LONG = {"max_steps": 400, "gradient_accumulation_steps": 1, "max_length": 128, "save_steps": 1000}


def long_job(client: httpx.Client, dataset: Path) -> str:
    job = client.post("/v1/jobs", json={"dataset_id": upload(client, dataset), "hyperparameters": LONG})
    assert job.status_code == 201, job.text
    return job.json()["id"]


def test_submit_watch_bar_reaches_100_percent_and_exits_0(system: System, small: Path, tmp_path: Path) -> None:
    # learning_rate 1e-2 on the tiny model: KL passes 1 within a few steps, so the bar shows a health warning
    session = PtySession([KTOFORGE, "job", "submit", "--dataset", str(small), "--watch", *SHORT,
                          "--set", "learning_rate=1e-2"], cli_env(system.url), cwd=str(tmp_path))
    code = session.wait(300)
    text = session.text
    assert code == 0, text
    assert "uploaded small.jsonl: 16 rows" in text and "warning" in text  # the upload report's warnings
    assert re.search(r"6/6\s+100%", text), text
    assert re.search(r"loss [-\d.e]+ kl [-\d.e]+ margins [-\d.e]+", text), text
    assert re.search(r"warning: learning_rate 0.01 is far outside", text), text  # said at submit
    assert re.search(r"warning: KL [\d.]+ > 1 at step \d: the policy is diverging", text), text  # while training
    job_id = re.search(r"job ([0-9a-f]{32}) succeeded", text).group(1)
    with system.client() as c:
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    download = PtySession([KTOFORGE, "job", "download", job_id, "--to", str(tmp_path / "out")], cli_env(system.url))
    assert download.wait(60) == 0, download.text
    assert (tmp_path / "out" / "adapter_model.safetensors").stat().st_size > 0


def test_watch_of_a_job_cancelled_meanwhile_exits_2(system: System, small: Path) -> None:
    with system.client() as c:
        job_id = long_job(c, small)
        session = PtySession([KTOFORGE, "job", "watch", job_id], cli_env(system.url))
        session.expect(r"\d+/400", timeout=180)  # the bar shows steps: the job runs
        assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        code = session.wait(180)
    assert code == 2, session.text
    assert f"job {job_id} cancelled" in session.text


def test_ctrl_c_detaches_and_the_job_goes_on(system: System, small: Path) -> None:
    with system.client() as c:
        job_id = long_job(c, small)
        session = PtySession([KTOFORGE, "job", "watch", job_id], cli_env(system.url))
        session.expect(r"\d+/400", timeout=180)
        session.send(b"\x03")  # the terminal's Ctrl-C: SIGINT to the foreground process group
        assert session.wait(30) == 130, session.text
        assert "detached" in session.text
        step = c.get(f"/v1/jobs/{job_id}").json()["step"]
        wait_step(c, job_id, step + 2)  # still training, and no cancel was requested
        assert not [e for e in events(c, job_id) if e["data"].get("message") == "cancel requested"]
        c.post(f"/v1/jobs/{job_id}/cancel")
        wait_status(c, job_id, FINISHED)


def test_a_dropped_connection_resumes_without_losing_or_repeating_events(system: System, small: Path) -> None:
    proxy = CuttableProxy(int(system.url.rsplit(":", 1)[1]))
    try:
        with system.client() as c:
            job = c.post("/v1/jobs", json={"dataset_id": upload(c, small), "hyperparameters": {**LONG, "max_steps": 30}})
            job_id = job.json()["id"]
            session = PtySession([KTOFORGE, "job", "watch", job_id, "--json"], cli_env(f"http://127.0.0.1:{proxy.port}"))
            session.expect(r'"step": [1-9]', timeout=180)
            assert proxy.cut() >= 2  # the watcher's stream, both sides
            session.expect(r'"step": 30', timeout=180)
            code = session.wait(180)
            assert code == 0, session.text
            seen = [json.loads(line)["id"] for line in session.text.splitlines() if line.startswith("{")]
            assert seen == [e["id"] for e in events(c, job_id)]  # every event once, in order
            assert proxy.connections >= 2  # it did reconnect
    finally:
        proxy.close()
