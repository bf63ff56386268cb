"""One local-mode system (torch worker on CPU) for the CLI tests, and the environment a user's shell has."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import API_KEY, System, start_system, stop_system
from tests.job_fixtures import subset

KTOFORGE = str(Path(sys.executable).parent / "ktoforge")


@pytest.fixture(scope="package")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = start_system(tmp_path_factory.mktemp("cli"), ["cuda"])
    yield s
    stop_system(s)


@pytest.fixture(scope="package")
def small(reference_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return subset(reference_dataset, tmp_path_factory.mktemp("data") / "small.jsonl", 8)


def cli_env(url: str) -> dict[str, str]:
    """What a user exports: the API's URL and key (no other KTOFORGE_ variable reaches the CLI)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTOFORGE_")}
    return {**env, "KTOFORGE_API_URL": url, "KTOFORGE_API_KEY": API_KEY}
