"""The one summary line of the fault and security suites, printed once when either of them ran.

`faults: N/N survived, attacks: M/M refused, jobs lost: 0, server errors: 0`: faults are the tests under
tests/system/fault/ (a process killed, Redis restarted, ...), attacks the tests marked ``attack`` (every test under
tests/security/). Both conftests call write_summary; the first call per session prints the line.
"""

from __future__ import annotations

import httpx
import pytest

STATS = {"lost": 0, "server_errors": 0}
_PRINTED: set[int] = set()


def count_server_errors(response: httpx.Response) -> None:
    """httpx response hook: a 5xx from any route but /readyz (503 is its answer while Redis is down)."""
    if response.status_code >= 500 and response.request.url.path != "/readyz":
        STATS["server_errors"] += 1


def _calls(terminalreporter) -> list[pytest.TestReport]:
    return [r for key in ("passed", "failed", "error") for r in terminalreporter.stats.get(key, [])
            if getattr(r, "when", "call") == "call"]


def summary_line(reports: list[pytest.TestReport]) -> str | None:
    """The line for these test reports, or None when neither suite ran."""
    faults = [r for r in reports if "tests/system/fault/" in r.nodeid]
    attacks = [r for r in reports if "attack" in r.keywords]
    if not faults and not attacks:
        return None
    return (f"faults: {sum(r.passed for r in faults)}/{len(faults)} survived, "
            f"attacks: {sum(r.passed for r in attacks)}/{len(attacks)} refused, "
            f"jobs lost: {STATS['lost']}, server errors: {STATS['server_errors']}")


def write_summary(terminalreporter) -> None:
    if id(terminalreporter) in _PRINTED:
        return
    _PRINTED.add(id(terminalreporter))
    line = summary_line(_calls(terminalreporter))
    if line:
        terminalreporter.write_line(line)
