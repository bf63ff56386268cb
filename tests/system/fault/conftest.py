"""Fault tests: the system in local mode with fast recovery timings, broken for real.

Each test is one fault case; the session ends with a line such as
`faults: 7/7 survived, attacks: 0/0 refused, jobs lost: 0, server errors: 0` (tests/outcomes.py; the
security suite's attacks are counted in the same line).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.outcomes import STATS, count_server_errors
from tests.system import API_KEY, System, start_system, stop_system
from tests.job_fixtures import subset

# Seconds, scaled down from production so a crash is detected and recovered within a test.
# heartbeat_stale_s stays longer than a new pool child's prewarm (7.7 s here, more on a loaded machine), as the
# default 60 s is: otherwise the reaper, not the redelivered message, restarts a job whose child was killed.
FAST = {"heartbeat_interval_s": "1", "lease_ttl_s": "5", "heartbeat_stale_s": "30", "reaper_interval_s": "2"}


def client(system: System, key: str = API_KEY) -> httpx.Client:
    return httpx.Client(base_url=system.url, headers={"Authorization": f"Bearer {key}"}, timeout=60,
                        event_hooks={"response": [count_server_errors]})


def lost(job: dict, expected: str = "succeeded") -> bool:
    """Record a job that did not end as it should have (a lost job)."""
    if job["status"] != expected:
        STATS["lost"] += 1
        return True
    return False


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = start_system(tmp_path_factory.mktemp("fault"), ["cuda"], max_attempts="3", **FAST)
    yield s
    stop_system(s)


@pytest.fixture(scope="session")
def small_dataset(reference_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return subset(reference_dataset, tmp_path_factory.mktemp("data") / "small.jsonl", 16)
