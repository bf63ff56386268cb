"""The jobs page at /ui in headless Chromium: log in with the key, open a running job, watch its curves gain
points as it trains and a health warning appear, and save a screenshot (var/test-outputs/ui_job_page.png)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from ktoforge.lifecycle import run_job
from tests.api.cdp import Browser
from tests.api.test_docs import chromium
from tests.job_fixtures import USER, api, dataset_id, new_job  # noqa: F401 (fixtures: API process, a job)

OUTPUTS = Path(__file__).resolve().parents[2] / "var" / "test-outputs"
POINTS = "Number(document.getElementById('chart-loss')?.dataset.points || 0)"


def test_the_page_is_static_and_holds_no_secret(api):  # noqa: F811
    page = httpx.get(f"{api}/ui/")
    assert page.status_code == 200 and "<script src=\"/ui/assets/ui.js\"" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = httpx.get(f"{api}/ui/assets/ui.js")
    assert script.status_code == 200 and "sessionStorage" in script.text and "EventSource(" not in script.text
    assert httpx.get(f"{api}/ui/assets/..%2Fmain.py").status_code == 404
    assert httpx.get(f"{api}/v1/jobs").status_code == 401  # the data stays behind the key


def test_a_running_job_page_shows_live_curves(api, new_job, tmp_path, monkeypatch):  # noqa: F811
    from ktoforge.settings import get_settings
    from ktoforge_worker.train import train

    # Training shares this process with the test: a GIL-heavy moment (tokenizing) must not outlast the lease.
    monkeypatch.setenv("KTOFORGE_LEASE_TTL_S", "60")
    get_settings.cache_clear()
    store, make = new_job
    job_id = make(max_steps=400, logging_steps=1, save_steps=1000)
    trainer = threading.Thread(target=run_job, args=(job_id, "cuda", train), daemon=True)
    trainer.start()
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        browser.goto(f"{api}/ui/")
        browser.wait_for("!document.getElementById('login').hidden")
        browser.evaluate("document.getElementById('key').value = 'test-api-key';"
                         "document.getElementById('login').requestSubmit()")
        browser.wait_for(f"document.querySelector('[data-job=\"{job_id}\"]') !== null")
        browser.evaluate(f"location.hash = '#/jobs/{job_id}'")
        first = browser.wait_for(f"{POINTS} > 0 && {POINTS}", timeout_s=120)
        assert browser.evaluate("document.getElementById('job-state').textContent") == "running"
        store.add_event(job_id, "log", {"message": "rewards/margins flat for 20 steps", "level": "warning"})
        browser.wait_for("document.querySelector('#warnings .warning')?.textContent.includes('margins flat')")
        later = browser.wait_for(f"{POINTS} >= {first + 3} && {POINTS}", timeout_s=120)
        assert later > first and store.get(job_id).status.value == "running"  # gained while it trains
        assert browser.evaluate("sessionStorage.getItem('ktoforge-api-key')") == "test-api-key"
        assert "test-api-key" not in browser.evaluate("location.href")
        shot = browser.screenshot(OUTPUTS / "ui_job_page.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        browser.close()
        httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=USER)
        trainer.join(120)


def test_a_finished_job_page_shows_its_evaluation_and_artifacts(api, new_job, tmp_path, monkeypatch):  # noqa: F811
    from ktoforge.evaluation.run import run_evaluation
    from ktoforge.settings import get_settings
    from ktoforge_worker.generate import generate
    from ktoforge_worker.train import train

    monkeypatch.setenv("KTOFORGE_LEASE_TTL_S", "60")  # as above: this process trains, on a possibly busy machine
    get_settings.cache_clear()
    store, make = new_job
    job_id = make(eval_fraction=0.25)
    run_job(job_id, "cuda", train)
    ev = httpx.post(f"{api}/v1/jobs/{job_id}/evaluations", headers=USER, json={"limit": 2, "max_new_tokens": 4})
    run_evaluation(job_id, ev.json()["id"], "cuda", generate)
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        browser.goto(f"{api}/ui/")
        browser.evaluate("sessionStorage.setItem('ktoforge-api-key', 'test-api-key');"
                         f"location.hash = '#/jobs/{job_id}'")
        browser.wait_for("document.querySelector('#eval table') !== null")
        assert browser.evaluate("document.querySelector('#eval table tr').textContent").endswith("baseadapter")
        names = browser.evaluate("[...document.querySelectorAll('#artifacts li')].map(li => li.textContent).join()")
        assert all(n in names for n in ("curves.png", "Modelfile", "eval_report.json", "adapter_model.safetensors"))
        assert browser.evaluate("document.getElementById('job-state').textContent") == "succeeded"
        browser.screenshot(OUTPUTS / "ui_finished_job.png")
    finally:
        browser.close()
