"""The one summary line of the fault and security suites, printed once when either of them ran.

`faults: N/N survived, attacks: M/M refused, jobs lost: 0, server errors: 0`: faults are the tests under
tests/system/fault/ (a process killed, Redis restarted, ...), attacks the tests marked ``attack`` (every test under
tests/security/). tests/conftest.py prints it at the session's end.

Lost jobs and server errors are counted where the tests run, which under ``make test`` is one of several
pytest-xdist worker processes: each test's counts travel back on its teardown report (``user_properties``, which
xdist sends to the controller), and the line sums them from the reports, as it counts passed tests.
"""

from __future__ import annotations

import httpx
import pytest

STATS = {"lost": 0, "server_errors": 0}  # this process's counts since the last test's teardown (take)
KEY = "outcomes"


def count_server_errors(response: httpx.Response) -> None:
    """httpx response hook: a 5xx from any route but /readyz (503 is its answer while Redis is down)."""
    if response.status_code >= 500 and response.request.url.path != "/readyz":
        STATS["server_errors"] += 1


def take() -> dict[str, int]:
    """The counts since the last call, reset: what one test (its setup, call and teardown) added."""
    counts = dict(STATS)
    STATS.update(dict.fromkeys(STATS, 0))
    return counts


def _reports(terminalreporter) -> list[pytest.TestReport]:
    return [r for reports in terminalreporter.stats.values() for r in reports if isinstance(r, pytest.TestReport)]


def summary_line(reports: list[pytest.TestReport]) -> str | None:
    """The line for these test reports (every phase's), or None when neither suite ran."""
    calls = [r for r in reports if r.when == "call" and not r.skipped]
    faults = [r for r in calls if "tests/system/fault/" in r.nodeid]
    attacks = [r for r in calls if "attack" in r.keywords]
    if not faults and not attacks:
        return None
    counted = [value for r in reports for key, value in r.user_properties if key == KEY]
    lost, errors = (sum(c[name] for c in counted) for name in ("lost", "server_errors"))
    return (f"faults: {sum(r.passed for r in faults)}/{len(faults)} survived, "
            f"attacks: {sum(r.passed for r in attacks)}/{len(attacks)} refused, "
            f"jobs lost: {lost}, server errors: {errors}")


def write_summary(terminalreporter) -> None:
    line = summary_line(_reports(terminalreporter))
    if line:
        terminalreporter.write_line(line)
