"""An evaluation through the product: API request → worker run (real generation, base vs adapter) → reports
among the job's artifacts; and what every finished job carries (curves.png, Modelfile)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ktoforge.cli.main import app
from ktoforge.evaluation.records import EvaluationStore, _key
from ktoforge.evaluation.run import ClaimLost, run_evaluation
from ktoforge.lifecycle import run_job
from ktoforge.schemas import JobStatus
from ktoforge.settings import get_settings
from tests.job_fixtures import USER

WORKER = {"Authorization": "Bearer test-worker-token"}
PROMPTS = [{"id": "p1", "question": "Create a folder named Projects", "expected_tools": ["vaultManager_createFolder"]},
           {"id": "p2", "question": "Hello!", "expected_tools": [], "system": "Be brief.", "tags": ["chat"]}]


@pytest.fixture(autouse=True)
def long_lease(api, monkeypatch) -> None:
    """The api fixture's 1 s lease suits lease tests; a training here shares this process with the test and
    a GIL-heavy moment (tokenizing) on a busy machine must not outlast its lease."""
    monkeypatch.setenv("KTOFORGE_LEASE_TTL_S", "60")
    get_settings.cache_clear()


def trained_job(api: str, new_job) -> str:
    from ktoforge_worker.train import train

    store, make = new_job
    job_id = make(eval_fraction=0.25)
    run_job(job_id, "cuda", train, worker="cuda@test")
    assert store.get(job_id).status == JobStatus.succeeded, store.get(job_id).reason
    return job_id


def artifacts(job_id: str) -> Path:
    return Path(get_settings().data_dir) / "artifacts" / job_id


def test_a_finished_job_has_curves_and_a_modelfile_and_evaluates(api, new_job):
    from ktoforge_worker.generate import generate

    job_id = trained_job(api, new_job)
    names = {p.name for p in artifacts(job_id).iterdir()}
    assert {"curves.png", "Modelfile"} <= names
    assert (artifacts(job_id) / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ADAPTER ./adapter" in (artifacts(job_id) / "Modelfile").read_text()

    r = httpx.post(f"{api}/v1/jobs/{job_id}/evaluations", headers=USER, json={"limit": 4, "max_new_tokens": 8})
    assert r.status_code == 202, r.text
    ev = r.json()
    assert (ev["status"], ev["prompt_source"]) == ("queued", "held-out")
    run_evaluation(job_id, ev["id"], "cuda", generate, worker="cuda@test")
    done = httpx.get(f"{api}/v1/jobs/{job_id}/evaluations/{ev['id']}", headers=USER).json()
    assert done["status"] == "succeeded", done["reason"]
    report = json.loads((artifacts(job_id) / "eval_report.json").read_text())
    assert list(report["models"]) == ["base", "adapter"] and report["prompts"] == done["prompts"] >= 1
    assert all(set(row) >= {"id", "expected_tools", "base", "adapter"} for row in report["rows"])
    assert "| parses as a tool call |" in (artifacts(job_id) / "eval_report.md").read_text()
    run_evaluation(job_id, ev["id"], "cuda", generate)  # a redelivered message runs nothing twice
    assert httpx.get(f"{api}/v1/jobs/{job_id}/evaluations", headers=USER).json()[0]["status"] == "succeeded"


def test_given_prompts_are_used_and_bad_requests_say_why(api, new_job):
    from ktoforge_worker.generate import generate

    store, make = new_job
    queued = make()
    r = httpx.post(f"{api}/v1/jobs/{queued}/evaluations", headers=USER, json={})
    assert r.status_code == 409 and "only a succeeded job" in r.json()["detail"]
    job_id = trained_job(api, new_job)
    bad = httpx.post(f"{api}/v1/jobs/{job_id}/evaluations", headers=USER, json={"prompts": [{"id": "x"}]})
    assert bad.status_code == 422 and "question" in bad.text
    r = httpx.post(f"{api}/v1/jobs/{job_id}/evaluations", headers=USER, json={"prompts": PROMPTS, "max_new_tokens": 4})
    ev = r.json()
    assert (r.status_code, ev["prompt_source"], ev["prompts"]) == (202, "file", 2)
    forged = httpx.put(f"{api}/v1/internal/evaluations/{ev['id']}/artifacts/eval_report.json", headers=WORKER,
                       content=b"{}")
    assert forged.status_code == 403  # no claim: nobody plants a report
    run_evaluation(job_id, ev["id"], "cuda", generate)
    record = EvaluationStore.from_url(get_settings().redis_url).get(ev["id"])
    assert record.status.value == "succeeded", record.reason
    report = json.loads((artifacts(job_id) / "eval_report.json").read_text())
    assert [row["id"] for row in report["rows"]] == ["p1", "p2"]
    assert report["models"]["adapter"]["expecting_no_call"] == 1


def serve_evaluations(job_id: str, stop: threading.Event) -> None:
    """The worker's side for the CLI test: run each evaluation of the job as it is queued."""
    from ktoforge_worker.generate import generate

    evals = EvaluationStore.from_url(get_settings().redis_url)
    while not stop.is_set():
        for ev in evals.of_job(job_id):
            if ev.status.value == "queued":
                run_evaluation(job_id, ev.id, "cuda", generate)
        time.sleep(0.2)


def test_cli_eval_waits_for_the_report_and_export_writes_runnable_folders(api, new_job, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    job_id = trained_job(api, new_job)
    stop = threading.Event()
    worker = threading.Thread(target=serve_evaluations, args=(job_id, stop), daemon=True)
    worker.start()
    auth = ["--url", api, "--key", "test-api-key"]
    try:
        result = CliRunner().invoke(app, ["eval", "--job", job_id, "--limit", "2", "--max-new-tokens", "4",
                                          "--json", *auth])
    finally:
        stop.set()
        worker.join(30)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert list(report["models"]) == ["base", "adapter"] and report["job_id"] == job_id

    result = CliRunner().invoke(app, ["job", "export", job_id, "--to", str(tmp_path / "m"), *auth])
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m" / "merged"), dtype=torch.float32)
    assert merged.config.model_type == "mistral"
    result = CliRunner().invoke(app, ["job", "export", job_id, "--to", str(tmp_path / "o"), "--format", "ollama", *auth])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "Modelfile").read_text() == (artifacts(job_id) / "Modelfile").read_text()
    assert (tmp_path / "o" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "o" / "base" / "model.safetensors").is_file()
    result = CliRunner().invoke(app, ["job", "export", job_id, "--to", str(tmp_path / "x"), "--format", "mlx", *auth])
    assert result.exit_code == 1 and "MLX backend" in " ".join(result.output.split())


def test_a_worker_whose_claim_lapsed_stops_generating_and_leaves_the_reapers_record(api, new_job):
    """The claim lapses mid-run (this worker was thought lost) and the API's reaper fails the evaluation: the
    worker's renewal notices, generation stops at its next batch, and the worker writes nothing over the
    reaper's reason (which tells the user to queue it again), nor any report."""
    from ktoforge_worker.generate import generate

    job_id = trained_job(api, new_job)
    ev = httpx.post(f"{api}/v1/jobs/{job_id}/evaluations", headers=USER,
                    json={"prompts": PROMPTS, "max_new_tokens": 4}).json()
    evals = EvaluationStore.from_url(get_settings().redis_url)
    stopped = []

    def generate_once_reaped(model: str, files: Path, prompts, max_new_tokens: int, guard) -> dict:
        evals.r.delete(_key(ev["id"], "claim"))  # the renewals stop reaching Redis for a lease's length
        deadline = time.time() + 60
        while evals.get(ev["id"]).status.value != "failed":  # the API's reaper (every 10 s)
            assert time.time() < deadline, "the reaper did not fail the evaluation"
            time.sleep(0.2)
        while True:  # the renewal thread finds the claim gone within an interval
            try:
                guard()
            except ClaimLost:
                break
            assert time.time() < deadline, "the renewal did not notice"
            time.sleep(0.1)
        try:
            return generate(model, files, prompts, max_new_tokens, guard)
        except ClaimLost:
            stopped.append(True)
            raise

    run_evaluation(job_id, ev["id"], "cuda", generate_once_reaped)
    assert stopped == [True]  # generate itself checked the guard before its first batch
    record = evals.get(ev["id"])
    assert record.status.value == "failed" and "queue the evaluation again" in record.reason, record.reason
    assert not (artifacts(job_id) / "eval_report.json").exists()
