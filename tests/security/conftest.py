"""Security tests (tests/security/): each test is one attack on the running code, and passes when it is refused.

Every test collected under this folder is marked ``attack`` (no decorator needed), and the session's summary
line counts them: `faults: N/N survived, attacks: M/M refused, jobs lost: 0, server errors: 0`
(tests/outcomes.py, printed by tests/conftest.py). The API fixtures (an app on the tests' redis, clients with and
without a key, a real uvicorn) are the ones tests/api uses, re-exported here so every security module can ask for
them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import anon, client, dataset_id, live_api, worker  # noqa: F401  (fixtures)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.attack)
