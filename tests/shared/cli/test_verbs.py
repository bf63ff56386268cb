"""The read and steer verbs against local mode: dataset upload, job list/show (--json), cancel, and errors
that name what went wrong instead of a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.shared.cli.conftest import KTOFORGE, cli_env
from tests.system import FINISHED, System, wait_status

pytestmark = pytest.mark.slow


def run(system: System, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([KTOFORGE, *args], capture_output=True, text=True, env=cli_env(url or system.url),
                          timeout=120)


def test_upload_list_show_cancel(system: System, small: Path) -> None:
    report = json.loads(run(system, "dataset", "upload", str(small), "--json").stdout)
    assert report["rows"] == 16 and len(report["id"]) == 64
    submitted = run(system, "job", "submit", "--dataset", report["id"], "--set", "max_steps=400", "--json")
    job = json.loads(submitted.stdout)
    assert submitted.returncode == 0 and job["hyperparameters"]["max_steps"] == 400
    listed = json.loads(run(system, "job", "list", "--json").stdout)
    assert job["id"] in [j["id"] for j in listed["items"]]
    assert job["id"] in run(system, "job", "list").stdout
    shown = json.loads(run(system, "job", "show", job["id"], "--json").stdout)
    assert shown["id"] == job["id"] and shown["artifacts"] == []
    cancelled = run(system, "job", "cancel", job["id"])
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    with system.client() as c:
        assert wait_status(c, job["id"], FINISHED)["status"] == "cancelled"
    again = run(system, "job", "cancel", job["id"])
    assert again.returncode == 1 and "409" in again.stderr and "already cancelled" in again.stderr


def test_errors_are_one_line_and_exit_1(system: System) -> None:
    missing = run(system, "job", "show", "0" * 32)
    assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
    bad_key = subprocess.run([KTOFORGE, "job", "list", "--key", "wrong"], capture_output=True, text=True,
                             env=cli_env(system.url), timeout=60)
    assert bad_key.returncode == 1 and "401" in bad_key.stderr
    nobody = run(system, "job", "list", url="http://127.0.0.1:9")
    assert nobody.returncode == 1 and "cannot reach the API" in nobody.stderr
    unknown = run(system, "job", "submit", "--dataset", "a" * 64, "--set", "nonsense=1")
    assert unknown.returncode == 64 and "unknown setting 'nonsense'" in unknown.stderr  # a usage error: EX_USAGE, not 2 (cancelled)
