"""Local mode with only the torch worker, so that the mlx queue has no consumer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system import System, start_system, stop_system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = start_system(tmp_path_factory.mktemp("system"), ["cuda"])
    yield s
    stop_system(s)
