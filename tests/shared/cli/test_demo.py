"""`ktoforge demo` (`make demo`) from nothing: starts local mode, trains, downloads the adapter, stops what it
started, and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.shared.cli.conftest import KTOFORGE
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def processes_with(marker: str) -> list[int]:
    """Our processes whose environment holds ``marker`` (every child of local mode inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_demo_starts_local_mode_trains_downloads_and_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTOFORGE_")}
    env.update({"KTOFORGE_API_PORT": str(free_port()), "KTOFORGE_REDIS_PORT": str(free_port()),
                "KTOFORGE_FLOWER_PORT": str(free_port()), "KTOFORGE_DATA_DIR": str(data),
                "KTOFORGE_WORK_DIR": str(tmp_path / "work"), "KTOFORGE_MODEL_CACHE_DIR": str(ROOT / "var" / "models"),
                "KTOFORGE_LOCAL_WORKERS": json.dumps(["cuda"])})
    done = subprocess.run([KTOFORGE, "demo", "--to", str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = re.search(r"^adapter: (.+)$", done.stdout, re.MULTILINE)
    assert found, done.stdout[-3000:]
    adapter = Path(found.group(1))
    assert adapter.name == "adapter_model.safetensors" and adapter.stat().st_size > 0
    assert adapter.is_relative_to(tmp_path / "out")
    assert "starting local mode" in done.stdout and "stopping the local mode" in done.stdout
    assert "100%" in done.stdout
    assert processes_with(f"KTOFORGE_DATA_DIR={data}") == []
